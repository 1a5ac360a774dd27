/* tz.h: time zones and civil (wall) time. An instant is UTC; a zone
 * turns it into the local date and time that cron fields are read in,
 * and turns a local date and time back into instants. Zone objects are
 * owned by this module and live until the process exits. */
#ifndef MB_TZ_H
#define MB_TZ_H

#include "common.h"

typedef struct mb_tz mb_tz;

/* A broken-down local time. month 1-12, day 1-31, wday 0=Sunday,
 * yday 0-365, utcoff in seconds east of UTC. */
typedef struct mb_civil {
  int year, month, day, hour, min, sec;
  int wday, yday;
  int utcoff;
  int isdst;
  int usec;
} mb_civil;

/* The UTC zone. */
const mb_tz *mb_tz_utc(void);
/* The machine's zone: $TZ if set, else /etc/localtime. */
const mb_tz *mb_tz_local(void);
/* Look a zone up by name ("UTC", "local", later IANA names). */
int mb_tz_get(const char *name, const mb_tz **out, mb_err *err);
/* The zone's name as given to mb_tz_get ("UTC", "local", ...). */
const char *mb_tz_name(const mb_tz *tz);

/* The local time at instant t. */
void mb_tz_to_civil(const mb_tz *tz, mb_time t, mb_civil *out);

/* The UTC offset in seconds at instant t; when next is not NULL, *next
 * is the first instant after t where the offset may change, or
 * MB_TIME_NONE if it never does. Lets cron walk real time across DST
 * changes with one lookup per stretch of constant offset. */
int mb_tz_offset(const mb_tz *tz, mb_time t, mb_time *next);

/* The instants whose local time is c (fields year..sec, usec; the rest
 * ignored). Returns how many exist: 1 normally, 0 in a DST gap, 2 in a
 * repeated hour (first[0] < first[1]). In a gap, *after_gap is set to the
 * first instant after the gap; it may be NULL. */
int mb_tz_from_civil(const mb_tz *tz, const mb_civil *c, mb_time out[2],
                     mb_time *after_gap);

/* Days since 1970-01-01 of a proleptic Gregorian date, and back. */
int64_t mb_days_from_civil(int y, int m, int d);
void mb_civil_from_days(int64_t days, int *y, int *m, int *d);

/* Parse a time: an ISO 8601 string with or without offset
 * ("2026-12-01T09:00:00+01:00", "2026-12-01 09:00", "2026-12-01"),
 * read in tz when it has no offset. Errors name what is wrong. */
int mb_time_parse(const char *s, const mb_tz *tz, mb_time *out, mb_err *err);

/* Format t in tz as "2026-12-01T09:00:00+01:00" (fraction shown only
 * when not whole seconds). Returns buf. */
char *mb_time_format(mb_time t, const mb_tz *tz, char *buf, size_t n);

#endif
