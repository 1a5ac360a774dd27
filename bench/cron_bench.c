/* cron_bench.c: how many next-fire evaluations (mb_cron_next calls) one
 * core does per second, for 5-field crontab expressions in UTC and in
 * two DST zones, asked the way the scheduler asks (from the previous
 * fire) and from scattered instants (a restart, a reload, a query).
 *
 * Each workload runs for a fixed time per round; rounds interleave the
 * workloads so that a slow patch of the machine spreads over all of
 * them, and the median of the rounds is the figure, with min and max
 * beside it. The output is Markdown, which bench/write_benchmarks.sh
 * places in BENCHMARKS.md. */
#include "cron.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct expr_case {
  const char *expr;
  const char *what;
} expr_case;

static const expr_case exprs[] = {
    {"*/5 * * * *", "every five minutes"},
    {"0 2 * * mon-fri",
     "02:00 on weekdays; a fixed hour, so it meets DST gaps and repeats"},
    {"30 6 1 * *", "06:30 on the 1st of the month"},
    {"0 */4 * * *", "every four hours; a stepped hour follows real time"},
    {"15 14 1 * *", "14:15 on the 1st of the month"},
    {"0 0 13 * fri",
     "midnight on the 13th or on a Friday (crontab reads both as either)"},
};
#define NEXPRS (int)(sizeof exprs / sizeof exprs[0])
/* The mixed workload takes the expressions in turn. */
#define MIXED NEXPRS

/* The targets, evaluations per second on one core. */
typedef struct zone_case {
  const char *name;
  double target;
} zone_case;

static const zone_case zone_cases[] = {
    {"UTC", 2e6},
    {"Europe/Berlin", 5e5},
    {"America/New_York", 5e5},
};
#define NZONES (int)(sizeof zone_cases / sizeof zone_cases[0])

enum { CHAINED, SCATTERED, NMODES };

/* Scattered starts: fixed pseudo-random instants (not whole seconds)
 * in 2020-2034, so every run asks the same questions. */
#define NSTARTS 4096
/* Chains run 2025-2034, the years the scattered starts cover, and
 * start again at the end: a chain left alone would spend most of its
 * evaluations in the late 2100s, past the zone file's table of
 * transitions (Debian's end in 2037), where every offset lookup works
 * out the POSIX rule instead: not what a scheduler does today. */
#define CHAIN_START (INT64_C(1735689600) * MB_SEC) /* 2025-01-01Z */
#define CHAIN_END (INT64_C(2051222400) * MB_SEC)   /* 2035-01-01Z */
static mb_time starts[NSTARTS];

static mb_cron *crons[NEXPRS];
static const mb_tz *zones[NZONES];

/* Results go here so the compiler cannot drop the calls. */
static volatile mb_time sink;

/* The thread's CPU time: on a shared machine, time spent waiting for a
 * core would otherwise count against the code. */
static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_state = UINT64_C(0x6d6f6f6e62656174);

/* splitmix64: reproducible and good enough to scatter instants. */
static uint64_t rng(void) {
  uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ z >> 30) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ z >> 27) * UINT64_C(0x94d049bb133111eb);
  return z ^ z >> 31;
}

/* Evaluations per second of one workload over `secs` of CPU time. The
 * clock is read once per batch, which costs well under 1% here. */
