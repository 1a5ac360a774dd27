/* cron_fuzz.c: libFuzzer target for cron expressions.
 *
 * The input is read twice: as one crontab string (NUL bytes read as
 * spaces, since a C string cannot hold them) and cut at NUL bytes into
 * the eight fields of an APScheduler table. Whatever compiles is
 * searched from a few instants in UTC and in DST zones, and the answers
 * are checked against what cron.h promises; a broken promise traps, so
 * libFuzzer keeps the input like any other crash. */
#include "fuzz_util.h"
#include "cron.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) \
  do { \
    if (!(cond)) { \
      fprintf(stderr, "cron_fuzz: check failed at line %d: %s\n", \
              __LINE__, #cond); \
      __builtin_trap(); \
    } \
  } while (0)

/* Zones with DST changes that are an hour (Berlin, New York) and half an
 * hour (Lord Howe), so the walk over offset stretches meets both. */
static const char *const zone_names[] = {
    "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"};
static const mb_tz *zones[4];
static int nzones;

/* Instants where things happen: the epoch, DST changes in the zones
 * above, and the ends of cron's year range (1970-2199). */
static const mb_time edges[] = {
    0,
    -1,
    INT64_C(1711846799) * MB_SEC,  /* 2024-03-31 00:59:59Z, Berlin gap */
    INT64_C(1729989000) * MB_SEC,  /* 2024-10-27 00:30:00Z, Berlin repeat */
    INT64_C(1710053999) * MB_SEC,  /* 2024-03-10 06:59:59Z, NY gap */
    INT64_C(1730611800) * MB_SEC,  /* 2024-11-03 05:30:00Z, NY repeat */
    INT64_C(1712415600) * MB_SEC,  /* 2024-04-06 15:00:00Z, Lord Howe */
    INT64_C(7258118399) * MB_SEC,  /* 2199-12-31 23:59:59Z */
    INT64_C(7258118400) * MB_SEC + 1,
    INT64_C(-31536000) * MB_SEC,   /* 1969-01-01 */
    INT64_MAX,
};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  zones[nzones++] = mb_tz_utc();
  for (size_t i = 0; i < sizeof zone_names / sizeof zone_names[0]; i++) {
    const mb_tz *tz;
    mb_err err;
    if (mb_tz_get(zone_names[i], &tz, &err) == 0) zones[nzones++] = tz;
    else fprintf(stderr, "cron_fuzz: skipping %s: %s\n", zone_names[i],
                 err.msg);
  }
  return 0;
}


/* A start instant: mostly 1900-2250 with a random fraction of a second,
 * sometimes a known edge, and when `wide`, now and then the least or
 * any 64-bit value. Not always: from the year -290000 a schedule that
 * never matches is searched month by month up to 2199, which under the
 * sanitizers takes most of a second, and would slow the run down. */
static mb_time start_instant(uint64_t *h, bool wide) {
  uint64_t r = mix(h);
  if ((r & 7) == 0)
    return edges[(r >> 8) % (sizeof edges / sizeof edges[0])];
  if (wide && (r & 0x38) == 0) return r & 0x40 ? INT64_MIN : (mb_time)mix(h);
  /* 1900-01-01 to 2250-01-01. */
  const int64_t lo = INT64_C(-2208988800), span = INT64_C(11044944000);
  int64_t sec = lo + (int64_t)(mix(h) % (uint64_t)span);
  return sec * MB_SEC + (int64_t)(mix(h) % 1000000);
}

/* A few chained searches from `after`. Every answer must be a whole
 * second strictly after the question, which also makes a chain rise.
 * In UTC there is no DST to excuse anything, so the answer must also
 * be the first match: asking again from any earlier point after the
 * question, here just before the answer and half way, gives it again. */
static void check_next(const mb_cron *c, const mb_tz *tz, mb_time after) {
  bool utc = tz == mb_tz_utc();
  mb_time prev = after;
  for (int i = 0; i < 4; i++) {
    mb_time n = mb_cron_next(c, prev, tz);
    if (n == MB_TIME_NONE) return;
    CHECK(n > prev);
    CHECK(n % MB_SEC == 0);
    if (utc) {
      CHECK(mb_cron_next(c, n - 1, tz) == n);
      mb_time mid = prev + (mb_time)(((uint64_t)n - (uint64_t)prev) / 2);
      CHECK(mb_cron_next(c, mid, tz) == n);
    }
    prev = n;
  }
}

/* The description has the snprintf contract: the full length back,
 * and any buffer filled with a terminated prefix. */
static void check_describe(const mb_cron *c, uint64_t *h) {
  char buf[1100];
  size_t len = mb_cron_describe(c, NULL, 0);
  CHECK(mb_cron_describe(c, buf, sizeof buf) == len);
  CHECK(strlen(buf) == (len < sizeof buf ? len : sizeof buf - 1));
  size_t small = 1 + mix(h) % 16;
  memset(buf, 'x', sizeof buf);
  CHECK(mb_cron_describe(c, buf, small) == len);
  CHECK(strlen(buf) == (len < small ? len : small - 1));
}

static void exercise(mb_cron *c, uint64_t h) {
  check_describe(c, &h);
  /* The DST options only steer fixed-hour schedules in the DST zones;
   * whichever is chosen, the promises checked above still hold. */
  mb_cron_set_dst(c, (int)(mix(&h) % 2), (int)(mix(&h) % 3));
  /* A schedule that fires at all in 1900-2199 fires within any 400
   * years (the Gregorian cycle) or from 1970 on (a year list), so a
   * search from far back ends soon. */
  mb_time from1900 = INT64_C(-2208988800) * MB_SEC;
  bool wide = mb_cron_next(c, from1900, mb_tz_utc()) != MB_TIME_NONE;
  for (int k = 0; k < 3; k++) {
    mb_time after = start_instant(&h, wide);
    for (int z = 0; z < nzones; z++) check_next(c, zones[z], after);
  }
  mb_cron_free(c);
}

/* A refused expression says why: a negative code and a message. */
static void check_error(const mb_err *err) {
  CHECK(err->code < 0);
  CHECK(err->msg[0] != '\0');
  CHECK(memchr(err->msg, '\0', sizeof err->msg) != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint64_t h = hash(data, size);
  char *s = malloc(size + 1);
  memcpy(s, data, size);
  s[size] = '\0';

  char *line = malloc(size + 1);
  for (size_t i = 0; i < size; i++) line[i] = s[i] ? s[i] : ' ';
  line[size] = '\0';
  mb_err err = {0};
  mb_cron *c = mb_cron_from_crontab(line, &err);
  if (c) exercise(c, h);
  else check_error(&err);
  free(line);

  /* Pieces past the eighth are dropped; an empty piece leaves its field
   * unset, the way a table without that key does. */
  const char *fields[MB_CRON_NFIELDS] = {0};
  size_t at = 0;
  for (int i = 0; i < MB_CRON_NFIELDS && at <= size; i++) {
    size_t len = strlen(s + at);
    if (len > 0) fields[i] = s + at;
    at += len + 1;
  }
  err = (mb_err){0};
  c = mb_cron_from_fields(fields, &err);
  if (c) exercise(c, ~h);
  else check_error(&err);
  free(s);
  return 0;
}
