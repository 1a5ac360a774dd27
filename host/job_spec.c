/* job_spec.c: reading plain add_job specs without running Lua. Every
 * check mirrors one of lua/validate.lua's; where a value would need
 * more than a glance (a float to sum, a zone, a duration string), the
 * spec goes to the validator instead. */
#include "job_spec.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

#include "cron.h"

/* The instants validate.lua accepts: years 1 to 9999. */
#define TIME_MIN -62135596800.0
#define TIME_MAX 253402300799.0
/* mb.duration's longest length, in seconds. */
#define DURATION_MAX (INT64_C(1000) * 366 * 86400)

#define KEY_IS(key, len, name) \
  ((len) == sizeof(name) - 1 && memcmp((key), (name), (len)) == 0)

/* A table the validator would read as raw fields. */
static bool plain_table(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TTABLE) return false;
  if (!lua_getmetatable(L, idx)) return true;
  lua_pop(L, 1);
  return false;
}

/* The string key at the top but one, or NULL when it is not a string. */
static const char *string_key(lua_State *L, size_t *len) {
  if (lua_type(L, -2) != LUA_TSTRING) return NULL;
  return lua_tolstring(L, -2, len);
}

/* A time given as seconds since the epoch (a string would need the
 * zone's rules: the validator reads those). */
static bool read_time(lua_State *L, int idx, mb_time *out) {
  if (lua_type(L, idx) != LUA_TNUMBER) return false;
  double v = lua_tonumber(L, idx);
  if (!(v >= TIME_MIN && v <= TIME_MAX)) return false;
  *out = llround(v * 1e6);
  return true;
}

/* start_date or end_date, which interval and cron triggers share. */
static bool read_bound(lua_State *L, const char *key, size_t len,
                       mb_trigger_spec *t) {
  if (KEY_IS(key, len, "start_date")) return read_time(L, -1, &t->start);
  if (KEY_IS(key, len, "end_date")) return read_time(L, -1, &t->end);
  return false;
}

/* The validator compares the bounds in seconds; two that differ by
 * less than a microsecond are equal here, so look again. */
static bool bounds_ordered(lua_State *L, int idx, const mb_trigger_spec *t) {
  if (t->start == MB_TIME_NONE || t->end == MB_TIME_NONE) return true;
  lua_getfield(L, idx, "start_date");
  lua_getfield(L, idx, "end_date");
  bool ordered = !lua_compare(L, -1, -2, LUA_OPLT);
  lua_pop(L, 2);
  return ordered;
}

static bool read_date(lua_State *L, int idx, mb_trigger_spec *t) {
  bool dated = false;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t len;
    const char *key = string_key(L, &len);
    bool ok = key ? KEY_IS(key, len, "run_date") &&
                        read_time(L, -1, &t->run_date)
                  : lua_isinteger(L, -2) && lua_tointeger(L, -2) == 1;
    lua_pop(L, 1);
    if (!ok) {
      lua_pop(L, 1);
      return false;
    }
    dated = dated || key;
  }
  return dated;
}

static const struct {
  const char *name;
  lua_Integer size;
} units[] = {{"weeks", 604800}, {"days", 86400}, {"hours", 3600},
             {"minutes", 60},   {"seconds", 1}};

/* Whole numbers only: the validator sums floats in an order of its
 * own, and the sum must come out the same. */
static bool read_unit(lua_State *L, const char *key, size_t len,
                      lua_Integer *total) {
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
    if (strlen(units[i].name) != len || memcmp(key, units[i].name, len))
      continue;
    if (!lua_isinteger(L, -1)) return false;
    lua_Integer v = lua_tointeger(L, -1);
    if (v < 0 || v > DURATION_MAX / units[i].size) return false;
    *total += v * units[i].size;
    return true;
  }
  return false;
}

static bool read_interval(lua_State *L, int idx, mb_trigger_spec *t) {
  lua_Integer total = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t len;
    const char *key = string_key(L, &len);
    bool ok = key ? read_unit(L, key, len, &total) ||
                        read_bound(L, key, len, t)
                  : lua_isinteger(L, -2) && lua_tointeger(L, -2) == 1;
    lua_pop(L, 1);
    if (!ok) {
      lua_pop(L, 1);
      return false;
    }
  }
  if (total <= 0 || !bounds_ordered(L, idx, t)) return false;
  t->interval = llround((double)total * 1e6);
  return true;
}

/* An integer field as Lua's tostring writes it ("%lld"), written by
 * hand: snprintf was a good part of an add. buf holds 24 bytes. */
static const char *integer_text(lua_Integer v, char *buf) {
  char *p = buf + 23;
  *p = '\0';
  unsigned long long u = v < 0 ? 0ull - (unsigned long long)v
                               : (unsigned long long)v;
  do {
    *--p = (char)('0' + u % 10);
    u /= 10;
  } while (u);
  if (v < 0) *--p = '-';
  return p;
}

/* The MB_CRON_* field named key, or MB_CRON_NFIELDS; the first letter
 * compared before the call to memcmp. */
static int cron_field(const char *key, size_t len) {
  static const char *names[MB_CRON_NFIELDS];
  static size_t lens[MB_CRON_NFIELDS];
  if (!names[0])
    for (int f = 0; f < MB_CRON_NFIELDS; f++) {
      names[f] = mb_cron_field_name(f);
      lens[f] = strlen(names[f]);
    }
  for (int f = 0; f < MB_CRON_NFIELDS; f++)
    if (lens[f] == len && names[f][0] == key[0] &&
        memcmp(names[f], key, len) == 0)
      return f;
  return MB_CRON_NFIELDS;
}

