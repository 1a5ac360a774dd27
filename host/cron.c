/* cron.c: cron expressions as bitmasks, and the search for the next
 * matching second.
 *
 * Both spellings compile to one mb_cron: a bitmask per time field, and
 * two day sets (day of month, day of week) that are combined per month
 * into a 31-bit mask of matching days. The search runs in wall-clock
 * seconds ("local seconds": the local date and time counted as if it
 * were UTC); mb_cron_next maps wall time to instants one stretch of
 * constant UTC offset at a time, which is where DST is handled. */
#include "cron.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "share.h"

#define MIN_YEAR 1970
#define MAX_YEAR 2199
#define DAY INT64_C(86400)
#define NOT_FOUND INT64_MAX

/* Days of a month that match one side of the day rule. Positions in
 * wpat count from the weekday of the 1st, so one shift lines it up with
 * any month. Weekdays here are 0 = Sunday, as in mb_civil. */
typedef struct dayset {
  uint32_t days;      /* bit d: day d */
  uint32_t from_last; /* bit k: k days before the last day (L, L-k) */
  uint32_t near;      /* bit d: the weekday nearest day d (dW) */
  bool last_wd;       /* LW: the last weekday of the month */
  bool special;       /* any of the above, or nth */
  uint64_t wpat;      /* bit p: weekday p % 7 */
  uint8_t nth[7];     /* per weekday: bit n-1 the nth, bit 5 the last */
} dayset;

struct mb_cron {
  mb_share_node share; /* first: the shared table's node (see below) */
  uint64_t years[4]; /* bit y - MIN_YEAR */
  bool any_year;     /* also matches years outside 1970-2199 */
  uint32_t months;   /* bit m, 1-12 */
  uint64_t weeks;    /* bit w, ISO week 1-53 */
  bool any_week;
  dayset dom, dow;
  bool either;       /* crontab: a day matches if dom OR dow matches */
  bool real_time;    /* hour is '*' or a step: DST is read as real time */
  int dst_gap;       /* MB_DST_GAP_*: fixed-hour fires in a gap */
  int dst_repeat;    /* MB_DST_REPEAT_*: fixed-hour fires in an overlap */
  uint64_t hours, minutes, seconds;
  /* Sharing: holders of this copy, and its key in the shared table
   * (NULL: a private copy). */
  unsigned refs;
  char *key;
  char text[];       /* the description */
};

/* How a field's text is read. */
enum kind {
  K_NUM,      /* numbers only */
  K_YEAR,
  K_MONTH,    /* numbers or jan-dec */
  K_DAY_APS,  /* also last, "3rd fri", "last fri" */
  K_DAY_CRON, /* also L, L-n, nW, LW, ? */
  K_DOW_APS,  /* 0-6 = mon-sun */
  K_DOW_CRON  /* 0-7 = sun-sun, also 5L, fri#3, ? */
};

typedef struct fdesc {
  int field;
  int lo, hi;
  enum kind kind;
} fdesc;

/* A parsed field before it is placed in the mb_cron. Values are bits
 * (year: value - MIN_YEAR; weekdays: 0 = Sunday). */
typedef struct fset {
  uint64_t bits[4];
  dayset ds;
} fset;

static const char *const field_names[MB_CRON_NFIELDS] = {
    "year", "month", "day", "week", "day_of_week", "hour", "minute", "second"};

static const fdesc aps_fields[MB_CRON_NFIELDS] = {
    {MB_CRON_YEAR, MIN_YEAR, MAX_YEAR, K_YEAR},
    {MB_CRON_MONTH, 1, 12, K_MONTH},
    {MB_CRON_DAY, 1, 31, K_DAY_APS},
    {MB_CRON_WEEK, 1, 53, K_NUM},
    {MB_CRON_DOW, 0, 6, K_DOW_APS},
    {MB_CRON_HOUR, 0, 23, K_NUM},
    {MB_CRON_MINUTE, 0, 59, K_NUM},
    {MB_CRON_SECOND, 0, 59, K_NUM}};

static const char *const month_names[] = {"jan", "feb", "mar", "apr",
                                          "may", "jun", "jul", "aug",
                                          "sep", "oct", "nov", "dec"};
static const char *const aps_day_names[] = {"mon", "tue", "wed", "thu",
                                            "fri", "sat", "sun"};
static const char *const cron_day_names[] = {"sun", "mon", "tue", "wed",
                                             "thu", "fri", "sat"};

const char *mb_cron_field_name(int field) {
  return field >= 0 && field < MB_CRON_NFIELDS ? field_names[field] : "?";
}

/* ---- calendar helpers -------------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

static int month_days(int y, int m) {
  static const int n[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  return m == 2 && leap ? 29 : n[m - 1];
}

/* 0 = Sunday; 1970-01-01 was a Thursday. */
static int weekday(int64_t days) {
  return (int)(days - floor_div(days + 4, 7) * 7 + 4);
}

