/* sched.h: the scheduler core. Jobs live in a hash table by id; the
 * next fire of every scheduled job sits in a min-heap, and one clock
 * timer is armed for the earliest. Plain C: starting a run is a hook, so
 * the control socket and tests can drive the same core. */
#ifndef MB_SCHED_H
#define MB_SCHED_H

#include <stdbool.h>

#include "common.h"
#include "loop.h"
#include "trigger.h"

typedef struct mb_sched mb_sched;
typedef struct mb_job mb_job;

/* Read-only outside sched.c, but for `lua_ref`, which belongs to the
 * owner of the hooks. */
struct mb_job {
  char *id;
  char *name;
  char *file;           /* declaring file, or NULL */
  mb_trigger *trigger;  /* owned */
  mb_time next_fire;    /* MB_TIME_NONE: paused or done */
  mb_time last_fire;    /* scheduled time of the latest fire */
  bool paused;
  bool removed;         /* no longer in the scheduler */
  unsigned running;     /* runs in flight; kept by the run module */
  int lua_ref;          /* the hooks' handle on the Lua side */
  /* Private. */
  int refs;
  size_t slot;
  uint64_t seq;
  mb_job *hnext;
  mb_sched *sched;
};

typedef struct mb_sched_hooks {
  /* Start a run of job for the fire scheduled at `scheduled`. */
  void (*fire)(mb_sched *s, mb_job *job, mb_time scheduled, void *data);
  /* job left the scheduler (removed, replaced, done, or the scheduler is
   * closing): let go of what it holds outside C. Runs in flight keep
   * their own references. */
  void (*removed)(mb_sched *s, mb_job *job, void *data);
} mb_sched_hooks;

/* Create a scheduler on clock (not owned). hooks is copied. */
mb_sched *mb_sched_new(mb_clock *clock, const mb_sched_hooks *hooks,
                       void *data);
/* Remove every job and free s. NULL is fine. */
void mb_sched_free(mb_sched *s);

mb_clock *mb_sched_clock(const mb_sched *s);
mb_time mb_sched_now(const mb_sched *s);

/* Add a job; the trigger passes to the scheduler on success and is
 * freed on failure. An existing id is MB_EEXIST unless replace, which
 * removes the old job first (its runs in flight finish). */
int mb_sched_add_job(mb_sched *s, const char *id, const char *name,
                     const char *file, mb_trigger *trigger, bool replace,
                     mb_job **out, mb_err *err);
mb_job *mb_sched_get_job(const mb_sched *s, const char *id);
size_t mb_sched_job_count(const mb_sched *s);
/* Every job, by next fire (paused last, then by id). Caller frees the
 * array; the jobs stay the scheduler's. */
mb_job **mb_sched_jobs(const mb_sched *s, size_t *n);

int mb_sched_pause_job(mb_sched *s, mb_job *job);
/* Resuming computes the next fire from now; a trigger with no fire left
 * removes the job. */
int mb_sched_resume_job(mb_sched *s, mb_job *job);
int mb_sched_remove_job(mb_sched *s, mb_job *job);
void mb_sched_remove_all_jobs(mb_sched *s);
/* Replace the trigger (taken over) and compute the next fire from now. */
int mb_sched_reschedule_job(mb_sched *s, mb_job *job, mb_trigger *trigger);
/* Set the next fire by hand (MB_TIME_NONE pauses the job). */
int mb_sched_set_next_fire(mb_sched *s, mb_job *job, mb_time next);
/* Fire job on the next loop turn, outside its schedule. */
int mb_sched_run_job(mb_sched *s, mb_job *job);
void mb_sched_rename_job(mb_job *job, const char *name);

/* A job's memory stays valid while someone holds a reference. */
void mb_job_ref(mb_job *job);
void mb_job_unref(mb_job *job);

#endif
