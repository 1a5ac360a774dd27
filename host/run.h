/* run.h: runs, one execution of a job each. A run owns its thread (a
 * registry ref) and what it waits on; it starts from a scheduler fire,
 * is resumed only from loop callbacks, and frees itself when it ends.
 * The runner applies what happens around a run: max_instances and the
 * overlap policy, the timeout, the retry policy. */
#ifndef MB_RUN_H
#define MB_RUN_H

#include <lua.h>

#include "sched.h"

typedef struct mb_run mb_run;
typedef struct mb_runner mb_runner;

/* Runs of jobs whose lua_ref is a registry ref to a table with `run`
 * (function), `args` (list with n), `kwargs` (table or nil), `retry`
 * (table with retry_on, or nil) and `state` (ctx.state, made when
 * missing); or, for a lean job, to its run function alone. */
mb_runner *mb_runner_new(lua_State *L, mb_sched *sched);
/* After each run, save_state(job) is asked to keep ctx.state; it returns
 * NULL, or why the state cannot be saved (the run then fails with it). */
void mb_runner_on_state(mb_runner *r,
                        const char *(*save_state)(mb_job *job, void *data),
                        void *data);
/* Run ids count on from last (the store's highest). */
void mb_runner_set_last_id(mb_runner *r, uint64_t last);
/* A fresh run id, for fires recorded without a run (missed, skipped). */
uint64_t mb_runner_take_id(mb_runner *r);
/* The latest run id taken. */
uint64_t mb_runner_last_id(const mb_runner *r);
/* A run of job for fire died with the process that ran it: apply the
 * retry policy as for a failure of kind "interrupted". */
void mb_runner_interrupted(mb_runner *r, mb_job *job, const mb_fire *fire,
                           const char *error);
/* Cancel every run in flight (recorded as cancelled) and free. Returns
 * the last run id taken (ending runs may start buffered ones). */
uint64_t mb_runner_free(mb_runner *r);

/* Start a run of job for fire, or skip or buffer it when max_instances
 * runs are in flight: the sched fire hook. */
void mb_runner_fire(mb_runner *r, mb_job *job, const mb_fire *fire);
/* Runs in flight. */
size_t mb_runner_active(const mb_runner *r);
/* Cancel every run in flight of job (NULL: of every job), recorded as
 * cancelled with reason. A run whose code is executing right now ends
 * as soon as it yields or returns. */
void mb_runner_cancel(mb_runner *r, mb_job *job, const char *reason);
/* Call cb whenever the last run in flight ends (NULL: stop). */
void mb_runner_on_empty(mb_runner *r, void (*cb)(void *data), void *data);

/* The run whose thread is co, or NULL when co is not a run's own
 * thread (the main state, a coroutine the job made). */
mb_run *mb_run_current(lua_State *co);
/* The run whose Lua code is executing now, or NULL. */
mb_run *mb_run_executing(void);
mb_sched *mb_run_sched(const mb_run *run);
mb_clock *mb_run_clock(const mb_run *run);

/* For waiting stdlib calls: record what the run waits on and how to
 * cancel it, then return lua_yield(co, 0). When the wait ends, the uv
 * callback calls mb_run_wake with the results pushed on the run's
 * thread. cancel must release the wait without resuming. */
typedef void (*mb_wait_cancel)(mb_run *run, void *wait);
int mb_run_wait(mb_run *run, mb_wait_cancel cancel, void *wait);
void mb_run_wake(mb_run *run, int nresults);

/* Sleep: yield the calling run for delay microseconds. Raises when the
 * caller is not a run's own thread. */
int mb_run_sleep(lua_State *co, mb_time delay);

/* Log the message at stack index 1 with the fields table at index 2
 * (may be nil), tagged with job and run when given (NULL, 0: not). */
void mb_lua_log(lua_State *L, int level, const char *job_id,
                lua_Integer run_id);

/* The C module `moonbeat.core.log`: debug, info, warn and error(msg,
 * fields) log as ctx.log does for the run whose code executes now (its
 * job and run id, its log tail), and as a plain scheduler line outside
 * a run. */
int luaopen_moonbeat_core_log(lua_State *L);

/* Registry refs taken by the host, counted so that a leak shows. */
int mb_ref(lua_State *L);
void mb_unref(lua_State *L, int ref);
long mb_live_refs(void);

#endif