static int ctz64(uint64_t x) {
  return __builtin_ctzll(x);
}

/* ---- parsing ----------------------------------------------------------- */

static int name_index(const char *const *names, int n, const char *s,
                      size_t len) {
  for (int i = 0; i < n; i++)
    if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0) return i;
  return -1;
}

static void set_value(const fdesc *f, fset *out, int v) {
  int bit = v;
  if (f->kind == K_YEAR) bit = v - MIN_YEAR;
  else if (f->kind == K_DOW_APS) bit = (v + 1) % 7;
  else if (f->kind == K_DOW_CRON) bit = v % 7;
  out->bits[bit / 64] |= UINT64_C(1) << (bit % 64);
}

/* Digits only; -1 otherwise. Huge values saturate so that they still
 * read as out of range. */
static int number(const char *s, size_t len) {
  if (len == 0) return -1;
  int v = 0;
  for (size_t i = 0; i < len; i++) {
    if (!isdigit((unsigned char)s[i])) return -1;
    if (v < 100000000) v = v * 10 + (s[i] - '0');
  }
  return v;
}

/* One value of a field: a number in range or a name. lo is the item
 * lowercased, orig as written (same offsets), for messages. */
static int parse_value(const fdesc *f, const char *lo, const char *orig,
                       size_t len, const char *item, int *out, mb_err *err) {
  const char *fn = field_names[f->field];
  if (len == 0)
    return mb_err_set(err, MB_EINVAL, "%s: '%s' is not valid", fn, item);
  int v = -1;
  bool digit = isdigit((unsigned char)lo[0]);
  if (digit) {
    v = number(lo, len);
    if (v < 0)
      return mb_err_set(err, MB_EINVAL, "%s: '%.*s' is not a number", fn,
                        (int)len, orig);
    if (v < f->lo || v > f->hi)
      return mb_err_set(err, MB_EINVAL, "%s: %.*s is out of range %d-%d", fn,
                        (int)len, orig, f->lo, f->hi);
    *out = v;
    return 0;
  }
  if (f->kind == K_MONTH) {
    v = name_index(month_names, 12, lo, len);
    if (v < 0)
      return mb_err_set(err, MB_EINVAL, "%s: '%.*s' is not a month name", fn,
                        (int)len, orig);
    *out = v + 1;
    return 0;
  }
  if (f->kind == K_DOW_APS || f->kind == K_DOW_CRON) {
    v = name_index(f->kind == K_DOW_APS ? aps_day_names : cron_day_names, 7,
                   lo, len);
    if (v < 0)
      return mb_err_set(err, MB_EINVAL, "%s: '%.*s' is not a day name", fn,
                        (int)len, orig);
    *out = v;
    return 0;
  }
  return mb_err_set(err, MB_EINVAL, "%s: '%.*s' is not a number", fn,
                    (int)len, orig);
}

/* "3rd fri", "last sun": the nth weekday of the month (APScheduler). */
static int parse_nth(const fdesc *f, const char *lo, const char *orig,
                     fset *out, mb_err *err) {
  static const char *const ords[] = {"1st", "2nd", "3rd",
                                     "4th", "5th", "last"};
  const char *fn = field_names[f->field];
  size_t olen = strcspn(lo, " ");
  const char *nm = lo + olen;
  while (*nm == ' ') nm++;
  int ord = name_index(ords, 6, lo, olen);
  if (ord < 0)
    return mb_err_set(err, MB_EINVAL,
                      "%s: '%.*s' is not 1st, 2nd, 3rd, 4th, 5th or last", fn,
                      (int)olen, orig);
  int w = name_index(aps_day_names, 7, nm, strlen(nm));
  if (w < 0)
    return mb_err_set(err, MB_EINVAL, "%s: '%s' is not a day name", fn,
                      orig + (nm - lo));
  out->ds.nth[(w + 1) % 7] |= (uint8_t)(1u << ord);
  out->ds.special = true;
  return 0;
}

/* Quartz-style day-of-month items: L, L-n, LW, nW. Returns 1 when the
 * item is not one of them. */
static int parse_dom_special(const fdesc *f, const char *lo, const char *orig,
                             size_t n, fset *out, mb_err *err) {
  const char *fn = field_names[f->field];
  dayset *ds = &out->ds;
  if (strcmp(lo, "l") == 0) {
    ds->from_last |= 1;
  } else if (strcmp(lo, "lw") == 0) {
    ds->last_wd = true;
  } else if (lo[0] == 'l' && lo[1] == '-') {
    int k = number(lo + 2, n - 2);
    if (k < 0)
      return mb_err_set(err, MB_EINVAL, "%s: '%s' is not valid", fn, orig);
    if (k > 30)
      return mb_err_set(err, MB_EINVAL,
                        "%s: offset %s in '%s' is out of range 0-30", fn,
                        orig + 2, orig);
    ds->from_last |= 1u << k;
  } else if (n > 1 && lo[n - 1] == 'w' && isdigit((unsigned char)lo[0])) {
    int d;
    int rc = parse_value(f, lo, orig, n - 1, orig, &d, err);
    if (rc < 0) return rc;
    ds->near |= 1u << d;
  } else {
    return 1;
  }
  ds->special = true;
  return 0;
}

