/* cron.h: cron expressions, compiled once and searched for the next
 * matching second. Two spellings compile to one form: APScheduler's
 * field table (day_of_week 0 = Monday, all fields must match) and the
 * crontab string (5 or 6 fields, 0 = Sunday, day-of-month OR
 * day-of-week when both are restricted). Plain C: the CLI reuses it. */
#ifndef MB_CRON_H
#define MB_CRON_H

#include "common.h"
#include "tz.h"

typedef struct mb_cron mb_cron;

/* Field order of APScheduler's CronTrigger, most significant first. */
enum {
  MB_CRON_YEAR,
  MB_CRON_MONTH,
  MB_CRON_DAY,
  MB_CRON_WEEK,
  MB_CRON_DOW,
  MB_CRON_HOUR,
  MB_CRON_MINUTE,
  MB_CRON_SECOND,
  MB_CRON_NFIELDS
};

/* "year", "month", "day", "week", "day_of_week", ... */
const char *mb_cron_field_name(int field);

/* Compile an APScheduler-style field table. fields[i] is the expression
 * text or NULL when not given; unset fields default as APScheduler's do
 * (coarser than the finest given: '*'; finer: their minimum; week and
 * day_of_week: '*'). On error returns NULL and err->msg reads like
 * "hour: 25 is out of range 0-23". */
mb_cron *mb_cron_from_fields(const char *const fields[MB_CRON_NFIELDS],
                             mb_err *err);

/* Compile a crontab string: 5 fields, 6 (second first) or 7 (second
 * first, year last), or a macro (@yearly @annually @monthly @weekly
 * @daily @midnight @hourly). Also L, L-n, nW, LW in day-of-month, 5L /
 * friL and fri#3 in day-of-week, and a leading '+' for day-of-month AND
 * day-of-week. On error returns NULL with a message such as
 * "minute: 61 is out of range 0-59". */
mb_cron *mb_cron_from_crontab(const char *expr, mb_err *err);

/* The first matching instant strictly after `after`, with fields read
 * in tz, or MB_TIME_NONE when there is none. The search is bounded. */
mb_time mb_cron_next(const mb_cron *c, mb_time after, const mb_tz *tz);

/* APScheduler-like description: "hour='2', minute='30'" for a field
 * table, the original text for a crontab string. Returns the length
 * that the full text needs, like snprintf. */
size_t mb_cron_describe(const mb_cron *c, char *buf, size_t n);

/* How a fixed-hour schedule (not '*' or a step in the hour) meets a DST
 * change. In a spring-forward gap its local time does not exist:
 * GAP_RUN (default) fires at the first instant after the gap, GAP_SKIP
 * does not fire. In a fall-back overlap its local time happens twice:
 * REPEAT_FIRST (default) fires at the first, REPEAT_LAST at the second,
 * REPEAT_BOTH at both. A wildcard-hour schedule follows real time and
 * ignores these. */
enum { MB_DST_GAP_RUN, MB_DST_GAP_SKIP };
enum { MB_DST_REPEAT_FIRST, MB_DST_REPEAT_LAST, MB_DST_REPEAT_BOTH };
void mb_cron_set_dst(mb_cron *c, int gap, int repeat);

/* As mb_cron_from_fields and mb_cron_from_crontab with the DST choices
 * given, but shared: the same input (fields or text, and choices)
 * returns the copy already compiled, with one more holder. A shared
 * expression must not be changed. For the loop's thread only. */
mb_cron *mb_cron_shared_fields(const char *const fields[MB_CRON_NFIELDS],
                               int gap, int repeat, mb_err *err);
mb_cron *mb_cron_shared_crontab(const char *expr, int gap, int repeat,
                                mb_err *err);

/* One more holder of c (a copy of a trigger shares its expression);
 * returns c. */
mb_cron *mb_cron_hold(mb_cron *c);

/* Drops a holder of c, freeing it with the last; NULL is fine. */
void mb_cron_free(mb_cron *c);

#endif