static bool read_cron(lua_State *L, int idx, mb_trigger_spec *t) {
  const char *fields[MB_CRON_NFIELDS] = {0};
  char numbers[MB_CRON_NFIELDS][24];
  const char *crontab = NULL;
  bool any = false;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t len;
    const char *key = string_key(L, &len);
    bool ok = false;
    if (key) {
      int f = cron_field(key, len);
      if (f < MB_CRON_NFIELDS) {
        /* The table keeps the string alive while the cron is made. */
        if (lua_isinteger(L, -1))
          fields[f] = integer_text(lua_tointeger(L, -1), numbers[f]);
        else if (lua_type(L, -1) == LUA_TSTRING)
          fields[f] = lua_tostring(L, -1);
        ok = fields[f] != NULL;
        any = any || ok;
      } else {
        ok = read_bound(L, key, len, t);
      }
    } else if (lua_isinteger(L, -2)) {
      lua_Integer i = lua_tointeger(L, -2);
      if (i == 2 && lua_type(L, -1) == LUA_TSTRING) crontab = lua_tostring(L, -1);
      ok = i == 1 || crontab;
    }
    lua_pop(L, 1);
    if (!ok) {
      lua_pop(L, 1);
      return false;
    }
  }
  /* Fields with a crontab, or neither, are errors to word. */
  if ((crontab ? any : !any) || !bounds_ordered(L, idx, t)) return false;
  mb_err err;
  t->cron = crontab ? mb_cron_shared_crontab(crontab, MB_DST_GAP_RUN,
                                             MB_DST_REPEAT_FIRST, &err)
                    : mb_cron_shared_fields(fields, MB_DST_GAP_RUN,
                                            MB_DST_REPEAT_FIRST, &err);
  return t->cron != NULL;
}

static bool read_trigger(lua_State *L, int idx, const mb_tz *zone,
                         mb_trigger_spec *t) {
  *t = (mb_trigger_spec){
    .kind = MB_TRIGGER_CRON,
    .tz = zone,
    .run_date = MB_TIME_NONE,
    .start = MB_TIME_NONE,
    .end = MB_TIME_NONE,
  };
  if (lua_type(L, idx) == LUA_TSTRING) {
    mb_err err;
    t->cron = mb_cron_shared_crontab(lua_tostring(L, idx), MB_DST_GAP_RUN,
                                     MB_DST_REPEAT_FIRST, &err);
    return t->cron != NULL;
  }
  if (!plain_table(L, idx)) return false;
  lua_rawgeti(L, idx, 1);
  size_t len = 0;
  const char *kind =
      lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : "";
  bool ok = false;
  if (KEY_IS(kind, len, "cron")) {
    ok = read_cron(L, idx, t);
  } else if (KEY_IS(kind, len, "interval")) {
    t->kind = MB_TRIGGER_INTERVAL;
    ok = read_interval(L, idx, t);
  } else if (KEY_IS(kind, len, "date")) {
    t->kind = MB_TRIGGER_DATE;
    ok = read_date(L, idx, t);
  }
  lua_pop(L, 1);
  return ok;
}

/* validate.lua's id rule: a non-empty string without spaces. */
static bool plain_id(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TSTRING) return false;
  size_t len;
  const char *id = lua_tolstring(L, idx, &len);
  if (len == 0) return false;
  for (size_t i = 0; i < len; i++)
    if (isspace((unsigned char)id[i])) return false;
  return true;
}

bool mb_job_spec_read(lua_State *L, int idx, const mb_tz *zone,
                      mb_plain_spec *out) {
  idx = lua_absindex(L, idx);
  if (!plain_table(L, idx) || !lua_checkstack(L, 24)) return false;
  int top = lua_gettop(L);
  int id = 0, name = 0, run = 0, trigger = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    size_t len;
    const char *key = string_key(L, &len);
    int *keep = NULL;
    bool ok = true;
    if (!key)
      ok = false;
    else if (KEY_IS(key, len, "id"))
      keep = &id;
    else if (KEY_IS(key, len, "name"))
      keep = &name;
    else if (KEY_IS(key, len, "run"))
      keep = &run;
    else if (KEY_IS(key, len, "trigger"))
      keep = &trigger;
    /* Replacing carries ctx.state over, and a paused job keeps the flag
     * in its spec: both are the validator's. */
    else if (KEY_IS(key, len, "replace_existing") || KEY_IS(key, len, "paused"))
      ok = lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1);
    else
      ok = false;
    if (!ok) {
      lua_settop(L, top);
      return false;
    }
    if (keep) {
      /* The value stays where it is; the key goes on top for lua_next. */
      *keep = lua_gettop(L);
      lua_pushvalue(L, -2);
    } else {
      lua_pop(L, 1);
    }
  }
  bool ok = id && plain_id(L, id) &&
            (!name || (lua_type(L, name) == LUA_TSTRING &&
                       lua_rawlen(L, name) > 0)) &&
            run && lua_type(L, run) == LUA_TFUNCTION && trigger &&
            read_trigger(L, trigger, zone, &out->trigger);
  if (!ok) {
    lua_settop(L, top);
    return false;
  }
  /* The strings live in the spec table, which stays on the stack. */
  out->id = lua_tostring(L, id);
  out->name = name ? lua_tostring(L, name) : NULL;
  lua_pushvalue(L, run);
  lua_replace(L, top + 1);
  lua_settop(L, top + 1);
  return true;
}
