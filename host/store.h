/* store.h: what survives a restart. A store keeps each job's runtime
 * state and the history of every run attempt. A job's row may lag its
 * history (see mb_job_state.checkpoint and mb_store_settle): the host
 * folds the later runs back in when it restores. The interface is a table
 * of operations so that a shared network store can implement it later;
 * store_sqlite.c is the one implementation today.
 *
 * Writes are queued and committed together once per loop turn
 * (mb_store_flush), so a burst of runs costs one transaction, not one
 * per row, committed on a thread of the store's own, so the loop does
 * not wait for sqlite or the disk. Reads (load, query) are synchronous,
 * see every write queued before them, and are meant for start-up, the
 * API and the CLI. Strings passed in are copied; strings handed to
 * callbacks live until the callback returns. */
#ifndef MB_STORE_H
#define MB_STORE_H

#include <stdbool.h>

#include "common.h"

typedef struct mb_store mb_store;

/* A job's runtime state. */
typedef struct mb_job_state {
  const char *job_id;
  const char *trigger;      /* the trigger's identity: a changed trigger
                               means recompute the next fire */
  mb_time next_fire;        /* MB_TIME_NONE: none */
  mb_time last_fire;
  bool paused;
  const char *pause_note;   /* may be NULL */
  mb_time retry_due;        /* MB_TIME_NONE: no pending retry */
  int retry_attempt;
  mb_time retry_scheduled;
  long long ok, failed, timed_out, missed, skipped, cancelled;
  const char *last_status;  /* NULL: never ran */
  mb_time last_start;
  mb_time last_duration;
  const char *last_error;
  const char *state;        /* ctx.state, serialised; NULL: none */
  const char *spec;         /* a job added at run time: its definition,
                               serialised; NULL for jobs files declare */
  long long checkpoint;     /* the row holds the outcome of every run of
                               the job up to this run id; later runs are
                               folded in from history on restore */
} mb_job_state;

/* One run attempt. */
typedef struct mb_run_record {
  long long run_id;
  const char *job_id;
  mb_time scheduled, started, finished;  /* MB_TIME_NONE: not yet / n.a. */
  int attempt;
  const char *status;  /* running success error timeout cancelled
                          interrupted missed skipped */
  const char *error;
  const char *traceback;
  const char *log_tail;  /* the last lines the run logged */
  const char *host;
  long long pid;
} mb_run_record;

typedef struct mb_run_filter {
  const char *job_id;  /* NULL: every job */
  const char *status;  /* NULL: any */
  mb_time since;       /* MB_TIME_NONE: any; else started (or scheduled) >= */
  int limit;           /* newest first; <= 0: 100 */
} mb_run_filter;

typedef struct mb_retention {
  int keep_runs;       /* per job; <= 0: no limit */
  mb_time max_age;     /* <= 0: no limit */
} mb_retention;

/* Open (creating when missing) the store at path; ":memory:" keeps it
 * in memory. Takes an exclusive lock: a second process gets MB_EBUSY
 * with a message naming the process that holds it. Migrates an older
 * schema forward; refuses a newer one. */
int mb_store_open(const char *path, mb_store **out, mb_err *err);
/* Commit what is queued and close. NULL is fine. */
void mb_store_close(mb_store *s);

/* The highest run id ever recorded (new runs count on from it). */
long long mb_store_last_run_id(mb_store *s);
/* The run id up to which every job row holds every run (settle). */
long long mb_store_settled(mb_store *s);
/* The jobs with runs after run id after, each once. */
int mb_store_recent_jobs(mb_store *s, long long after,
                         void (*cb)(const char *job_id, void *data),
                         void *data, mb_err *err);
/* job_id's runs after run id after, oldest first. */
int mb_store_runs_since(mb_store *s, const char *job_id, long long after,
                        void (*cb)(const mb_run_record *run, void *data),
                        void *data, mb_err *err);

/* Call cb for every stored job state. */
int mb_store_load_jobs(mb_store *s,
                       void (*cb)(const mb_job_state *st, void *data),
                       void *data, mb_err *err);
/* Mark runs left "running" by a process that died as "interrupted" and
 * call cb for each (before the mark is written). */
int mb_store_interrupted(mb_store *s,
                         void (*cb)(const mb_run_record *run, void *data),
                         void *data, mb_err *err);

/* Queue writes. */
void mb_store_save_job(mb_store *s, const mb_job_state *st);
/* Every job row now holds every run up to run_id. */
void mb_store_settle(mb_store *s, long long run_id);
void mb_store_delete_job(mb_store *s, const char *job_id);
/* run's strings are copied, but for status and host, which are read
 * until the store is closed: a name that never changes (a literal, the
 * host's name), not copied for each of a burst of runs. */
void mb_store_save_run(mb_store *s, const mb_run_record *run);

/* Commit the queue in one transaction on the writer thread, waiting for
 * it when wait is true.
 * Writes that fail (a full disk) are kept and tried again, in order,
 * with the next flush or a second later. Returns < 0, with err saying
 * why, when the latest commit failed; else >= 0. */
int mb_store_flush(mb_store *s, bool wait, mb_err *err);
bool mb_store_pending(const mb_store *s);

/* Runs matching filter, newest first. */
int mb_store_query_runs(mb_store *s, const mb_run_filter *filter,
                        void (*cb)(const mb_run_record *run, void *data),
                        void *data, mb_err *err);

/* How many writes may wait for the writer thread before a flush waits
 * for it to take them (0: the default, about a million): for testing
 * the bound without a million writes. */
void mb_store_set_lag(mb_store *s, size_t ops);

/* Cap the database at pages pages (0: sqlite's default), as a full disk
 * would: for testing what a failed write does. */
int mb_store_limit_pages(mb_store *s, long long pages, mb_err *err);

/* What the store did since open: a check that writes batch, do not fail
 * and do not pile up. */
typedef struct mb_store_counts {
  long long commits;
  long long rows;      /* rows written */
  long long failures;  /* commits that failed (to be tried again) */
  long long catch_ups; /* flushes that waited for a writer behind by
                        * more than the lag allowed (see flush) */
} mb_store_counts;
void mb_store_get_counts(mb_store *s, mb_store_counts *out);
/* sqlite's integrity check: "ok" or what is wrong. Caller frees. */
char *mb_store_check(mb_store *s);

/* What to prune: runs of job_id (NULL: of every job, by age only)
 * beyond retention. */
typedef struct mb_prune {
  const char *job_id;
  mb_retention retention;
} mb_prune;

/* Queue the deletion of history beyond retention, in small steps
 * (max_rows per item), to be committed with the next flush. */
void mb_store_prune(mb_store *s, const mb_prune *items, size_t n, mb_time now,
                    int max_rows);

#endif
