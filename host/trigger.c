/* trigger.c: date, interval and cron triggers. */
#include "trigger.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mb_trigger {
  mb_trigger_spec spec;
  bool anchored;  /* start_date was given: no fire before it */
  /* A cron trigger's first fire as seen when it was made: making it
   * searches for that fire anyway, and the job that takes the trigger
   * asks for it again at once. */
  mb_time made_at, first;
};

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
  if (prev == MB_TIME_NONE && now == t->made_at) return t->first;
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

mb_trigger *mb_trigger_new(const mb_trigger_spec *spec, mb_time now,
                           mb_err *err) {
  mb_trigger *t = mb_xmalloc(sizeof *t);
  t->spec = *spec;
  mb_trigger_spec *s = &t->spec;
  if (!s->tz) s->tz = mb_tz_utc();
  t->anchored = s->start != MB_TIME_NONE;
  t->made_at = t->first = MB_TIME_NONE;
  if (s->kind == MB_TRIGGER_INTERVAL && !t->anchored)
    s->start = now + s->interval;
  if (s->kind != MB_TRIGGER_DATE && s->start != MB_TIME_NONE &&
      s->end != MB_TIME_NONE && s->end < s->start) {
    mb_err_set(err, MB_EINVAL, "end_date: is before start_date");
    mb_trigger_free(t);
    return NULL;
  }
  if (s->kind == MB_TRIGGER_CRON) {
    t->first = mb_trigger_next(t, MB_TIME_NONE, now);
    if (t->first == MB_TIME_NONE) {
      if (s->end != MB_TIME_NONE && s->end < now)
        end_in_past(s, err);
      else
        mb_err_set(err, MB_ENEVER, "can never fire");
      mb_trigger_free(t);
      return NULL;
    }
    t->made_at = now;
  }
  if (s->kind == MB_TRIGGER_INTERVAL &&
      mb_trigger_next(t, MB_TIME_NONE, now) == MB_TIME_NONE) {
    end_in_past(s, err);
    mb_trigger_free(t);
    return NULL;
  }
  return t;
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
  case MB_TRIGGER_DATE:
    return (size_t)snprintf(buf, n, "date[%s]",
                            mb_time_format(s->run_date, s->tz, a, sizeof a));
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

void mb_trigger_free(mb_trigger *t) {
  if (!t) return;
  mb_cron_free(t->spec.cron);
  free(t);
}
