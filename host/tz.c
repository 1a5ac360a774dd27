/* tz.c: time zones read from TZif files (RFC 8536), civil-time
 * arithmetic and ISO 8601 parsing and formatting.
 *
 * A zone is a table of transitions plus, for instants past the table,
 * the POSIX TZ rule from the file's footer. Every lookup reduces to one
 * question: which offset is in effect at a UTC second, and when does it
 * next change (seg_at). Converting wall time back to instants walks the
 * few segments around it, which handles gaps, overlaps and zones that
 * change twice in a day alike. */
#include "tz.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define DAY INT64_C(86400)
#define NO_CHANGE INT64_MAX

/* One half of a POSIX DST rule: a date form, the day, and the local
 * time of day (seconds, may be negative or past 24 h in TZif v3). */
typedef struct rule_date {
  char kind;        /* 'J' 1-365 without Feb 29, 'n' 0-365, 'M' m.w.d */
  int day, week, month;
  int32_t time;
} rule_date;

typedef struct rule {
  int32_t std_off, dst_off; /* seconds east of UTC */
  bool has_dst;
  rule_date start, end;
} rule;

struct mb_tz {
  char *name;
  int ntrans;
  int64_t *trans;       /* UTC seconds, ascending */
  int32_t *trans_off;   /* offset from trans[i] on */
  uint8_t *trans_dst;
  int32_t first_off;    /* before the first transition (type 0) */
  uint8_t first_dst;
  bool has_rule;        /* footer rule applies from the last transition */
  rule rule;
  struct mb_tz *next;   /* cache list */
};

static char utc_name[] = "UTC";
static mb_tz utc_zone = {.name = utc_name};

static uv_once_t cache_once = UV_ONCE_INIT;
static uv_mutex_t cache_lock;
static mb_tz *cache;
static mb_tz *local_zone;

static void cache_init(void) {
  if (uv_mutex_init(&cache_lock) != 0) abort();
}

/* ---- calendar ---------------------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

static bool is_leap(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int month_days(int64_t y, int m) {
  static const int n[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : n[m - 1];
}

/* Eras of 400 years (146097 days) make the Gregorian cycle exact; the
 * year is counted from March so that the leap day comes last. */
int64_t mb_days_from_civil(int y, int m, int d) {
  int64_t yy = (int64_t)y - (m <= 2);
  int64_t era = floor_div(yy, 400);
  int64_t yoe = yy - era * 400;
  int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
  int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

void mb_civil_from_days(int64_t days, int *y, int *m, int *d) {
  int64_t z = days + 719468;
  int64_t era = floor_div(z, 146097);
  int64_t doe = z - era * 146097;
  int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  int64_t mp = (5 * doy + 2) / 153;
  int dd = (int)(doy - (153 * mp + 2) / 5 + 1);
  int mm = (int)(mp < 10 ? mp + 3 : mp - 9);
  *y = (int)(yoe + era * 400 + (mm <= 2));
  *m = mm;
  *d = dd;
}

/* 1970-01-01 was a Thursday. */
static int weekday(int64_t days) {
  return (int)(days - floor_div(days + 4, 7) * 7 + 4);
}

/* ---- POSIX TZ rules ---------------------------------------------------- */

/* UTC second at which date r in year y starts, given the offset in
 * force just before it. */
static int64_t rule_instant(const rule_date *r, int y, int32_t off) {
  int64_t days;
  if (r->kind == 'J') {
    int yday = r->day - 1;
    if (is_leap(y) && r->day >= 60) yday++;
    days = mb_days_from_civil(y, 1, 1) + yday;
  } else if (r->kind == 'n') {
    days = mb_days_from_civil(y, 1, 1) + r->day;
  } else {
    int64_t first = mb_days_from_civil(y, r->month, 1);
    int d = 1 + (r->day - weekday(first) + 7) % 7 + 7 * (r->week - 1);
    while (d > month_days(y, r->month)) d -= 7;
    days = first + d - 1;
  }
  return days * DAY + r->time - off;
}

typedef struct event {
  int64_t at;
  bool dst;
} event;

/* Offset at t under rule r, and the next change after t. The events of
 * four years around t, sorted, cover rules whose dates wander across
 * New Year (times past 24 h, southern hemisphere). */
static int32_t rule_at(const rule *r, int64_t t, bool *dst, int64_t *next) {
  if (!r->has_dst) {
    *dst = false;
    *next = NO_CHANGE;
    return r->std_off;
  }
  int y0, m, d;
  mb_civil_from_days(floor_div(t + r->std_off, DAY), &y0, &m, &d);
  event ev[8];
  int n = 0;
  for (int y = y0 - 1; y <= y0 + 2; y++) {
    ev[n].at = rule_instant(&r->start, y, r->std_off);
    ev[n++].dst = true;
    ev[n].at = rule_instant(&r->end, y, r->dst_off);
    ev[n++].dst = false;
  }
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && ev[j - 1].at > ev[j].at; j--) {
      event tmp = ev[j];
      ev[j] = ev[j - 1];
      ev[j - 1] = tmp;
    }
  bool in_dst = !ev[0].dst; /* state before the first event */
  *next = NO_CHANGE;
  for (int i = 0; i < n; i++) {
    if (ev[i].at > t) {
      *next = ev[i].at;
      break;
    }
    in_dst = ev[i].dst;
  }
  *dst = in_dst;
  return in_dst ? r->dst_off : r->std_off;
}