/* Quartz-style day-of-week items: 5L or friL (last Friday), fri#3 or
 * 5#3 (third Friday). Returns 1 when the item is not one of them. */
static int parse_dow_special(const fdesc *f, const char *lo, const char *orig,
                             size_t n, fset *out, mb_err *err) {
  const char *fn = field_names[f->field];
  const char *hash = strchr(lo, '#');
  int w, rc;
  if (hash) {
    size_t wl = (size_t)(hash - lo);
    if ((rc = parse_value(f, lo, orig, wl, orig, &w, err)) < 0) return rc;
    int k = number(hash + 1, n - wl - 1);
    if (k < 0)
      return mb_err_set(err, MB_EINVAL, "%s: '%s' is not valid", fn, orig);
    if (k < 1 || k > 5)
      return mb_err_set(err, MB_EINVAL,
                        "%s: %s in '%s' is out of range 1-5", fn,
                        orig + wl + 1, orig);
    out->ds.nth[w % 7] |= (uint8_t)(1u << (k - 1));
  } else if (n > 1 && lo[n - 1] == 'l') {
    if ((rc = parse_value(f, lo, orig, n - 1, orig, &w, err)) < 0) return rc;
    out->ds.nth[w % 7] |= 1u << 5;
  } else {
    return 1;
  }
  out->ds.special = true;
  return 0;
}

/* One comma-separated item: *, ?, n, a-b, with an optional /step, or a
 * special day form. */
static int parse_item(const fdesc *f, const char *lo, const char *orig,
                      fset *out, mb_err *err) {
  const char *fn = field_names[f->field];
  size_t n = strlen(lo);
  int rc;
  if (f->kind == K_DAY_APS) {
    if (strcmp(lo, "last") == 0) {
      out->ds.from_last |= 1;
      out->ds.special = true;
      return 0;
    }
    if (strchr(lo, ' ')) return parse_nth(f, lo, orig, out, err);
  }
  if (f->kind == K_DAY_CRON &&
      (rc = parse_dom_special(f, lo, orig, n, out, err)) <= 0)
    return rc;
  if (f->kind == K_DOW_CRON &&
      (rc = parse_dow_special(f, lo, orig, n, out, err)) <= 0)
    return rc;

  /* Crontab's 7 is a second Sunday; '*' stops at 6. */
  int hi = f->kind == K_DOW_CRON ? 6 : f->hi;
  const char *slash = strchr(lo, '/');
  size_t blen = slash ? (size_t)(slash - lo) : n;
  int step = 1;
  if (slash) {
    step = number(slash + 1, n - blen - 1);
    if (step < 0)
      return mb_err_set(err, MB_EINVAL, "%s: step '%s' is not a number in '%s'",
                        fn, orig + blen + 1, orig);
    if (step == 0)
      return mb_err_set(err, MB_EINVAL, "%s: step must be at least 1 in '%s'",
                        fn, orig);
  }
  int a, b;
  bool any = blen == 1 && (lo[0] == '*' ||
                           (lo[0] == '?' && (f->kind == K_DAY_CRON ||
                                             f->kind == K_DOW_CRON)));
  if (any) {
    a = f->lo;
    b = hi;
  } else {
    const char *dash = memchr(lo, '-', blen);
    size_t alen = dash ? (size_t)(dash - lo) : blen;
    if ((rc = parse_value(f, lo, orig, alen, orig, &a, err)) < 0) return rc;
    if (dash) {
      size_t blen2 = blen - alen - 1;
      if ((rc = parse_value(f, dash + 1, orig + alen + 1, blen2, orig, &b,
                            err)) < 0)
        return rc;
      /* "fri-sun" reads naturally; sun as 7 keeps it in order. */
      if (f->kind == K_DOW_CRON && b == 0 && a > 0 &&
          !isdigit((unsigned char)dash[1]))
        b = 7;
      /* Ranges do not wrap (APScheduler refuses them too): "fri-mon"
       * must be written "fri-sun,mon" or "mon,fri-sun". */
      if (a > b)
        return mb_err_set(err, MB_EINVAL, "%s: range '%.*s' is reversed", fn,
                          (int)blen, orig);
    } else {
      b = slash ? hi : a;
    }
  }
  for (int v = a; v <= b; v += step) set_value(f, out, v);
  return 0;
}

