/* spec_text.c: finding the id in a stored spec's text. */
#include "spec_text.h"

#include <string.h>

/* Past one value (a quoted string, a table, or a bare token such as
 * 12, 0.5, true, math.huge, (0/0)); NULL when it is malformed. */
static const char *skip_value(const char *p) {
  if (*p == '"') {
    for (p++; *p && *p != '"'; p++)
      if (*p == '\\' && !*++p) return NULL;
    return *p == '"' ? p + 1 : NULL;
  }
  if (*p == '{') {
    p++;
    while (*p == '[') {
      p = skip_value(p + 1);
      if (!p || p[0] != ']' || p[1] != '=') return NULL;
      p = skip_value(p + 2);
      if (!p || *p != ',') return NULL;
      p++;
    }
    return *p == '}' ? p + 1 : NULL;
  }
  const char *start = p;
  while (*p && *p != ',' && *p != ']' && *p != '}') p++;
  return p > start ? p : NULL;
}

bool mb_spec_text_find_id(const char *text, mb_spec_id *out) {
  const char *p = text;
  bool found = false;
  if (*p++ != '{') return false;
  while (*p == '[') {
    const char *entry = p, *key = p + 1;
    p = skip_value(key);
    if (!p || p[0] != ']' || p[1] != '=') return false;
    bool is_id = p - key == 4 && memcmp(key, "\"id\"", 4) == 0;
    const char *value = p + 2;
    p = skip_value(value);
    if (!p || *p != ',') return false;
    p++;
    if (!is_id) continue;
    if (*value != '"') return false;
    for (const char *c = value + 1; c < p - 2; c++)
      if (*c == '\\' || *c == '"' || (unsigned char)*c < 0x20) return false;
    *out = (mb_spec_id){(size_t)(entry - text), (size_t)(p - text),
                        (size_t)(value + 1 - text), (size_t)(p - 3 - value)};
    found = true;
  }
  return found && p[0] == '}' && p[1] == '\0';
}