static const char *parse_tz_name(const char *p) {
  if (*p == '<') {
    const char *q = strchr(p, '>');
    return q && q > p + 1 ? q + 1 : NULL;
  }
  const char *q = p;
  while (isalpha((unsigned char)*q)) q++;
  return q - p >= 3 ? q : NULL;
}

/* [+-]hh[:mm[:ss]] with hours up to 167, as POSIX and TZif v3 allow. */
static const char *parse_hms(const char *p, int32_t *out) {
  int sign = 1;
  if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
  if (!isdigit((unsigned char)*p)) return NULL;
  int32_t v[3] = {0, 0, 0};
  for (int i = 0; i < 3; i++) {
    if (i > 0) {
      if (*p != ':') break;
      p++;
    }
    if (!isdigit((unsigned char)*p)) return NULL;
    int n = 0;
    for (int k = 0; isdigit((unsigned char)*p); p++, k++) {
      if (k >= 3) return NULL;
      n = n * 10 + (*p - '0');
    }
    v[i] = n;
  }
  if (v[0] > 167 || v[1] > 59 || v[2] > 59) return NULL;
  *out = sign * (v[0] * 3600 + v[1] * 60 + v[2]);
  return p;
}

static const char *parse_num(const char *p, int lo, int hi, int *out) {
  if (!isdigit((unsigned char)*p)) return NULL;
  int n = 0;
  while (isdigit((unsigned char)*p)) {
    n = n * 10 + (*p++ - '0');
    if (n > hi) return NULL;
  }
  if (n < lo) return NULL;
  *out = n;
  return p;
}

static const char *parse_rule_date(const char *p, rule_date *r) {
  if (*p == 'J') {
    r->kind = 'J';
    p = parse_num(p + 1, 1, 365, &r->day);
  } else if (*p == 'M') {
    r->kind = 'M';
    p = parse_num(p + 1, 1, 12, &r->month);
    if (p && *p == '.') p = parse_num(p + 1, 1, 5, &r->week);
    else p = NULL;
    if (p && *p == '.') p = parse_num(p + 1, 0, 6, &r->day);
    else p = NULL;
  } else {
    r->kind = 'n';
    p = parse_num(p, 0, 365, &r->day);
  }
  if (!p) return NULL;
  r->time = 7200;
  if (*p == '/') p = parse_hms(p + 1, &r->time);
  return p;
}

/* A POSIX TZ string such as "CET-1CEST,M3.5.0,M10.5.0/3". The sign is
 * POSIX's: hours west of Greenwich. */