/* A whole field: a comma-separated list. */
static int parse_field(const fdesc *f, const char *s, size_t len, fset *out,
                       mb_err *err) {
  const char *fn = field_names[f->field];
  memset(out, 0, sizeof *out);
  while (len > 0 && isspace((unsigned char)*s)) s++, len--;
  while (len > 0 && isspace((unsigned char)s[len - 1])) len--;
  if (len == 0) return mb_err_set(err, MB_EINVAL, "%s: '' is empty", fn);
  const char *end = s + len;
  for (const char *p = s; p <= end;) {
    const char *q = memchr(p, ',', (size_t)(end - p));
    if (!q) q = end;
    const char *b = p, *e = q;
    while (b < e && isspace((unsigned char)*b)) b++;
    while (e > b && isspace((unsigned char)e[-1])) e--;
    if (b == e)
      return mb_err_set(err, MB_EINVAL, "%s: empty item in '%.*s'", fn,
                        (int)(len > 80 ? 80 : len), s);
    char lo[64], orig[64];
    size_t n = (size_t)(e - b);
    if (n >= sizeof lo)
      return mb_err_set(err, MB_EINVAL, "%s: '%.40s...' is too long", fn, b);
    for (size_t i = 0; i < n; i++)
      lo[i] = (char)tolower((unsigned char)b[i]);
    memcpy(orig, b, n);
    lo[n] = orig[n] = '\0';
    int rc = parse_item(f, lo, orig, out, err);
    if (rc < 0) return rc;
    p = q + 1;
  }
  return 0;
}

/* ---- building ---------------------------------------------------------- */

static void day_side(const fset *fs, bool weekdays, dayset *ds) {
  *ds = fs->ds;
  if (weekdays) {
    for (int p = 0; p < 64; p++)
      if (fs->bits[0] >> (p % 7) & 1) ds->wpat |= UINT64_C(1) << p;
  } else {
    ds->days = (uint32_t)fs->bits[0];
  }
}

/* Place parsed fields (indexed by MB_CRON_*) in a new mb_cron. */
static mb_cron *build(const fset fs[MB_CRON_NFIELDS], const char *text) {
  size_t tl = strlen(text);
  mb_cron *c = mb_xcalloc(1, sizeof *c + tl + 1);
  c->refs = 1;
  memcpy(c->text, text, tl + 1);
  memcpy(c->years, fs[MB_CRON_YEAR].bits, sizeof c->years);
  c->any_year = true;
  for (int y = MIN_YEAR; y <= MAX_YEAR; y++)
    if (!(c->years[(y - MIN_YEAR) / 64] >> ((y - MIN_YEAR) % 64) & 1))
      c->any_year = false;
  c->months = (uint32_t)fs[MB_CRON_MONTH].bits[0];
  c->weeks = fs[MB_CRON_WEEK].bits[0];
  c->any_week = c->weeks == ((UINT64_C(1) << 54) - 2);
  day_side(&fs[MB_CRON_DAY], false, &c->dom);
  day_side(&fs[MB_CRON_DOW], true, &c->dow);
  c->hours = fs[MB_CRON_HOUR].bits[0];
  c->minutes = fs[MB_CRON_MINUTE].bits[0];
  c->seconds = fs[MB_CRON_SECOND].bits[0];
  return c;
}

static bool is_wild(const char *s) {
  return strchr(s, '*') || strchr(s, '/');
}

mb_cron *mb_cron_from_fields(const char *const fields[MB_CRON_NFIELDS],
                             mb_err *err) {
  /* APScheduler: fields coarser than the finest given default to '*',
   * finer ones to their minimum; week and day_of_week to '*'. With no
   * field at all we fire every minute at second 0, not every second. */
  static const char *const defaults[MB_CRON_NFIELDS] = {
      "*", "1", "1", "*", "*", "0", "0", "0"};
  int finest = -1;
  for (int i = 0; i < MB_CRON_NFIELDS; i++)
    if (fields[i]) finest = i;
  fset fs[MB_CRON_NFIELDS];
  char text[1024];
  size_t tl = 0;
  text[0] = '\0';
  const char *hour = NULL;
  for (int i = 0; i < MB_CRON_NFIELDS; i++) {
    const char *e = fields[i];
    if (!e) {
      if (finest < 0) e = i == MB_CRON_SECOND ? "0" : "*";
      else e = i < finest ? "*" : defaults[i];
    } else {
      size_t len = strlen(e), b = 0;
      while (b < len && isspace((unsigned char)e[b])) b++;
      while (len > b && isspace((unsigned char)e[len - 1])) len--;
      if (tl < sizeof text) {
        int w = snprintf(text + tl, sizeof text - tl, "%s%s='%.*s'",
                         tl ? ", " : "", field_names[i], (int)(len - b),
                         e + b);
        tl += w > 0 ? (size_t)w : 0;
      }
    }
    if (i == MB_CRON_HOUR) hour = e;
    if (parse_field(&aps_fields[i], e, strlen(e), &fs[i], err) < 0)
      return NULL;
  }
  mb_cron *c = build(fs, text);
  c->real_time = is_wild(hour);
  return c;
}

