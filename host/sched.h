/* sched.h: the scheduler core. Jobs live in a hash table by id; every
 * scheduled job waits in the bucket of its next fire's instant, a
 * min-heap orders the buckets, and one clock timer is armed for the
 * earliest. The core decides which fires happen
 * (jitter, misfire grace, coalescing, retries as fires of their own) and
 * hands each to the `fire` hook; running it is someone else's job. Plain
 * C: the control socket and tests can drive the same core. */
#ifndef MB_SCHED_H
#define MB_SCHED_H

#include <stdbool.h>

#include "common.h"
#include "event.h"
#include "loop.h"
#include "trigger.h"

typedef struct mb_sched mb_sched;
typedef struct mb_job mb_job;

enum {
  MB_OVERLAP_SKIP,
  MB_OVERLAP_BUFFER_ONE,
  MB_OVERLAP_BUFFER_ALL,
  MB_OVERLAP_CANCEL_OTHER,
  MB_OVERLAP_ALLOW_ALL
};

enum { MB_BACKOFF_FIXED, MB_BACKOFF_LINEAR, MB_BACKOFF_EXPONENTIAL };

/* How a job's fires and runs behave. Durations in microseconds. (Wide
 * fields first, then narrow: every job holds one.) */
typedef struct mb_job_policy {
  mb_time timeout;         /* per attempt; 0: none */
  mb_time misfire_grace;   /* MB_TIME_NONE: a late fire always runs */
  mb_time jitter;          /* random delay in [0, jitter] per fire */
  mb_time retry_delay, retry_max_delay;  /* max 0: no cap */
  double retry_jitter;     /* the delay varies by +- this fraction */
  mb_time keep_for;        /* history kept: age; 0: the scheduler's */
  unsigned max_instances;  /* concurrent runs, >= 1 */
  int overlap;             /* MB_OVERLAP_*: a fire beyond max_instances */
  unsigned max_buffered;   /* buffer_all's bound */
  int retry_attempts;      /* tries in all, the first included; >= 1 */
  int retry_backoff;       /* MB_BACKOFF_* */
  int keep_runs;           /* history kept: runs; 0: the scheduler's */
  bool coalesce;           /* several overdue fires run once */
} mb_job_policy;

/* The defaults: no timeout, one instance, skip, buffer of 100, no grace
 * limit, coalesce, no jitter, one attempt. */
void mb_job_policy_default(mb_job_policy *p);

/* One fire handed to the runner. */
typedef struct mb_fire {
  mb_time scheduled;  /* when it was due; a retry keeps its first fire's */
  int attempt;        /* 1 for a scheduled fire, 2... for retries */
  bool manual;        /* asked for (run_job), not one of the trigger's */
} mb_fire;

/* Read-only outside sched.c, but for the fields marked otherwise. A
 * million jobs may be held at once: fields are ordered so that none
 * pads, and what few jobs use (a retry's timer) is allocated on use. */
struct mb_job {
  char *id;              /* after the job in its slot, when short */
  char *name;            /* may be id itself (the usual case) */
  char *file;            /* declaring file, or NULL */
  mb_trigger *trigger;   /* owned */
  const mb_job_policy *policy;  /* shared with jobs of an equal one */
  mb_time next_fire;     /* with jitter; MB_TIME_NONE: paused or done */
  mb_time next_base;     /* the trigger's time, before jitter */
  mb_time last_fire;     /* scheduled time of the latest fire */
  mb_time retry_due;     /* pending retry, or MB_TIME_NONE */
  mb_fire retry_fire;
  mb_sched *sched;       /* the scheduler it belongs (or belonged) to */
  /* The hooks' handle on the Lua side (see mb_job_lua). */
  struct mb_shared_spec *lua_shared;
  int lua_ref;
  bool lua_lean;
  bool paused;
  bool removed;          /* no longer in the scheduler */
  bool done;             /* removed because its trigger had no fire left */
  /* Kept by the runner. */
  unsigned running;      /* runs in flight */
  unsigned nbuffered, buffer_cap;
  mb_fire *buffer;       /* fires waiting for a free instance */
  /* Kept by the host: what the store keeps besides the schedule. Strings
   * are owned and freed with the job. */
  struct mb_job_record {
    long long ok, failed, timed_out, missed, skipped, cancelled;
    const char *last_status;  /* static (see host_status_static), NULL: none */
    mb_time last_start, last_duration;
    char *last_error;
    char *pause_note;
    char *state;         /* ctx.state, serialised */
    char *spec;          /* added at run time: the definition, serialised */
    /* Or, restored from a spec differing from others only in its id,
     * that text held once for them all (host/spec_text.h). */
    struct mb_spec_shared *spec_shared;
    bool memory_only;    /* added at run time with a function: not kept */
    bool dirty;          /* in the host's list for the next flush */
    bool must_save;      /* changed beyond run outcomes: saved at the flush */
    bool stale;          /* its row lacks run outcomes the history holds */
    bool has_state;      /* its spec may hold a ctx.state table */
    bool has_handle;     /* held for its Lua handles (host/handles.h) */
    unsigned short handle_seen;  /* the handles' sweep that last saw one */
    long long checkpoint;  /* its latest row holds every run up to this id */
    int unpruned;        /* runs recorded since its history was pruned */
    mb_time pruned_at;   /* when it was last pruned */
  } rec;
  /* Private. */
  int refs;
  unsigned pending_fires;
  struct fire_bucket *bucket;  /* its next fire's, or NULL */
  mb_job *qprev, *qnext;       /* in the bucket */
  mb_timer *retry_timer;  /* NULL until a retry is first armed */
};

