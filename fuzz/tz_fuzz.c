/* tz_fuzz.c: libFuzzer target for the TZif reader and for ISO 8601
 * times.
 *
 * tz.c reads a zone only from a file named under $TZDIR and caches it
 * by name for the life of the process; it has no entry point taking
 * bytes. So that the reader sees every input without a change to tz.c,
 * an input that starts like a TZif file is written to a private TZDIR
 * under a name never used before, loaded with mb_tz_get, and the file
 * removed. The cache keeps each zone that loads, so memory and lookup
 * time grow with the run: fine for a run bounded in time, which is how
 * `make fuzz` runs it.
 *
 * Any other input stands, up to its first line break, for the POSIX TZ
 * rule in the footer of a small TZif file made around it, since that
 * rule governs every instant after a zone's last transition. Every
 * input is also parsed as a time and looked up as a zone name.
 *
 * Whatever loads or parses is checked against what tz.h promises; a
 * broken promise traps, so libFuzzer keeps the input like any other
 * crash. */
#include "fuzz_util.h"
#include "cron.h"
#include "tz.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond) \
  do { \
    if (!(cond)) { \
      fprintf(stderr, "tz_fuzz: check failed at line %d: %s\n", __LINE__, \
              #cond); \
      __builtin_trap(); \
    } \
  } while (0)

#define DAY INT64_C(86400)

static char zone_dir[4096];
static unsigned long long zone_count;

/* Real zones for the time parser, loaded before TZDIR is redirected. */
static const mb_tz *zones[3];
static int nzones;

/* Schedules run in each fuzzed zone: a fixed hour, which meets DST
 * gaps and repeats, and a wildcard hour, which follows real time. */
static mb_cron *crons[2];

static void remove_zone_dir(void) {
  rmdir(zone_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  zones[nzones++] = mb_tz_utc();
  static const char *const names[] = {"Europe/Berlin", "America/New_York"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    const mb_tz *tz;
    mb_err err;
    if (mb_tz_get(names[i], &tz, &err) == 0) zones[nzones++] = tz;
    else fprintf(stderr, "tz_fuzz: skipping %s: %s\n", names[i], err.msg);
  }
  static const char *const exprs[] = {"30 2 * * *", "*/15 * * * *"};
  for (int i = 0; i < 2; i++) {
    mb_err err;
    if (!(crons[i] = mb_cron_from_crontab(exprs[i], &err))) {
      fprintf(stderr, "tz_fuzz: %s: %s\n", exprs[i], err.msg);
      abort();
    }
  }

  const char *tmp = getenv("TMPDIR");
  snprintf(zone_dir, sizeof zone_dir, "%s/moonbeat-tz-fuzz.XXXXXX",
           tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(zone_dir)) {
    perror("tz_fuzz: mkdtemp");
    abort();
  }
  setenv("TZDIR", zone_dir, 1);
  atexit(remove_zone_dir);
  return 0;
}


/* Mostly 1900-2250 with a random fraction of a second, now and then any
 * 64-bit value, since the lookups promise to work over the whole range. */
static mb_time some_instant(uint64_t *h) {
  uint64_t r = mix(h);
  if ((r & 15) == 0) return (mb_time)mix(h);
  const int64_t lo = INT64_C(-2208988800), span = INT64_C(11044944000);
  int64_t sec = lo + (int64_t)(mix(h) % (uint64_t)span);
  return sec * MB_SEC + (int64_t)(mix(h) % 1000000);
}

static int64_t floor_sec(mb_time t) {
  return t / MB_SEC - (t % MB_SEC < 0);
}

static bool is_leap(int y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int y, int m) {
  static const int n[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : n[m - 1];
}

static bool same_wall(const mb_civil *a, const mb_civil *b) {
  return a->year == b->year && a->month == b->month && a->day == b->day &&
         a->hour == b->hour && a->min == b->min && a->sec == b->sec &&
         a->usec == b->usec;
}

/* A formatted time reads back as the same instant when the parser can
 * read it: a four-digit year and an offset of whole minutes under a
 * day. Errors have a negative code and a message. */
static void check_format(mb_time t, const mb_tz *tz, const mb_civil *c,
                         uint64_t *h) {
  char buf[96];
  CHECK(mb_time_format(t, tz, buf, sizeof buf) == buf);
  CHECK(strlen(buf) < sizeof buf);
  char small[24];
  size_t n = 1 + mix(h) % sizeof small;
  memset(small, 'x', sizeof small);
  mb_time_format(t, tz, small, n);
  CHECK(strlen(small) < n && strncmp(small, buf, strlen(small)) == 0);
  if (c->year < 0 || c->year > 9999 || c->utcoff % 60 != 0 ||
      c->utcoff <= -DAY || c->utcoff >= DAY)
    return;
  mb_time back;
  mb_err err = {0};
  CHECK(mb_time_parse(buf, mb_tz_utc(), &back, &err) == 0);
  CHECK(back == t);
}

/* One instant: its civil time has fields in range and adds back up to
 * the instant; the offset agrees with mb_tz_offset; every instant that
 * mb_tz_from_civil returns shows the same wall time, in order; and
 * while the offset is under two days (the window from_civil searches),
 * the civil time is found at least once. */
static void check_instant(const mb_tz *tz, mb_time t, uint64_t *h) {
  mb_civil c;
  mb_tz_to_civil(tz, t, &c);
  CHECK(c.month >= 1 && c.month <= 12);
  CHECK(c.day >= 1 && c.day <= month_days(c.year, c.month));
  CHECK(c.hour >= 0 && c.hour <= 23 && c.min >= 0 && c.min <= 59);
  CHECK(c.sec >= 0 && c.sec <= 59 && c.usec >= 0 && c.usec <= 999999);
  CHECK(c.wday >= 0 && c.wday <= 6 && c.yday >= 0 && c.yday <= 365);
  CHECK(c.utcoff == mb_tz_offset(tz, t, NULL));
  int64_t days = mb_days_from_civil(c.year, c.month, c.day);
  CHECK(days * DAY + c.hour * 3600 + c.min * 60 + c.sec - c.utcoff ==
        floor_sec(t));
  CHECK(days - mb_days_from_civil(c.year, 1, 1) == c.yday);

  mb_time out[2], gap = MB_TIME_NONE;
  int n = mb_tz_from_civil(tz, &c, out, &gap);
  CHECK(n >= 0 && n <= 2);
  for (int i = 0; i < n; i++) {
    mb_civil back;
    mb_tz_to_civil(tz, out[i], &back);
    CHECK(same_wall(&back, &c));
  }
  if (n == 2) CHECK(out[0] < out[1]);
  if (c.utcoff > -2 * DAY && c.utcoff < 2 * DAY) CHECK(n >= 1);
  check_format(t, tz, &c, h);
}

/* From `start`, follow the offset changes: each must lie after the
 * instant asked about, and both sides of each are checked. */
static void walk(const mb_tz *tz, mb_time start, uint64_t *h) {
  mb_time t = start;
  for (int i = 0; i < 48; i++) {
    mb_time next;
    mb_tz_offset(tz, t, &next);
    check_instant(tz, t, h);
    if (next == MB_TIME_NONE) return;
    CHECK(next > t);
    check_instant(tz, next - 1, h);
    t = next;
  }
}

/* Cron walks the zone's offset stretches itself; whatever the zone,
 * its answers lie strictly after the question. */
static void check_cron(const mb_tz *tz, mb_time after) {
  for (int i = 0; i < 2; i++) {
    mb_time prev = after;
    for (int k = 0; k < 3; k++) {
      mb_time n = mb_cron_next(crons[i], prev, tz);
      if (n == MB_TIME_NONE) break;
      CHECK(n > prev);
      prev = n;
    }
  }
}

/* A successful parse gives an instant that formats and reads back; a
 * failed one says why. */
static void check_parse(const char *s, const mb_tz *tz, uint64_t *h) {
  mb_time t;
  mb_err err = {0};
  if (mb_time_parse(s, tz, &t, &err) < 0) {
    CHECK(err.code == MB_EINVAL && err.msg[0] != '\0');
    return;
  }
  mb_civil c;
  mb_tz_to_civil(mb_tz_utc(), t, &c);
  check_format(t, mb_tz_utc(), &c, h);
}

static void write_file(const char *path, const uint8_t *data, size_t size) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    perror("tz_fuzz: open");
    abort();
  }
  for (size_t at = 0; at < size;) {
    ssize_t n = write(fd, data + at, size - at);
    if (n <= 0) {
      perror("tz_fuzz: write");
      abort();
    }
    at += (size_t)n;
  }
  close(fd);
}

static void fuzz_zone(const uint8_t *data, size_t size, uint64_t *h) {
  char name[32], path[4200];
  snprintf(name, sizeof name, "z%llu", zone_count++);
  snprintf(path, sizeof path, "%s/%s", zone_dir, name);
  write_file(path, data, size);
  const mb_tz *tz;
  mb_err err = {0};
  int rc = mb_tz_get(name, &tz, &err);
  unlink(path);
  if (rc < 0) {
    /* The file is there and starts with the magic: it can only be
     * damaged, never unknown. */
    CHECK(rc == MB_EINVAL && err.msg[0] != '\0');
    return;
  }
  CHECK(strcmp(mb_tz_name(tz), name) == 0);
  /* From the first whole second an mb_time holds, so the first
   * transitions of the table are seen. Not from INT64_MIN itself: in
   * the part second before, mb_tz_from_civil overflows (cand * MB_SEC)
   * in every zone, which would end each run at its first input. */
  walk(tz, (INT64_MIN / MB_SEC) * MB_SEC, h);
  mb_time t = some_instant(h);
  walk(tz, t, h);
  check_cron(tz, t);
  check_cron(tz, some_instant(h));
}

static unsigned char *put32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)(v >> 24);
  p[1] = (unsigned char)(v >> 16);
  p[2] = (unsigned char)(v >> 8);
  p[3] = (unsigned char)v;
  return p + 4;
}