/* Crontab macros, as in Vixie cron; @reboot has no time to compute. */
static const char *macro(const char *s, size_t len) {
  static const char *const m[][2] = {
      {"@yearly", "0 0 1 1 *"}, {"@annually", "0 0 1 1 *"},
      {"@monthly", "0 0 1 * *"}, {"@weekly", "0 0 * * 0"},
      {"@daily", "0 0 * * *"},   {"@midnight", "0 0 * * *"},
      {"@hourly", "0 * * * *"}};
  for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
    if (strlen(m[i][0]) == len && strncasecmp(m[i][0], s, len) == 0)
      return m[i][1];
  return NULL;
}

mb_cron *mb_cron_from_crontab(const char *expr, mb_err *err) {
  const char *s = expr, *end = expr + strlen(expr);
  while (s < end && isspace((unsigned char)*s)) s++;
  while (end > s && isspace((unsigned char)end[-1])) end--;
  size_t len = (size_t)(end - s);
  char text[1024];
  if (len >= sizeof text) {
    mb_err_set(err, MB_EINVAL, "cron expression is too long");
    return NULL;
  }
  memcpy(text, s, len);
  text[len] = '\0';

  const char *body = text;
  if (text[0] == '@') {
    body = macro(text, len);
    if (!body) {
      mb_err_set(err, MB_EINVAL, "unknown macro '%.60s'", text);
      return NULL;
    }
  }
  /* A leading '+' asks for day-of-month AND day-of-week. */
  bool both = false;
  if (body[0] == '+') {
    both = true;
    body++;
  }

  const char *tok[8];
  size_t tlen[8];
  int n = 0;
  for (const char *p = body;;) {
    while (isspace((unsigned char)*p)) p++;
    if (!*p) break;
    const char *q = p;
    while (*q && !isspace((unsigned char)*q)) q++;
    if (n < 8) {
      tok[n] = p;
      tlen[n] = (size_t)(q - p);
    }
    n++;
    p = q;
  }
  if (n < 5 || n > 7) {
    mb_err_set(err, MB_EINVAL, "expected 5, 6 or 7 fields, got %d", n);
    return NULL;
  }

  /* Crontab order: [second] minute hour day month day_of_week [year]. */
  static const fdesc cron_fields[MB_CRON_NFIELDS] = {
      {MB_CRON_YEAR, MIN_YEAR, MAX_YEAR, K_YEAR},
      {MB_CRON_MONTH, 1, 12, K_MONTH},
      {MB_CRON_DAY, 1, 31, K_DAY_CRON},
      {MB_CRON_WEEK, 1, 53, K_NUM},
      {MB_CRON_DOW, 0, 7, K_DOW_CRON},
      {MB_CRON_HOUR, 0, 23, K_NUM},
      {MB_CRON_MINUTE, 0, 59, K_NUM},
      {MB_CRON_SECOND, 0, 59, K_NUM}};
  static const int order[] = {MB_CRON_SECOND, MB_CRON_MINUTE, MB_CRON_HOUR,
                              MB_CRON_DAY,    MB_CRON_MONTH,  MB_CRON_DOW,
                              MB_CRON_YEAR};
  const char *src[MB_CRON_NFIELDS] = {"*", "*", "*", "*", "*", "*", "*", "0"};
  size_t slen[MB_CRON_NFIELDS] = {1, 1, 1, 1, 1, 1, 1, 1};
  for (int i = 0; i < n; i++) {
    int f = order[i + (n == 5)];
    src[f] = tok[i];
    slen[f] = tlen[i];
  }
  fset fs[MB_CRON_NFIELDS];
  for (int f = 0; f < MB_CRON_NFIELDS; f++)
    if (parse_field(&cron_fields[f], src[f], slen[f], &fs[f], err) < 0)
      return NULL;
  mb_cron *c = build(fs, text);
  /* Vixie's rule: a field that starts with '*' (or '?') counts as
   * unrestricted even with a step, so every second day with a Monday
   * restriction means both, not either. */
  bool dom_star = src[MB_CRON_DAY][0] == '*' || src[MB_CRON_DAY][0] == '?';
  bool dow_star = src[MB_CRON_DOW][0] == '*' || src[MB_CRON_DOW][0] == '?';
  c->either = !both && !dom_star && !dow_star;
  char hour[64];
  snprintf(hour, sizeof hour, "%.*s", (int)slen[MB_CRON_HOUR],
           src[MB_CRON_HOUR]);
  c->real_time = is_wild(hour);
  return c;
}

size_t mb_cron_describe(const mb_cron *c, char *buf, size_t n) {
  size_t len = strlen(c->text);
  if (n > 0) {
    size_t k = len < n ? len : n - 1;
    memcpy(buf, c->text, k);
    buf[k] = '\0';
  }
  return len;
}

static void unshare(mb_cron *c);

mb_cron *mb_cron_hold(mb_cron *c) {
  c->refs++;
  return c;
}

