/* trigger.c: date, interval and cron triggers. */
#include "trigger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "share.h"

/* Triggers are shared: jobs made from the same spec (the same cron
 * expression, zone and bounds) hold one trigger, as they hold one cron
 * expression. A million jobs then cost a million references, and what a
 * trigger works out once (its first fire, its identity) serves them
 * all. Nothing in a trigger changes once made, but for those caches. */
struct mb_trigger {
  mb_share_node share;  /* first: the shared table's node */
  mb_trigger_spec spec;
  bool anchored;  /* start_date was given: no fire before it */
  unsigned refs;
  /* A cron trigger's first fire as seen at made_at: it stays the first
   * fire up to that instant, and making a trigger searches for it
   * anyway, just before the job taking it asks again. */
  mb_time made_at, first;
  char *identity;  /* mb_trigger_identity's, made on first use */
};

static mb_share_table shared;

/* What is looked up: a spec, and whether its start was given. */
typedef struct spec_key {
  const mb_trigger_spec *spec;
  bool anchored;
} spec_key;

static uint64_t hash_spec(const spec_key *k) {
  const mb_trigger_spec *s = k->spec;
  uint64_t h = MB_SHARE_HASH_START;
  h = mb_share_mix(h, (uint64_t)s->kind << 2 | (uint64_t)s->tz_given << 1 |
                          k->anchored);
  h = mb_share_mix(h, (uint64_t)(uintptr_t)s->tz);
  h = mb_share_mix(h, (uint64_t)(uintptr_t)s->cron);
  h = mb_share_mix(h, (uint64_t)s->run_date);
  h = mb_share_mix(h, (uint64_t)s->interval);
  h = mb_share_mix(h, (uint64_t)s->start);
  h = mb_share_mix(h, (uint64_t)s->end);
  return h ^ h >> 29;
}

static bool same_spec(const mb_share_node *node, const void *key) {
  const mb_trigger *t = (const mb_trigger *)node;
  const spec_key *k = key;
  const mb_trigger_spec *o = &t->spec, *s = k->spec;
  return t->anchored == k->anchored && o->kind == s->kind &&
         o->tz_given == s->tz_given && o->tz == s->tz && o->cron == s->cron &&
         o->run_date == s->run_date && o->interval == s->interval &&
         o->start == s->start && o->end == s->end;
}