static bool parse_posix(const char *s, rule *r) {
  memset(r, 0, sizeof *r);
  const char *p = parse_tz_name(s);
  int32_t off;
  if (!p || !(p = parse_hms(p, &off))) return false;
  r->std_off = -off;
  if (!*p) return true;
  if (!(p = parse_tz_name(p))) return false;
  r->has_dst = true;
  r->dst_off = r->std_off + 3600;
  if (*p && *p != ',') {
    if (!(p = parse_hms(p, &off))) return false;
    r->dst_off = -off;
  }
  if (!*p) {
    /* No dates: the US rules, as glibc assumes. */
    r->start = (rule_date){'M', 0, 2, 3, 7200};
    r->end = (rule_date){'M', 0, 1, 11, 7200};
    return true;
  }
  if (*p++ != ',' || !(p = parse_rule_date(p, &r->start))) return false;
  if (*p++ != ',' || !(p = parse_rule_date(p, &r->end))) return false;
  return *p == '\0';
}

/* ---- TZif files -------------------------------------------------------- */

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

static int64_t be64(const unsigned char *p) {
  return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

static bool read_file(const char *path, unsigned char **data, size_t *len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  size_t cap = 4096, n = 0;
  unsigned char *buf = mb_xmalloc(cap);
  for (;;) {
    if (n == cap) {
      /* Real zone files are a few kB; anything huge is not one. */
      if (cap >= 1 << 20) break;
      buf = mb_xrealloc(buf, cap *= 2);
    }
    ssize_t got = read(fd, buf + n, cap - n);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      close(fd);
      if (got < 0) break;
      *data = buf;
      *len = n;
      return true;
    }
    n += (size_t)got;
  }
  close(fd);
  free(buf);
  return false;
}

/* Fill tz from TZif data. Uses the 64-bit block when the file has one,
 * ignores leap-second records (we count POSIX seconds). */
static bool parse_tzif(const unsigned char *p, size_t len, mb_tz *tz) {
  if (len < 44 || memcmp(p, "TZif", 4) != 0) return false;
  int version = p[4] ? p[4] - '0' : 1;
  const unsigned char *end = p + len;
  size_t tsize = 4;
  for (;;) {
    if (end - p < 44) return false;
    uint32_t isut = be32(p + 20), isstd = be32(p + 24), leap = be32(p + 28),
             timecnt = be32(p + 32), typecnt = be32(p + 36),
             charcnt = be32(p + 40);
    if (typecnt == 0 || typecnt > 256 || timecnt > 100000 || leap > 10000 ||
        charcnt > 100000 || isut > 256 || isstd > 256)
      return false;
    size_t body = timecnt * tsize + timecnt + typecnt * 6 + charcnt +
                  leap * (tsize + 4) + isstd + isut;
    p += 44;
    if ((size_t)(end - p) < body) return false;
    if (version >= 2 && tsize == 4) {
      p += body;
      if (end - p < 44 || memcmp(p, "TZif", 4) != 0) return false;
      tsize = 8;
      continue;
    }
    const unsigned char *times = p, *idx = p + timecnt * tsize;
    const unsigned char *types = idx + timecnt;
    for (uint32_t i = 0; i < timecnt; i++)
      if (idx[i] >= typecnt) return false;
    /* RFC 8536: an offset of -2^31 is invalid (it cannot be negated);
     * real offsets are within a day anyway. */
    for (uint32_t i = 0; i < typecnt; i++) {
      int32_t off = (int32_t)be32(types + 6 * i);
      if (off <= -86400 * 2 || off >= 86400 * 2) return false;
    }
    tz->ntrans = (int)timecnt;
    tz->trans = mb_xcalloc(timecnt, sizeof *tz->trans);
    tz->trans_off = mb_xcalloc(timecnt, sizeof *tz->trans_off);
    tz->trans_dst = mb_xcalloc(timecnt, 1);
    for (uint32_t i = 0; i < timecnt; i++) {
      tz->trans[i] = tsize == 8 ? be64(times + 8 * i)
                                : (int32_t)be32(times + 4 * i);
      if (i > 0 && tz->trans[i] <= tz->trans[i - 1]) return false;
      const unsigned char *ty = types + 6 * idx[i];
      tz->trans_off[i] = (int32_t)be32(ty);
      tz->trans_dst[i] = ty[4] != 0;
    }
    tz->first_off = (int32_t)be32(types);
    tz->first_dst = types[4] != 0;
    p += body;
    break;
  }
  if (version >= 2 && p < end && *p == '\n') {
    const unsigned char *nl = memchr(p + 1, '\n', (size_t)(end - p - 1));
    if (nl && nl > p + 1 && nl - p < 256) {
      char footer[256];
      memcpy(footer, p + 1, (size_t)(nl - p - 1));
      footer[nl - p - 1] = '\0';
      tz->has_rule = parse_posix(footer, &tz->rule);
    }
  }
  return true;
}