void mb_cron_free(mb_cron *c) {
  if (!c || --c->refs > 0) return;
  if (c->key) unshare(c);
  free(c);
}

/* ---- sharing ----------------------------------------------------------- */

/* Expressions compiled from the same input, by that input. Jobs mostly
 * repeat a few schedules; a million jobs on "0 2 * * *" then hold one
 * compiled copy, and adding one costs a lookup instead of a parse. */
static mb_share_table shared;

static bool same_key(const mb_share_node *node, const void *key) {
  return strcmp(((const mb_cron *)node)->key, key) == 0;
}

static void unshare(mb_cron *c) {
  mb_share_remove(&shared, &c->share);
  free(c->key);
}

/* A sharing key: its pieces copied in, then hashed. */
enum { KEY_MAX = 1100 };

typedef struct cron_key {
  char text[KEY_MAX];
  size_t n;
  bool fits;
} cron_key;

static void key_put(cron_key *k, const char *piece) {
  size_t len = strlen(piece);
  if (!k->fits || k->n + len >= KEY_MAX) {
    k->fits = false;
    return;
  }
  memcpy(k->text + k->n, piece, len);
  k->n += len;
}

/* One byte (k->n < KEY_MAX - 1 known to the caller). */
static void key_byte(cron_key *k, char c) { k->text[k->n++] = c; }

/* The key's kind ('F' fields, 'C' crontab) and the DST choices. */
static void key_start(cron_key *k, char kind, int gap, int repeat) {
  k->text[0] = kind;
  k->text[1] = (char)('0' + gap);
  k->text[2] = (char)('0' + repeat);
  k->n = 3;
  k->fits = true;
}

/* Ends the text and hashes it, its length too. */
static uint64_t key_end(cron_key *k) {
  k->text[k->n] = '\0';
  return mb_share_mix(mb_share_mix_bytes(MB_SHARE_HASH_START, k->text, k->n),
                      k->n);
}

/* The shared copy for key, or a new one from compile (which may fail). */
static mb_cron *share(cron_key *k, int gap, int repeat,
                      mb_cron *(*compile)(const void *input, mb_err *err),
                      const void *input, mb_err *err) {
  uint64_t hash = key_end(k);
  mb_cron *c = (mb_cron *)mb_share_find(&shared, hash, same_key, k->text);
  if (c) {
    c->refs++;
    return c;
  }
  c = compile(input, err);
  if (!c) return NULL;
  mb_cron_set_dst(c, gap, repeat);
  c->key = mb_xstrdup(k->text);
  mb_share_add(&shared, &c->share, hash);
  return c;
}

static mb_cron *compile_fields(const void *input, mb_err *err) {
  return mb_cron_from_fields(input, err);
}

static mb_cron *compile_crontab(const void *input, mb_err *err) {
  return mb_cron_from_crontab(input, err);
}

mb_cron *mb_cron_shared_fields(const char *const fields[MB_CRON_NFIELDS],
                               int gap, int repeat, mb_err *err) {
  /* "F", the DST choices, then each field after \x1f (\x1e: not given). */
  cron_key k;
  key_start(&k, 'F', gap, repeat);
  for (int i = 0; i < MB_CRON_NFIELDS && k.fits; i++) {
    if (k.n + 2 >= KEY_MAX) {
      k.fits = false;
      break;
    }
    key_byte(&k, '\x1f');
    if (fields[i])
      key_put(&k, fields[i]);
    else
      key_byte(&k, '\x1e');
  }
  if (!k.fits) {  /* too long to share: a copy of its own */
    mb_cron *c = mb_cron_from_fields(fields, err);
    if (c) mb_cron_set_dst(c, gap, repeat);
    return c;
  }
  return share(&k, gap, repeat, compile_fields, fields, err);
}

mb_cron *mb_cron_shared_crontab(const char *expr, int gap, int repeat,
                                mb_err *err) {
  cron_key k;
  key_start(&k, 'C', gap, repeat);
  key_put(&k, expr);
  if (!k.fits) {
    mb_cron *c = mb_cron_from_crontab(expr, err);
    if (c) mb_cron_set_dst(c, gap, repeat);
    return c;
  }
  return share(&k, gap, repeat, compile_crontab, expr, err);
}

void mb_cron_set_dst(mb_cron *c, int gap, int repeat) {
  c->dst_gap = gap;
  c->dst_repeat = repeat;
}

/* ---- searching --------------------------------------------------------- */

/* Day d moved to the nearest weekday without leaving the month. */
static int nearest_weekday(int d, int md, int wd1) {
  int wd = (wd1 + d - 1) % 7;
  if (wd == 6) return d > 1 ? d - 1 : d + 2;
  if (wd == 0) return d < md ? d + 1 : d - 2;
  return d;
}