static mb_time floor_div(mb_time a, mb_time b) {
  mb_time q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* An interval's fires form a grid through its start. With start_date
 * given, the grid begins there and the first fire is the first point at
 * or after now, as in APScheduler. Without it, the grid runs both ways
 * through "one interval after the job was added", and the next fire is
 * the first point after now: so after the wall clock steps back, the job
 * keeps firing every interval instead of waiting for the old grid. */
static mb_time next_interval(const mb_trigger *t, mb_time prev, mb_time now) {
  const mb_trigger_spec *s = &t->spec;
  if (prev != MB_TIME_NONE) return prev + s->interval;
  if (t->anchored) {
    if (now <= s->start) return s->start;
    return s->start - floor_div(s->start - now, s->interval) * s->interval;
  }
  return s->start + (floor_div(now - s->start, s->interval) + 1) * s->interval;
}

static mb_time next_cron(const mb_trigger_spec *s, mb_time prev,
                         mb_time now) {
  /* After a fire, the next is strictly after it whatever now is, so that
   * overdue fires can be walked one by one and previews never repeat. */
  mb_time from;
  if (prev != MB_TIME_NONE)
    from = prev + 1;
  else
    from = s->start != MB_TIME_NONE && s->start > now ? s->start : now;
  return mb_cron_next(s->cron, from - 1, s->tz);
}

mb_time mb_trigger_next(const mb_trigger *t, mb_time prev, mb_time now) {
  const mb_trigger_spec *s = &t->spec;
  if (prev == MB_TIME_NONE && t->made_at != MB_TIME_NONE &&
      now >= t->made_at && now <= t->first)
    return t->first;
  mb_time next;
  switch (s->kind) {
  case MB_TRIGGER_DATE:
    return prev == MB_TIME_NONE ? s->run_date : MB_TIME_NONE;
  case MB_TRIGGER_INTERVAL:
    next = next_interval(t, prev, now);
    break;
  default:
    next = next_cron(s, prev, now);
    break;
  }
  if (next != MB_TIME_NONE && s->end != MB_TIME_NONE && next > s->end)
    return MB_TIME_NONE;
  return next;
}

static void end_in_past(const mb_trigger_spec *s, mb_err *err) {
  char when[64];
  mb_err_set(err, MB_ENEVER, "end_date: %s has passed, so it can never fire",
             mb_time_format(s->end, s->tz, when, sizeof when));
}

/* The trigger for spec s, shared when one like it exists; takes over
 * the spec's holder of its cron expression. */
static mb_trigger *share(const mb_trigger_spec *s, bool anchored) {
  spec_key key = {s, anchored};
  uint64_t hash = hash_spec(&key);
  mb_trigger *t = (mb_trigger *)mb_share_find(&shared, hash, same_spec, &key);
  if (t) {
    mb_cron_free(s->cron);  /* the shared trigger holds it already */
    t->refs++;
    return t;
  }
  t = mb_xcalloc(1, sizeof *t);
  t->spec = *s;
  t->anchored = anchored;
  t->refs = 1;
  t->made_at = t->first = MB_TIME_NONE;
  mb_share_add(&shared, &t->share, hash);
  return t;
}

/* The trigger for s (its tz and start worked out), checked at now: NULL
 * with err when it cannot fire after now. Takes over s's holder of its
 * cron expression either way. */
static mb_trigger *make(mb_trigger_spec *s, bool anchored, mb_time now,
                        mb_err *err) {
  if (s->kind != MB_TRIGGER_DATE && s->start != MB_TIME_NONE &&
      s->end != MB_TIME_NONE && s->end < s->start) {
    mb_err_set(err, MB_EINVAL, "end_date: is before start_date");
    mb_cron_free(s->cron);
    return NULL;
  }
  mb_trigger *t = share(s, anchored);
  s = &t->spec;
  if (s->kind == MB_TRIGGER_CRON) {
    mb_time first = mb_trigger_next(t, MB_TIME_NONE, now);
    if (first == MB_TIME_NONE) {
      if (s->end != MB_TIME_NONE && s->end < now)
        end_in_past(s, err);
      else
        mb_err_set(err, MB_ENEVER, "can never fire");
      mb_trigger_free(t);
      return NULL;
    }
    t->made_at = now;
    t->first = first;
  }
  if (s->kind == MB_TRIGGER_INTERVAL &&
      mb_trigger_next(t, MB_TIME_NONE, now) == MB_TIME_NONE) {
    end_in_past(s, err);
    mb_trigger_free(t);
    return NULL;
  }
  return t;
}

mb_trigger *mb_trigger_new(const mb_trigger_spec *spec, mb_time now,
                           mb_err *err) {
  mb_trigger_spec made = *spec;
  if (!made.tz) made.tz = mb_tz_utc();
  bool anchored = made.start != MB_TIME_NONE;
  if (made.kind == MB_TRIGGER_INTERVAL && !anchored)
    made.start = now + made.interval;
  return make(&made, anchored, now, err);
}

mb_trigger *mb_trigger_copy(const mb_trigger *t, mb_time now, mb_err *err) {
  mb_trigger_spec again = t->spec;
  if (again.cron) mb_cron_hold(again.cron);
  return make(&again, t->anchored, now, err);
}

int mb_trigger_kind(const mb_trigger *t) { return t->spec.kind; }
const mb_tz *mb_trigger_tz(const mb_trigger *t) { return t->spec.tz; }

char *mb_duration_format(mb_time d, char *buf, size_t n) {
  static const struct { char unit; mb_time size; } units[] = {
    {'d', 86400 * MB_SEC}, {'h', 3600 * MB_SEC}, {'m', 60 * MB_SEC},
    {'s', MB_SEC},
  };
  size_t used = 0;
  buf[0] = '\0';
  if (d < 0) {
    used += (size_t)snprintf(buf, n, "-");
    d = -d;
  }
  if (d % MB_SEC != 0 && d < MB_SEC) {
    if (d % 1000 == 0)
      snprintf(buf + used, n - used, "%lldms", (long long)(d / 1000));
    else
      snprintf(buf + used, n - used, "%lldus", (long long)d);
    return buf;
  }
  if (d == 0) {
    snprintf(buf + used, n - used, "0s");
    return buf;
  }
  for (size_t i = 0; i < sizeof units / sizeof units[0] && used < n; i++) {
    mb_time q = d / units[i].size;
    if (q == 0 && !(units[i].unit == 's' && d % MB_SEC)) continue;
    d -= q * units[i].size;
    if (units[i].unit == 's' && d) {
      used += (size_t)snprintf(buf + used, n - used, "%lld.%06llds",
                               (long long)q, (long long)d);
      break;
    }
    used += (size_t)snprintf(buf + used, n - used, "%lld%c", (long long)q,
                             units[i].unit);
  }
  return buf;
}

/* prefix, the cron's description and "]" into buf, as snprintf would. */
static size_t bracketed(const char *prefix, const mb_cron *c, char *buf,
                        size_t n) {
  size_t pl = strlen(prefix);
  char *text = buf + (pl < n ? pl : n);
  size_t rest = n - (size_t)(text - buf);
  size_t tl = mb_cron_describe(c, text, rest);
  size_t len = pl + tl + 1;
  if (n == 0) return len;
  memcpy(buf, prefix, pl < n - 1 ? pl : n - 1);
  if (len < n) {
    buf[len - 1] = ']';
    buf[len] = '\0';
  } else {
    buf[n - 1] = '\0';
  }
  return len;
}

size_t mb_trigger_describe(const mb_trigger *t, char *buf, size_t n) {
  const mb_trigger_spec *s = &t->spec;
  char a[64], b[200];
  switch (s->kind) {
  case MB_TRIGGER_DATE: {
    mb_time_format(s->run_date, s->tz, a, sizeof a);
    size_t len = strlen(a);
    if (n >= len + 7) {
      memcpy(buf, "date[", 5);
      memcpy(buf + 5, a, len);
      memcpy(buf + 5 + len, "]", 2);
      return len + 6;
    }
    return (size_t)snprintf(buf, n, "date[%s]", a);
  }
  case MB_TRIGGER_INTERVAL:
    return (size_t)snprintf(buf, n, "interval[%s]",
                            mb_duration_format(s->interval, a, sizeof a));
  default:
    if (s->tz_given) {
      mb_cron_describe(s->cron, b, sizeof b);
      return (size_t)snprintf(buf, n, "cron[%s, timezone='%s']", b,
                              mb_tz_name(s->tz));
    }
    /* Without snprintf: every job's identity in the store is one. */
    return bracketed("cron[", s->cron, buf, n);
  }
}

const char *mb_trigger_identity(mb_trigger *t) {
  if (!t->identity) {
    char desc[512], id[600];
    mb_trigger_describe(t, desc, sizeof desc);
    snprintf(id, sizeof id, "%s@%s", desc, mb_tz_name(t->spec.tz));
    t->identity = mb_xstrdup(id);
  }
  return t->identity;
}

void mb_trigger_free(mb_trigger *t) {
  if (!t || --t->refs > 0) return;
  mb_share_remove(&shared, &t->share);
  mb_cron_free(t->spec.cron);
  free(t->identity);
  free(t);
}