static void free_zone(mb_tz *tz) {
  free(tz->name);
  free(tz->trans);
  free(tz->trans_off);
  free(tz->trans_dst);
  free(tz);
}

/* Load a zone file; path is absolute or relative to $TZDIR. Returns
 * NULL with *bad set when the file exists but is not valid TZif. */
static mb_tz *load_zone(const char *file, const char *name, bool *bad) {
  char path[4096];
  const char *dir = getenv("TZDIR");
  if (!dir || !*dir) dir = "/usr/share/zoneinfo";
  if (file[0] == '/') snprintf(path, sizeof path, "%s", file);
  else snprintf(path, sizeof path, "%s/%s", dir, file);
  unsigned char *data;
  size_t len;
  *bad = false;
  if (!read_file(path, &data, &len)) return NULL;
  mb_tz *tz = mb_xcalloc(1, sizeof *tz);
  bool ok = len >= 4 && memcmp(data, "TZif", 4) == 0;
  if (ok && !parse_tzif(data, len, tz)) {
    ok = false;
    *bad = true;
  }
  free(data);
  if (!ok) {
    free_zone(tz);
    return NULL;
  }
  tz->name = mb_xstrdup(name);
  return tz;
}

/* $TZ as glibc reads it: unset means /etc/localtime, empty means UTC,
 * ":file" or "file" names a zone file, else a POSIX rule string. */
static mb_tz *load_local(void) {
  const char *env = getenv("TZ");
  bool bad;
  mb_tz *tz = NULL;
  if (!env) {
    tz = load_zone("/etc/localtime", "local", &bad);
  } else if (*env) {
    const char *file = env[0] == ':' ? env + 1 : env;
    if (!strstr(file, "..")) tz = load_zone(file, "local", &bad);
    if (!tz && env[0] != ':') {
      rule r;
      if (parse_posix(env, &r)) {
        tz = mb_xcalloc(1, sizeof *tz);
        tz->has_rule = true;
        tz->rule = r;
        tz->first_off = r.std_off;
        tz->name = mb_xstrdup("local");
      }
    }
  }
  if (!tz) {
    tz = mb_xcalloc(1, sizeof *tz);
    tz->name = mb_xstrdup("local");
  }
  return tz;
}

/* ---- lookups ----------------------------------------------------------- */

/* Offset in effect at UTC second t, and the next second at which it may
 * change (NO_CHANGE if never). */
static int32_t seg_at(const mb_tz *tz, int64_t t, bool *dst, int64_t *next) {
  int n = tz->ntrans;
  if (n == 0 || t < tz->trans[0]) {
    if (n > 0) {
      *next = tz->trans[0];
    } else if (tz->has_rule) {
      return rule_at(&tz->rule, t, dst, next);
    } else {
      *next = NO_CHANGE;
    }
    *dst = tz->first_dst;
    return tz->first_off;
  }
  int lo = 0, hi = n - 1;   /* largest i with trans[i] <= t */
  while (lo < hi) {
    int mid = lo + (hi - lo + 1) / 2;
    if (tz->trans[mid] <= t) lo = mid;
    else hi = mid - 1;
  }
  if (lo == n - 1 && tz->has_rule) {
    int32_t off = rule_at(&tz->rule, t, dst, next);
    return off;
  }
  *next = lo + 1 < n ? tz->trans[lo + 1] : NO_CHANGE;
  *dst = tz->trans_dst[lo];
  return tz->trans_off[lo];
}