static uint32_t dayset_mask(const dayset *s, int md, int wd1, uint32_t full) {
  uint32_t r = (s->days | (uint32_t)(s->wpat >> wd1 << 1)) & full;
  if (!s->special) return r;
  for (uint32_t b = s->from_last; b; b &= b - 1) {
    int k = ctz64(b);
    if (k < md) r |= 1u << (md - k);
  }
  for (uint32_t b = s->near; b; b &= b - 1) {
    int d = ctz64(b);
    if (d <= md) r |= 1u << nearest_weekday(d, md, wd1);
  }
  if (s->last_wd) r |= 1u << nearest_weekday(md, md, wd1);
  for (int w = 0; w < 7; w++) {
    if (!s->nth[w]) continue;
    int first = 1 + (w - wd1 + 7) % 7;
    for (int k = 0; k < 5; k++) {
      int d = first + 7 * k;
      if (s->nth[w] >> k & 1 && d <= md) r |= 1u << d;
    }
    if (s->nth[w] >> 5 & 1) r |= 1u << (first + (md - first) / 7 * 7);
  }
  return r;
}

/* Days of the month whose ISO week is in c->weeks. The ISO week of a
 * Monday-to-Sunday run is the one of its Thursday's year. */
static uint32_t week_mask(const mb_cron *c, int64_t first, int wd1, int md) {
  uint32_t r = 0;
  for (int d0 = 1 - (wd1 + 6) % 7; d0 <= md; d0 += 7) {
    int64_t thu = first + d0 - 1 + 3;
    int y, m, d;
    mb_civil_from_days(thu, &y, &m, &d);
    int wk = (int)((thu - mb_days_from_civil(y, 1, 1)) / 7) + 1;
    if (!(c->weeks >> wk & 1)) continue;
    int lo = d0 < 1 ? 1 : d0, hi = d0 + 6 > md ? md : d0 + 6;
    uint64_t upto_hi = (UINT64_C(1) << (hi + 1)) - 1;
    r |= (uint32_t)(upto_hi & ~((UINT64_C(1) << lo) - 1));
  }
  return r;
}

static uint32_t day_mask(const mb_cron *c, int y, int m) {
  int md = month_days(y, m);
  int64_t first = mb_days_from_civil(y, m, 1);
  int wd1 = weekday(first);
  uint32_t full = (uint32_t)((UINT64_C(1) << (md + 1)) - 2);
  uint32_t a = dayset_mask(&c->dom, md, wd1, full);
  uint32_t b = dayset_mask(&c->dow, md, wd1, full);
  uint32_t r = c->either ? a | b : a & b;
  if (!c->any_week && r) r &= week_mask(c, first, wd1, md);
  return r;
}

/* Smallest year >= y in the year mask, or MAX_YEAR + 1. */
static int next_year(const mb_cron *c, int y) {
  if (y < MIN_YEAR) y = MIN_YEAR;
  for (int i = y - MIN_YEAR; i <= MAX_YEAR - MIN_YEAR;) {
    uint64_t w = c->years[i / 64] >> (i % 64);
    if (w) return MIN_YEAR + i + ctz64(w);
    i = (i / 64 + 1) * 64;
  }
  return MAX_YEAR + 1;
}

/* First matching time of day at or after h:m:s, in seconds, or -1. */
static int next_tod(const mb_cron *c, int h, int m, int s) {
  for (;;) {
    uint64_t hr = h < 24 ? c->hours & (~UINT64_C(0) << h) : 0;
    if (!hr) return -1;
    if (ctz64(hr) != h) {
      h = ctz64(hr);
      m = s = 0;
    }
    for (;;) {
      uint64_t mr = m < 60 ? c->minutes & (~UINT64_C(0) << m) : 0;
      if (!mr) break;
      if (ctz64(mr) != m) {
        m = ctz64(mr);
        s = 0;
      }
      uint64_t sr = s < 60 ? c->seconds & (~UINT64_C(0) << s) : 0;
      if (sr) return h * 3600 + m * 60 + ctz64(sr);
      m++;
      s = 0;
    }
    h++;
    m = s = 0;
  }
}

/* First matching local second >= ls, or NOT_FOUND past MAX_YEAR. Each
 * step moves the most significant mismatching field and resets the
 * finer ones. */
static int64_t search(const mb_cron *c, int64_t ls) {
  int64_t days = floor_div(ls, DAY);
  int sod = (int)(ls - days * DAY);
  int y, m, d;
  mb_civil_from_days(days, &y, &m, &d);
  int h = sod / 3600, mi = sod / 60 % 60, s = sod % 60;
  for (;;) {
    if (y > MAX_YEAR) return NOT_FOUND;
    if (!c->any_year) {
      int ny = next_year(c, y);
      if (ny > MAX_YEAR) return NOT_FOUND;
      if (ny != y) {
        y = ny;
        m = d = 1;
        h = mi = s = 0;
      }
    }
    uint32_t mr = c->months & (~UINT32_C(0) << m);
    if (!mr) {
      y++;
      m = d = 1;
      h = mi = s = 0;
      continue;
    }
    if (ctz64(mr) != m) {
      m = ctz64(mr);
      d = 1;
      h = mi = s = 0;
    }
    uint32_t dm = day_mask(c, y, m);
    for (;;) {
      uint32_t dr = d < 32 ? dm & (~UINT32_C(0) << d) : 0;
      if (!dr) break;
      if (ctz64(dr) != d) {
        d = ctz64(dr);
        h = mi = s = 0;
      }
      int tod = next_tod(c, h, mi, s);
      if (tod >= 0) return mb_days_from_civil(y, m, d) * DAY + tod;
      d++;
      h = mi = s = 0;
    }
    if (++m > 12) {
      m = 1;
      y++;
    }
    d = 1;
    h = mi = s = 0;
  }
}

