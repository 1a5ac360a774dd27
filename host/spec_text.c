/* spec_text.c: finding the id in a stored spec's text, and the text
 * shared by specs that differ only in it. */
#include "spec_text.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "share.h"

/* The entry mb_spec_text_find_id finds, as the writer writes it. */
#define ID_OPEN "[\"id\"]=\""
#define ID_CLOSE "\","

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

/* Whether the n characters at id are written as they are in a quoted
 * string: no quote, backslash or control character. */
static bool plain_id(const char *id, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (id[i] == '\\' || id[i] == '"' || (unsigned char)id[i] < 0x20)
      return false;
  return true;
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
    if (*value != '"' || !plain_id(value + 1, (size_t)(p - 3 - value)))
      return false;
    *out = (mb_spec_id){(size_t)(entry - text), (size_t)(p - text),
                        (size_t)(value + 1 - text), (size_t)(p - 3 - value)};
    found = true;
  }
  return found && p[0] == '}' && p[1] == '\0';
}

bool mb_spec_text_guess_id(const char *text, const char *id,
                           mb_spec_id *out) {
  size_t id_len = strlen(id);
  if (!plain_id(id, id_len)) return false;
  size_t open = sizeof ID_OPEN - 1, close = sizeof ID_CLOSE - 1;
  for (const char *p = text; (p = strstr(p, ID_OPEN)); p += open) {
    if (strncmp(p + open, id, id_len) != 0 ||
        strncmp(p + open + id_len, ID_CLOSE, close) != 0)
      continue;
    size_t at = (size_t)(p - text);
    *out = (mb_spec_id){at, at + open + id_len + close, at + open, id_len};
    return true;
  }
  return false;
}

mb_spec_shared *mb_spec_shared_new(const char *text, const mb_spec_id *where) {
  size_t total = strlen(text);
  size_t tail = total - where->entry_end;
  mb_spec_shared *s = mb_xmalloc(sizeof *s + where->entry_start + tail + 1);
  s->refs = 1;
  s->head = where->entry_start;
  s->len = where->entry_start + tail;
  memcpy(s->text, text, s->head);
  memcpy(s->text + s->head, text + where->entry_end, tail);
  s->text[s->len] = '\0';
  return s;
}

void mb_spec_shared_hold(mb_spec_shared *s) { s->refs++; }

void mb_spec_shared_release(mb_spec_shared *s) {
  if (s && --s->refs == 0) free(s);
}

char *mb_spec_shared_text(const mb_spec_shared *s, const char *id) {
  size_t id_len = strlen(id);
  size_t open = sizeof ID_OPEN - 1, close = sizeof ID_CLOSE - 1;
  char *out = mb_xmalloc(s->len + open + id_len + close + 1);
  char *p = out;
  memcpy(p, s->text, s->head);
  p += s->head;
  memcpy(p, ID_OPEN, open);
  p += open;
  memcpy(p, id, id_len);
  p += id_len;
  memcpy(p, ID_CLOSE, close);
  p += close;
  memcpy(p, s->text + s->head, s->len - s->head + 1);
  return out;
}

uint64_t mb_spec_text_hash_without_id(const char *text,
                                      const mb_spec_id *where) {
  uint64_t hash =
      mb_share_mix_bytes(MB_SHARE_HASH_START, text, where->entry_start);
  const char *tail = text + where->entry_end;
  return mb_share_mix_bytes(hash, tail, strlen(tail));
}

bool mb_spec_shared_matches(const mb_spec_shared *s, const char *text,
                            const mb_spec_id *where) {
  const char *tail = text + where->entry_end;
  return where->entry_start == s->head &&
         memcmp(text, s->text, s->head) == 0 &&
         strlen(tail) == s->len - s->head &&
         memcmp(tail, s->text + s->head, s->len - s->head) == 0;
}

bool mb_spec_shared_is(const mb_spec_shared *s, const char *id,
                       const char *text) {
  size_t id_len = strlen(id);
  size_t open = sizeof ID_OPEN - 1, close = sizeof ID_CLOSE - 1;
  if (!text || strlen(text) != s->len + open + id_len + close) return false;
  /* Where the entry must be, with id in it. */
  mb_spec_id where = {s->head, s->head + open + id_len + close,
                      s->head + open, id_len};
  return memcmp(text + s->head, ID_OPEN, open) == 0 &&
         memcmp(text + where.id_start, id, id_len) == 0 &&
         memcmp(text + where.id_start + id_len, ID_CLOSE, close) == 0 &&
         mb_spec_shared_matches(s, text, &where);
}
