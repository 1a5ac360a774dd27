/* trigger.h: when a job fires. A trigger answers one question, as
 * APScheduler's do: given the previous fire (or none) and now, which
 * instant comes next. Plain C; a trigger owns its cron expression. */
#ifndef MB_TRIGGER_H
#define MB_TRIGGER_H

#include <stdbool.h>

#include "common.h"
#include "cron.h"
#include "tz.h"

typedef struct mb_trigger mb_trigger;

enum { MB_TRIGGER_DATE, MB_TRIGGER_INTERVAL, MB_TRIGGER_CRON };

/* What a trigger is made from; times are instants, MB_TIME_NONE when
 * not given. */
typedef struct mb_trigger_spec {
  int kind;
  bool tz_given;        /* named by the user: describe shows it */
  const mb_tz *tz;      /* zone cron fields are read in */
  mb_time run_date;     /* date */
  mb_time interval;     /* interval: > 0 microseconds */
  mb_time start, end;   /* interval, cron */
  mb_cron *cron;        /* cron: ownership passes to the trigger */
} mb_trigger_spec;

/* Make a trigger, or take one more hold of the same trigger made
 * before from an equal spec (triggers are shared, and for the loop's
 * thread only). now anchors an interval without start_date (its first
 * fire is one interval after now). Fails with MB_ENEVER when it can
 * never fire after now, with a message saying why. On failure the cron
 * expression in spec is freed too. */
mb_trigger *mb_trigger_new(const mb_trigger_spec *spec, mb_time now,
                           mb_err *err);

/* A trigger made from the same spec as t, checked again at now as
 * mb_trigger_new checks (a cron whose end_date has passed since fails
 * alike). An interval keeps t's grid. */
mb_trigger *mb_trigger_copy(const mb_trigger *t, mb_time now, mb_err *err);

/* The next fire after prev (MB_TIME_NONE: the first fire) as seen at
 * now, or MB_TIME_NONE when the trigger is done. Overdue fires are
 * returned too: the caller decides what to do with them. */
mb_time mb_trigger_next(const mb_trigger *t, mb_time prev, mb_time now);

int mb_trigger_kind(const mb_trigger *t);
const mb_tz *mb_trigger_tz(const mb_trigger *t);

/* "cron[hour='2', minute='30']", "interval[1h30m]", "date[...]". Like
 * snprintf, returns the length the whole text needs. */
size_t mb_trigger_describe(const mb_trigger *t, char *buf, size_t n);

/* What tells t from another trigger across restarts ("cron[hour='2']@UTC"),
 * made once and kept with t. */
const char *mb_trigger_identity(mb_trigger *t);

/* Drops a hold of t, freeing it with the last; NULL is fine. */
void mb_trigger_free(mb_trigger *t);

/* "1h30m", "10s", "250ms", "2d": the shortest spelling of a duration. */
char *mb_duration_format(mb_time d, char *buf, size_t n);

#endif