/* A TZif v2 file with one transition, at an instant taken from the
 * hash, from local mean time to a DST type, and `rule` as its footer.
 * tz.c reads a footer of up to 254 bytes. Returns the length. */
static size_t make_tzif(const char *rule, uint64_t *h, unsigned char *out) {
  unsigned char *p = out;
  int64_t at = INT64_C(-2208988800) + (int64_t)(mix(h) % UINT64_C(6000000000));
  for (int block = 0; block < 2; block++) {
    memcpy(p, "TZif2", 5);
    memset(p + 5, 0, 15);
    p += 20;
    /* isut, isstd, leap, time, type and char counts */
    p = put32(put32(put32(p, 0), 0), 0);
    p = put32(put32(put32(p, 1), 2), 8);
    if (block == 0) {
      p = put32(p, (uint32_t)at);
    } else {
      p = put32(p, (uint32_t)((uint64_t)at >> 32));
      p = put32(p, (uint32_t)at);
    }
    *p++ = 1;
    p = put32(p, 3208);
    *p++ = 0;
    *p++ = 0;
    p = put32(p, 3600);
    *p++ = 1;
    *p++ = 4;
    memcpy(p, "LMT\0CET\0", 8);
    p += 8;
  }
  size_t n = strcspn(rule, "\n");
  if (n > 250) n = 250;
  *p++ = '\n';
  memcpy(p, rule, n);
  p += n;
  *p++ = '\n';
  return (size_t)(p - out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  uint64_t h = hash(data, size);
  char *s = malloc(size + 1);
  memcpy(s, data, size);
  s[size] = '\0';

  if (size >= 4 && memcmp(data, "TZif", 4) == 0) {
    fuzz_zone(data, size, &h);
  } else {
    unsigned char tzif[400];
    fuzz_zone(tzif, make_tzif(s, &h, tzif), &h);
  }
  for (int i = 0; i < nzones; i++) check_parse(s, zones[i], &h);

  /* Names from job files: most are refused or unknown here (the zone
   * directory holds only the file of the moment), a few are aliases of
   * UTC or "local", the machine's zone. */
  const mb_tz *tz;
  mb_err err = {0};
  int rc = mb_tz_get(s, &tz, &err);
  if (rc == 0) CHECK(tz != NULL);
  else CHECK((rc == MB_EINVAL || rc == MB_ENOTFOUND) && err.msg[0] != '\0');
  free(s);
  return 0;
}