const mb_tz *mb_tz_utc(void) {
  return &utc_zone;
}

const mb_tz *mb_tz_local(void) {
  uv_once(&cache_once, cache_init);
  uv_mutex_lock(&cache_lock);
  if (!local_zone) local_zone = load_local();
  mb_tz *tz = local_zone;
  uv_mutex_unlock(&cache_lock);
  return tz;
}

static bool is_utc_name(const char *name) {
  static const char *const names[] = {"UTC", "Etc/UTC", "Z", "GMT"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(name, names[i]) == 0) return true;
  return false;
}

int mb_tz_get(const char *name, const mb_tz **out, mb_err *err) {
  if (is_utc_name(name)) {
    *out = &utc_zone;
    return 0;
  }
  if (strcmp(name, "local") == 0) {
    *out = mb_tz_local();
    return 0;
  }
  /* Names come from job files: keep them inside the zone directory. */
  if (!*name || name[0] == '/' || strstr(name, "..") || strlen(name) > 255)
    return mb_err_set(err, MB_EINVAL, "'%.80s' is not a valid time zone name",
                      name);
  uv_once(&cache_once, cache_init);
  uv_mutex_lock(&cache_lock);
  mb_tz *tz = cache;
  while (tz && strcmp(tz->name, name) != 0) tz = tz->next;
  bool bad = false;
  if (!tz && (tz = load_zone(name, name, &bad))) {
    tz->next = cache;
    cache = tz;
  }
  uv_mutex_unlock(&cache_lock);
  if (!tz) {
    if (bad)
      return mb_err_set(err, MB_EINVAL, "time zone '%s' has a damaged file",
                        name);
    return mb_err_set(err, MB_ENOTFOUND, "unknown time zone '%s'", name);
  }
  *out = tz;
  return 0;
}

const char *mb_tz_name(const mb_tz *tz) {
  return tz->name;
}

int mb_tz_offset(const mb_tz *tz, mb_time t, mb_time *next) {
  bool dst;
  int64_t nx;
  int32_t off = seg_at(tz, floor_div(t, MB_SEC), &dst, &nx);
  if (next) {
    /* Past about year 292000 the change no longer fits an mb_time. */
    *next = nx >= INT64_MAX / MB_SEC ? MB_TIME_NONE : nx * MB_SEC;
  }
  return off;
}

void mb_tz_to_civil(const mb_tz *tz, mb_time t, mb_civil *out) {
  int64_t sec = floor_div(t, MB_SEC);
  bool dst;
  int64_t next;
  int32_t off = seg_at(tz, sec, &dst, &next);
  int64_t local = sec + off;
  int64_t days = floor_div(local, DAY);
  int sod = (int)(local - days * DAY);
  mb_civil_from_days(days, &out->year, &out->month, &out->day);
  out->hour = sod / 3600;
  out->min = sod / 60 % 60;
  out->sec = sod % 60;
  out->wday = weekday(days);
  out->yday = (int)(days - mb_days_from_civil(out->year, 1, 1));
  out->utcoff = off;
  out->isdst = dst;
  int64_t us = t % MB_SEC; /* not t - sec * MB_SEC: overflows at the edge */
  out->usec = (int)(us < 0 ? us + MB_SEC : us);
}

/* Walk the offset segments around the wall time: an instant t matches
 * when t + offset(t) is the wall time. A change to a larger offset that
 * jumps over it is a gap. Offsets stay within a day, so two days either
 * side is enough. */