typedef struct mb_sched_hooks {
  /* Start a run of job for fire. */
  void (*fire)(mb_sched *s, mb_job *job, const mb_fire *fire, void *data);
  /* job left the scheduler (removed, replaced, done, or the scheduler is
   * closing): let go of what it holds outside C. Runs in flight keep
   * their own references. */
  void (*removed)(mb_sched *s, mb_job *job, void *data);
  /* Something happened: log it, tell listeners. */
  void (*event)(mb_sched *s, const mb_event *ev, void *data);
} mb_sched_hooks;

/* Create a scheduler on clock (not owned). hooks is copied. */
mb_sched *mb_sched_new(mb_clock *clock, const mb_sched_hooks *hooks,
                       void *data);
/* Remove every job and free s. NULL is fine. */
void mb_sched_free(mb_sched *s);

mb_clock *mb_sched_clock(const mb_sched *s);
mb_time mb_sched_now(const mb_sched *s);
/* Seed the generator behind jitter (tests make it repeatable). */
void mb_sched_seed(mb_sched *s, uint64_t seed);
/* A uniform random number in [0, 1). */
double mb_sched_random(mb_sched *s);

/* What the hooks hold of a job's Lua side (host/lua_api.c): a registry
 * ref to its spec table. It may be lean, a ref to the run function
 * itself until more is asked for (a table per job held for nothing
 * costs memory and collector time). It may be shared (lua_host.h): the
 * spec of jobs restored from stored specs that differ only in their id,
 * until the job needs a copy of its own; or a lean job's run function,
 * one ref for every job given that function. The scheduler only keeps
 * it. */
typedef struct mb_job_lua {
  int ref;
  bool lean;
  struct mb_shared_spec *shared;
} mb_job_lua;

/* Add a job; the trigger passes to the scheduler on success and is
 * freed on failure. An existing id is MB_EEXIST unless replace, which
 * removes the old job first (its runs in flight finish). lua becomes
 * the job's (the caller's to release on failure), before the added
 * event goes out. On success *out holds
 * a reference for the caller to release (listeners of the added event
 * may already have removed the job). */
int mb_sched_add_job(mb_sched *s, const char *id, const char *name,
                     const char *file, mb_trigger *trigger,
                     const mb_job_policy *policy, bool replace, bool paused,
                     const mb_job_lua *lua, mb_job **out, mb_err *err);
mb_job *mb_sched_get_job(const mb_sched *s, const char *id);
/* About to add or look up id: start bringing its place in the job table
 * into cache, which a table of a million jobs mostly misses. */
void mb_sched_prefetch(const mb_sched *s, const char *id);
/* Jobs alive in the process, of every scheduler and none (held by a
 * reference after their scheduler closed), the pool chunks they take,
 * and the chunks mapped ahead of them (pool.h). */
void mb_sched_job_memory(size_t *live, size_t *chunks, size_t *ahead);
/* Distinct policies the jobs alive in the process hold. */
size_t mb_sched_policies_held(void);
size_t mb_sched_job_count(const mb_sched *s);
/* Bytes its indexes hold: the job table, and the next fires' heap and
 * hash by instant (not the jobs, nor the buckets). */
size_t mb_sched_index_bytes(const mb_sched *s);
/* Every job, by next fire (paused last, then by id). Caller frees the
 * array; the jobs stay the scheduler's. */
mb_job **mb_sched_jobs(const mb_sched *s, size_t *n);

/* Pausing holds a pending retry too; resuming computes the next fire
 * from now (a trigger with no fire left removes the job) and lets a
 * held retry fire. */
int mb_sched_pause_job(mb_sched *s, mb_job *job);
int mb_sched_resume_job(mb_sched *s, mb_job *job);
int mb_sched_remove_job(mb_sched *s, mb_job *job);
void mb_sched_remove_all_jobs(mb_sched *s);
/* Replace the trigger (taken over) and compute the next fire from now. */
int mb_sched_reschedule_job(mb_sched *s, mb_job *job, mb_trigger *trigger);
/* Set the next fire by hand (MB_TIME_NONE pauses the job). */
int mb_sched_set_next_fire(mb_sched *s, mb_job *job, mb_time next);
void mb_sched_set_policy(mb_sched *s, mb_job *job,
                         const mb_job_policy *policy);
void mb_sched_rename_job(mb_job *job, const char *name);
/* The file that declares job (NULL: none), when it moves to another. */
void mb_sched_set_file(mb_job *job, const char *file);

/* Put back a job's schedule as a store kept it: next (MB_TIME_NONE: no
 * fire left) and the scheduled time of its last fire. A job with nothing
 * left goes, as after its last fire. */
void mb_sched_restore_job(mb_sched *s, mb_job *job, mb_time next,
                          mb_time last);

/* Fire job on the next loop turn, outside its schedule (fire NULL: a
 * first attempt due now). */
int mb_sched_fire_soon(mb_sched *s, mb_job *job, const mb_fire *fire);
/* Schedule fire as the job's pending retry at due (replacing one that
 * is pending). Held while the job is paused; dropped when it is
 * removed. */
int mb_sched_retry(mb_sched *s, mb_job *job, mb_time due,
                   const mb_fire *fire);

/* The runner's word that a run of job ended (job->running already
 * lowered): a job whose trigger is done goes when nothing is left. */
void mb_sched_run_ended(mb_sched *s, mb_job *job);

/* Stop firing for good (shutdown): no scheduled fire, retry or
 * fire_soon happens after this. */
void mb_sched_stop(mb_sched *s);
bool mb_sched_stopped(const mb_sched *s);

/* Hand ev to the event hook. */
void mb_sched_emit(mb_sched *s, const mb_event *ev);

/* A job's memory stays valid while someone holds a reference. */
void mb_job_ref(mb_job *job);
void mb_job_unref(mb_job *job);

#endif