static double measure(int e, const mb_tz *tz, int mode, double secs) {
  mb_time prev[NEXPRS];
  for (int i = 0; i < NEXPRS; i++) prev[i] = CHAIN_START;
  uint64_t n = 0;
  unsigned si = 0;
  mb_time acc = 0;
  double t0 = now(), t;
  do {
    for (int k = 0; k < 256; k++) {
      int i = e == MIXED ? (int)((n + (uint64_t)k) % NEXPRS) : e;
      mb_time r;
      if (mode == CHAINED) {
        r = mb_cron_next(crons[i], prev[i], tz);
        prev[i] = r == MB_TIME_NONE || r >= CHAIN_END ? CHAIN_START : r;
      } else {
        r = mb_cron_next(crons[i], starts[si++ % NSTARTS], tz);
      }
      acc ^= r;
    }
    n += 256;
    t = now();
  } while (t - t0 < secs);
  sink = acc;
  return (double)n / (t - t0);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Of sorted rates. */
static double median(const double *r, int rounds) {
  int h = rounds / 2;
  return rounds % 2 ? r[h] : (r[h - 1] + r[h]) / 2;
}

/* Millions with two decimals: the figures span 0.5 to 10 M. */
static void put_rate(const double *r, int rounds) {
  printf(" %.2f M (%.2f-%.2f) |", median(r, rounds) / 1e6, r[0] / 1e6,
         r[rounds - 1] / 1e6);
}

/* Before timing anything: every answer lies after its question, so the
 * figures are for a search that works. */
static void sanity(void) {
  for (int z = 0; z < NZONES; z++)
    for (int e = 0; e < NEXPRS; e++) {
      mb_time prev = CHAIN_START;
      for (int k = 0; k < 2000; k++) {
        mb_time r = mb_cron_next(crons[e], prev, zones[z]);
        if (r == MB_TIME_NONE || r <= prev) {
          fprintf(stderr, "cron_bench: '%s' in %s: no answer after %lld\n",
                  exprs[e].expr, zone_cases[z].name, (long long)prev);
          exit(1);
        }
        prev = r;
      }
    }
}

static void usage(void) {
  fprintf(stderr,
          "usage: cron_bench [-r ROUNDS] [-t MS_PER_ROUND] [-j JSON_FILE]\n");
  exit(2);
}

/* The "all six" figures as one JSON object for bench/bench.lua's table:
 * {"UTC": {"chained": {"median": .., "min": .., "max": ..}, ...}, ...}. */
static void write_json(const char *path,
                       double (*rate)[NEXPRS + 1][NMODES][99], int rounds) {
  FILE *f = fopen(path, "w");
  if (!f) {
    perror(path);
    exit(1);
  }
  static const char *const mode_names[NMODES] = {"chained", "scattered"};
  fputc('{', f);
  for (int z = 0; z < NZONES; z++) {
    fprintf(f, "%s\"%s\": {", z ? ", " : "", zone_cases[z].name);
    for (int m = 0; m < NMODES; m++) {
      const double *r = rate[z][MIXED][m];
      fprintf(f, "%s\"%s\": {\"median\": %.0f, \"min\": %.0f, "
              "\"max\": %.0f, \"rounds\": %d}", m ? ", " : "",
              mode_names[m], median(r, rounds), r[0], r[rounds - 1], rounds);
    }
    fputc('}', f);
  }
  fputs("}\n", f);
  if (fclose(f) != 0) {
    perror(path);
    exit(1);
  }
}

int main(int argc, char **argv) {
  int rounds = 7, ms = 150, opt;
  const char *json_path = NULL;
  while ((opt = getopt(argc, argv, "r:t:j:")) != -1) {
    if (opt == 'r') rounds = atoi(optarg);
    else if (opt == 't') ms = atoi(optarg);
    else if (opt == 'j') json_path = optarg;
    else usage();
  }
  if (rounds < 1 || rounds > 99 || ms < 1 || optind != argc) usage();

  for (int z = 0; z < NZONES; z++) {
    mb_err err;
    if (mb_tz_get(zone_cases[z].name, &zones[z], &err) < 0) {
      fprintf(stderr, "cron_bench: %s\n", err.msg);
      return 1;
    }
  }
  for (int e = 0; e < NEXPRS; e++) {
    mb_err err;
    if (!(crons[e] = mb_cron_from_crontab(exprs[e].expr, &err))) {
      fprintf(stderr, "cron_bench: '%s': %s\n", exprs[e].expr, err.msg);
      return 1;
    }
  }
  const int64_t from = INT64_C(1577836800), span = INT64_C(473385600);
  for (int i = 0; i < NSTARTS; i++)
    starts[i] = (from + (int64_t)(rng() % (uint64_t)span)) * MB_SEC +
                (int64_t)(rng() % 1000000);
  sanity();

  /* rate[zone][workload][mode][round] */
  static double rate[NZONES][NEXPRS + 1][NMODES][99];
  double secs = ms / 1000.0;
  for (int z = 0; z < NZONES; z++)
    for (int e = 0; e <= NEXPRS; e++)
      for (int m = 0; m < NMODES; m++) measure(e, zones[z], m, secs / 5);
  for (int r = 0; r < rounds; r++)
    for (int z = 0; z < NZONES; z++)
      for (int e = 0; e <= NEXPRS; e++)
        for (int m = 0; m < NMODES; m++)
          rate[z][e][m][r] = measure(e, zones[z], m, secs);
  for (int z = 0; z < NZONES; z++)
    for (int e = 0; e <= NEXPRS; e++)
      for (int m = 0; m < NMODES; m++)
        qsort(rate[z][e][m], (size_t)rounds, sizeof(double), cmp_double);
  if (json_path) write_json(json_path, rate, rounds);

  printf("Evaluations of `mb_cron_next` per second of CPU time on one core "
         "(one thread, timed by its own CPU clock): the median of %d rounds "
         "of %d ms, min-max in brackets (M = million).\n\n",
         rounds, ms);
  printf("| Zone | Target | All six, chained | All six, scattered "
         "| Target met |\n|---|---:|---:|---:|---|\n");
  for (int z = 0; z < NZONES; z++) {
    double (*r)[99] = rate[z][MIXED];
    int met = median(r[CHAINED], rounds) >= zone_cases[z].target &&
              median(r[SCATTERED], rounds) >= zone_cases[z].target;
    printf("| %s | %.2f M |", zone_cases[z].name, zone_cases[z].target / 1e6);
    put_rate(r[CHAINED], rounds);
    put_rate(r[SCATTERED], rounds);
    printf(" %s |\n", met ? "yes" : "no");
  }
  printf("\n| Expression | Zone | Chained | Scattered |\n"
         "|---|---|---:|---:|\n");
  for (int e = 0; e < NEXPRS; e++)
    for (int z = 0; z < NZONES; z++) {
      printf("| `%s` | %s |", exprs[e].expr, zone_cases[z].name);
      put_rate(rate[z][e][CHAINED], rounds);
      put_rate(rate[z][e][SCATTERED], rounds);
      printf("\n");
    }
  printf("\nWorkloads:\n\n");
  for (int e = 0; e < NEXPRS; e++)
    printf("- `%s`: %s.\n", exprs[e].expr, exprs[e].what);
  printf("- All six: the six expressions above in turn.\n"
         "- Chained: each evaluation starts from the previous answer, as "
         "the scheduler does between fires; chains run from 2025-01-01 and "
         "start again on reaching 2035.\n"
         "- Scattered: each evaluation starts from the next of %d fixed "
         "pseudo-random instants in 2020-2034, not whole seconds, as after "
         "a restart, a reload or a query.\n"
         "- UTC never changes offset; Europe/Berlin and America/New_York "
         "change twice a year, so the search walks stretches of constant "
         "offset and fixed-hour expressions meet DST gaps and repeats.\n",
         NSTARTS);
  return 0;
}