int mb_tz_from_civil(const mb_tz *tz, const mb_civil *c, mb_time out[2],
                     mb_time *after_gap) {
  int64_t local = mb_days_from_civil(c->year, c->month, c->day) * DAY +
                  c->hour * 3600 + c->min * 60 + c->sec;
  int64_t t = local - 2 * DAY, next;
  bool dst;
  int32_t off = seg_at(tz, t, &dst, &next);
  int n = 0;
  for (;;) {
    int64_t cand = local - off;
    /* At the very ends of the time range the instant may not fit. */
    int64_t us;
    if (cand >= t && cand < next && n < 2 &&
        !__builtin_mul_overflow(cand, MB_SEC, &us) &&
        !__builtin_add_overflow(us, (int64_t)c->usec, &us))
      out[n++] = us;
    if (next == NO_CHANGE || next > local + 2 * DAY) break;
    int64_t nx;
    int32_t off2 = seg_at(tz, next, &dst, &nx);
    if (n == 0 && off2 > off && next + off <= local && local < next + off2 &&
        after_gap)
      *after_gap = next * MB_SEC;
    t = next;
    next = nx;
    off = off2;
  }
  return n;
}

/* ---- parsing and formatting -------------------------------------------- */

static const char *const month_names[] = {
    "January", "February", "March",     "April",   "May",      "June",
    "July",    "August",   "September", "October", "November", "December"};

/* Exactly n digits. */
static bool digits(const char **p, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (!isdigit((unsigned char)(*p)[i])) return false;
    v = v * 10 + ((*p)[i] - '0');
  }
  *p += n;
  *out = v;
  return true;
}

int mb_time_parse(const char *s, const mb_tz *tz, mb_time *out, mb_err *err) {
  const char *b = s, *e = s + strlen(s);
  while (b < e && isspace((unsigned char)*b)) b++;
  while (e > b && isspace((unsigned char)e[-1])) e--;
  int len = (int)(e - b) > 100 ? 100 : (int)(e - b);
  char buf[104];
  memcpy(buf, b, (size_t)len);
  buf[len] = '\0';
  if ((int)(e - b) > 100) strcpy(buf + 96, "...");

  mb_civil c = {0};
  int off = 0, oh = 0, om = 0;
  bool has_off = false;
  const char *p = b;
  if (e - b > 100 || !digits(&p, 4, &c.year) || *p++ != '-' ||
      !digits(&p, 2, &c.month) || *p++ != '-' || !digits(&p, 2, &c.day))
    goto syntax;
  if (p < e && (*p == 'T' || *p == 't' || *p == ' ')) {
    p++;
    if (!digits(&p, 2, &c.hour) || *p++ != ':' || !digits(&p, 2, &c.min))
      goto syntax;
    if (*p == ':') {
      p++;
      if (!digits(&p, 2, &c.sec)) goto syntax;
      if (*p == '.' || *p == ',') {
        p++;
        if (!isdigit((unsigned char)*p)) goto syntax;
        /* Microseconds: keep six digits, drop finer ones. */
        for (int i = 0; i < 6; i++)
          c.usec = c.usec * 10 + (isdigit((unsigned char)*p) ? *p++ - '0' : 0);
        while (isdigit((unsigned char)*p)) p++;
      }
    }
    if (*p == 'Z' || *p == 'z') {
      p++;
      has_off = true;
    } else if (*p == '+' || *p == '-') {
      int sign = *p++ == '-' ? -1 : 1;
      if (!digits(&p, 2, &oh)) goto syntax;
      bool colon = *p == ':';
      if (colon) p++;
      if ((colon || p < e) && !digits(&p, 2, &om)) goto syntax;
      off = sign * (oh * 3600 + om * 60);
      has_off = true;
    }
  }
  if (p != e) goto syntax;

  const char *why = NULL;
  char tmp[80];
  if (c.month < 1 || c.month > 12) {
    snprintf(tmp, sizeof tmp, "month %d is out of range 1-12", c.month);
    why = tmp;
  } else if (c.day < 1 || c.day > month_days(c.year, c.month)) {
    snprintf(tmp, sizeof tmp, "day %d is out of range for %s %04d", c.day,
             month_names[c.month - 1], c.year);
    why = tmp;
  } else if (c.hour > 23) {
    snprintf(tmp, sizeof tmp, "hour %d is out of range 0-23", c.hour);
    why = tmp;
  } else if (c.min > 59) {
    snprintf(tmp, sizeof tmp, "minute %d is out of range 0-59", c.min);
    why = tmp;
  } else if (c.sec > 59) {
    snprintf(tmp, sizeof tmp, "second %d is out of range 0-59", c.sec);
    why = tmp;
  } else if (oh > 23 || om > 59) {
    snprintf(tmp, sizeof tmp, "offset %c%02d:%02d is out of range",
             off < 0 ? '-' : '+', oh, om);
    why = tmp;
  }
  if (why)
    return mb_err_set(err, MB_EINVAL, "'%s' is not a valid time: %s", buf,
                      why);

  if (has_off) {
    int64_t local = mb_days_from_civil(c.year, c.month, c.day) * DAY +
                    c.hour * 3600 + c.min * 60 + c.sec;
    *out = (local - off) * MB_SEC + c.usec;
    return 0;
  }
  mb_time inst[2], gap = 0;
  int n = mb_tz_from_civil(tz, &c, inst, &gap);
  /* In a gap, the wall clock shows this time only as the jump's end. */
  *out = n > 0 ? inst[0] : gap;
  return 0;

syntax:
  return mb_err_set(err, MB_EINVAL,
                    "'%s' is not a time (expected "
                    "YYYY-MM-DD[ HH:MM[:SS]][+HH:MM])",
                    buf);
}