/* The UTC offset at second t and the second it next changes. */
static int32_t offset_at(const mb_tz *tz, int64_t t, int64_t *next) {
  mb_time nx;
  int32_t off = mb_tz_offset(tz, t * MB_SEC, &nx);
  *next = nx == MB_TIME_NONE ? NOT_FOUND : nx / MB_SEC;
  return off;
}

/* Walk real time one stretch of constant offset at a time: [from, to)
 * with offset off, entered from offset prev. Within a stretch, a match
 * at local second L is the instant L - off. Where the offset grows, the
 * local times it jumps over never happen: a fixed-hour schedule fires
 * at the change instead (its 02:30 run comes at 03:00) unless told to
 * skip them, and a wildcard-hour one skips them. Where it shrinks, the
 * wall clock repeats: a wildcard-hour schedule follows real time and
 * fires again, a fixed-hour one fires at the first, the second or both
 * occurrences as c->dst_repeat says. */
mb_time mb_cron_next(const mb_cron *c, mb_time after, const mb_tz *tz) {
  int64_t t = floor_div(after, MB_SEC) + 1;
  if (t > (mb_days_from_civil(MAX_YEAR + 1, 1, 1) + 2) * DAY)
    return MB_TIME_NONE;
  /* Room for the look two days back below; nothing cron matches lies
   * that close to the start of time anyway. */
  if (t < INT64_MIN / MB_SEC + 2 * DAY) t = INT64_MIN / MB_SEC + 2 * DAY;
  bool fixed = !c->real_time;
  int repeat = c->dst_repeat, gap = c->dst_gap;

  /* Find the change that began t's stretch, so that a search starting
   * in a repeated hour knows which occurrence it is in. UTC offsets
   * differ by less than two days, so a change further back cannot have
   * repeated any local time after t. */
  int64_t from = t - 2 * DAY, to, nx;
  int32_t off = offset_at(tz, from, &to), prev = off;
  for (int steps = 0; to <= t; steps++) {
    if (steps == 1000) {
      /* Not a real zone; read t's stretch as if nothing preceded it. */
      from = t;
      prev = off = offset_at(tz, t, &to);
      break;
    }
    int32_t off2 = offset_at(tz, to, &nx);
    prev = off;
    off = off2;
    from = to;
    to = nx;
  }
  /* Starting right at a jump: its skipped local times are still due. */
  if (fixed && gap == MB_DST_GAP_RUN && t == from && prev < off &&
      search(c, from + prev) < from + off)
    return from * MB_SEC;

  int64_t memo_from = 0, memo = 0; /* no match in [memo_from, memo) */
  bool have_memo = false;
  for (int guard = 0; guard < 100000; guard++) {
    int32_t off2 = off;
    nx = NOT_FOUND;
    if (to != NOT_FOUND) off2 = offset_at(tz, to, &nx);
    /* The local seconds [lo, hi) that may fire in this stretch. */
    int64_t lo = (t > from ? t : from) + off;
    int64_t hi = to == NOT_FOUND ? NOT_FOUND : to + off;
    if (fixed && prev > off && repeat == MB_DST_REPEAT_FIRST &&
        lo < from + prev)
      lo = from + prev; /* these already happened before the change */
    if (fixed && off2 < off && repeat == MB_DST_REPEAT_LAST)
      hi = to + off2; /* these will happen again after the change */
    int64_t l;
    if (have_memo && memo_from <= lo && lo <= memo) {
      l = memo;
    } else {
      l = search(c, lo);
      memo_from = lo;
      memo = l;
      have_memo = true;
    }
    if (l < hi) return (l - off) * MB_SEC;
    if (to == NOT_FOUND) return MB_TIME_NONE;
    /* No match in [lo, to + off): l is the first one from the jump on. */
    if (fixed && gap == MB_DST_GAP_RUN && off2 > off && l < to + off2)
      return to * MB_SEC;
    /* Nothing matches from memo_from on and the next stretch starts
     * past it: stop rather than walk the zone's changes to MAX_YEAR. */
    if (l == NOT_FOUND && to + off2 >= memo_from) return MB_TIME_NONE;
    prev = off;
    off = off2;
    from = to;
    to = nx;
  }
  return MB_TIME_NONE;
}