/* Write v as exactly width digits (v >= 0, fits) and return the end. */
static char *put_digits(char *p, int v, int width) {
  for (int i = width - 1; i >= 0; i--) {
    p[i] = (char)('0' + v % 10);
    v /= 10;
  }
  return p + width;
}

/* Formatting by hand: a trigger's identity formats its date on every
 * job saved, and snprintf costs more than the rest of a run. */
char *mb_time_format(mb_time t, const mb_tz *tz, char *buf, size_t n) {
  mb_civil c;
  mb_tz_to_civil(tz, t, &c);
  int a = c.utcoff < 0 ? -c.utcoff : c.utcoff;
  char tmp[48];
  if (c.year < 0 || c.year > 9999 || a / 3600 > 99) {
    snprintf(tmp, sizeof tmp, "%04d-%02d-%02dT%02d:%02d:%02d", c.year,
             c.month, c.day, c.hour, c.min, c.sec);
  } else {
    char *p = put_digits(tmp, c.year, 4);
    *p++ = '-';
    p = put_digits(p, c.month, 2);
    *p++ = '-';
    p = put_digits(p, c.day, 2);
    *p++ = 'T';
    p = put_digits(p, c.hour, 2);
    *p++ = ':';
    p = put_digits(p, c.min, 2);
    *p++ = ':';
    p = put_digits(p, c.sec, 2);
    if (c.usec) {
      *p++ = '.';
      p = put_digits(p, c.usec, 6);
    }
    *p++ = c.utcoff < 0 ? '-' : '+';
    p = put_digits(p, a / 3600, 2);
    *p++ = ':';
    p = put_digits(p, a / 60 % 60, 2);
    if (a % 60) {
      *p++ = ':';
      p = put_digits(p, a % 60, 2);
    }
    size_t len = (size_t)(p - tmp);
    if (n == 0) return buf;
    if (len >= n) len = n - 1;
    memcpy(buf, tmp, len);
    buf[len] = '\0';
    return buf;
  }
  /* Years outside 0..9999 (never from a trigger, but a time can be). */
  char frac[16] = "";
  if (c.usec) snprintf(frac, sizeof frac, ".%06d", c.usec);
  char secs[8] = "";
  if (a % 60) snprintf(secs, sizeof secs, ":%02d", a % 60);
  snprintf(buf, n, "%s%s%c%02d:%02d%s", tmp, frac, c.utcoff < 0 ? '-' : '+',
           a / 3600, a / 60 % 60, secs);
  return buf;
}
