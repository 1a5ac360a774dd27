/* run.c: runs as coroutines. Only resume() calls lua_resume, and only
 * from loop callbacks; ending a run never resumes it, so a job's own
 * pcall cannot catch its timeout or cancellation. */
#include "run.h"

#include <lauxlib.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "lua_api.h"
#include "pool.h"
#include "tz.h"
#include "udata.h"

/* A run with a timeout is checked every this many VM instructions. */
#define HOOK_INSTRUCTIONS 10000

enum { ENDED_OK, ENDED_ERROR, ENDED_TIMEOUT, ENDED_CANCELLED };

struct mb_run {
  mb_runner *runner;
  mb_job *job;
  lua_State *co;
  int co_ref;
  uint64_t id;
  mb_fire fire;
  mb_time started, started_mono;
  mb_time deadline_mono;     /* MB_TIME_NONE: no timeout */
  mb_time slice_start;       /* real monotonic time this resume began */
  mb_timer sleep_timer;
  mb_timer deadline_timer;
  mb_wait_cancel cancel;     /* non-NULL while the run waits */
  void *wait;
  mb_time timeout;           /* the policy's, fixed at start; 0: none */
  bool timed_out;            /* the hook is unwinding it */
  bool closing;              /* its to-be-closed handlers are running */
  bool busy;                 /* its C caller will look at it again */
  bool ending;
  bool cancel_requested;     /* cancelled while busy: ends when not */
  const char *cancel_reason;
  char *tail;                /* the last lines it logged, or NULL */
  size_t tail_len;
  mb_run *next, **prevp;
};

/* Runs come from a pool: a burst of a hundred thousand runs, each freed
 * as it ends, then reuses a few slots instead of going through malloc. */
static mb_pool *run_pool;

static mb_run *new_run(void) {
  if (!run_pool) run_pool = mb_pool_new(sizeof(mb_run));
  return mb_pool_alloc(run_pool);
}

/* The last lines a run logged, kept with its history. */
#define TAIL_BYTES 4096

/* Threads of ended runs kept for new ones: a run's thread is reset when
 * it ends, and a reset thread starts afresh. */
#define SPARE_THREADS 256

typedef struct spare_thread {
  lua_State *co;
  int ref;
} spare_thread;

/* The spec's field names every run reads: interned once and pushed by
 * registry ref, since lua_getfield looks a C string up each time and
 * that was a tenth of a trivial run. */
enum { KEY_RUN, KEY_STATE, KEY_ARGS, KEY_KWARGS, KEY_N, KEY_COUNT };
static const char *const key_names[KEY_COUNT] = {
  "run", "state", "args", "kwargs", "n",
};

struct mb_runner {
  spare_thread spare[SPARE_THREADS];
  int nspare;
  uint64_t last_id;
  const char *(*save_state)(mb_job *job, void *data);
  void *state_data;
  lua_State *L;
  mb_sched *sched;
  mb_run *runs;
  size_t active;
  void (*on_empty)(void *data);
  void *on_empty_data;
  int ctx_meta;  /* registry ref of ctx's metatable */
  int keys[KEY_COUNT];  /* registry refs of the field names a run uses */
};

static long live_refs;
static mb_run *executing;

int mb_ref(lua_State *L) {
  /* Counted once made: luaL_ref may raise, out of memory. */
  int ref = luaL_ref(L, LUA_REGISTRYINDEX);
  live_refs++;
  return ref;
}

void mb_unref(lua_State *L, int ref) {
  if (ref == LUA_NOREF || ref == LUA_REFNIL) return;
  live_refs--;
  luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

long mb_live_refs(void) { return live_refs; }

static mb_run **extra(lua_State *co) { return lua_getextraspace(co); }

mb_run *mb_run_current(lua_State *co) {
  mb_run *run = *extra(co);
  return run && run->co == co ? run : NULL;
}

mb_run *mb_run_executing(void) { return executing; }

mb_sched *mb_run_sched(const mb_run *run) { return run->runner->sched; }
mb_clock *mb_run_clock(const mb_run *run) {
  return mb_sched_clock(run->runner->sched);
}

static void push_ctx_meta(lua_State *L, mb_runner *r);

mb_runner *mb_runner_new(lua_State *L, mb_sched *sched) {
  mb_runner *r = mb_xcalloc(1, sizeof *r);
  r->L = L;
  r->sched = sched;
  /* Every run's ctx shares it: looked up by ref, not by name, per run. */
  push_ctx_meta(L, r);
  r->ctx_meta = luaL_ref(L, LUA_REGISTRYINDEX);
  for (int k = 0; k < KEY_COUNT; k++) {
    lua_pushstring(L, key_names[k]);
    r->keys[k] = luaL_ref(L, LUA_REGISTRYINDEX);
  }
  return r;
}

static void push_key(lua_State *L, const mb_runner *r, int key) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->keys[key]);
}

/* t[key] = the value on top (popped); t at idx, not a pseudo-index. */
static void set_key(lua_State *L, const mb_runner *r, int idx, int key) {
  idx = lua_absindex(L, idx);
  push_key(L, r, key);
  lua_insert(L, -2);
  lua_rawset(L, idx);
}

/* Push t[key], raw; returns its type. */
static int get_key(lua_State *L, const mb_runner *r, int idx, int key) {
  idx = lua_absindex(L, idx);
  push_key(L, r, key);
  return lua_rawget(L, idx);
}

size_t mb_runner_active(const mb_runner *r) { return r->active; }

void mb_runner_on_state(mb_runner *r,
                        const char *(*save_state)(mb_job *job, void *data),
                        void *data) {
  r->save_state = save_state;
  r->state_data = data;
}

void mb_runner_set_last_id(mb_runner *r, uint64_t last) {
  if (last > r->last_id) r->last_id = last;
}

uint64_t mb_runner_take_id(mb_runner *r) { return ++r->last_id; }

uint64_t mb_runner_last_id(const mb_runner *r) { return r->last_id; }

/* Keep the newest TAIL_BYTES of what a run logged, whole lines. */
static void tail_append(mb_run *run, const char *line, size_t n) {
  if (n >= TAIL_BYTES) {
    line += n - (TAIL_BYTES - 1);
    n = TAIL_BYTES - 1;
  }
  if (!run->tail) run->tail = mb_xmalloc(TAIL_BYTES + 1);
  if (run->tail_len + n + 1 > TAIL_BYTES) {
    size_t drop = run->tail_len + n + 1 - TAIL_BYTES;
    const char *nl = memchr(run->tail + drop, '\n', run->tail_len - drop);
    drop = nl ? (size_t)(nl - run->tail) + 1 : run->tail_len;
    memmove(run->tail, run->tail + drop, run->tail_len - drop);
    run->tail_len -= drop;
  }
  memcpy(run->tail + run->tail_len, line, n);
  run->tail_len += n;
  run->tail[run->tail_len++] = '\n';
  run->tail[run->tail_len] = '\0';
}

void mb_runner_on_empty(mb_runner *r, void (*cb)(void *data), void *data) {
  r->on_empty = cb;
  r->on_empty_data = data;
}

static mb_time real_mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (mb_time)ts.tv_sec * MB_SEC + ts.tv_nsec / 1000;
}

/* ---- retries ---- */

static mb_time retry_delay(mb_sched *s, const mb_job_policy *p, int attempt) {
  double d = (double)p->retry_delay;
  if (p->retry_backoff == MB_BACKOFF_LINEAR)
    d *= attempt;
  else if (p->retry_backoff == MB_BACKOFF_EXPONENTIAL)
    d *= ldexp(1.0, attempt - 1 < 60 ? attempt - 1 : 60);
  if (p->retry_max_delay > 0 && d > (double)p->retry_max_delay)
    d = (double)p->retry_max_delay;
  if (p->retry_jitter > 0)
    d *= 1.0 + p->retry_jitter * (2.0 * mb_sched_random(s) - 1.0);
  if (p->retry_max_delay > 0 && d > (double)p->retry_max_delay)
    d = (double)p->retry_max_delay;
  /* No delay beyond a thousand years: the sum with now stays exact. */
  double cap = 1000.0 * 366 * 86400 * 1e6;
  if (!(d < cap)) d = cap;
  return d > 0 ? (mb_time)d : 0;
}

/* Ask the job's retry_on(err) whether this failure is worth a retry. */
static bool retry_wanted(mb_runner *r, mb_job *job, const char *kind,
                         const char *error, const char *traceback,
                         int attempt) {
  lua_State *L = r->L;
  if (job->lua_ref == LUA_NOREF) return false;
  if (job->lua_lean) return true;  /* no retry_on in a run function */
  mb_host_work_begin();
  int top = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, job->lua_ref);
  if (lua_getfield(L, -1, "retry") != LUA_TTABLE ||
      lua_getfield(L, -1, "retry_on") != LUA_TFUNCTION) {
    lua_settop(L, top);
    mb_host_work_end();
    return true;
  }
  lua_createtable(L, 0, 4);
  lua_pushstring(L, kind);
  lua_setfield(L, -2, "kind");
  lua_pushstring(L, error ? error : "");
  lua_setfield(L, -2, "message");
  if (traceback) {
    lua_pushstring(L, traceback);
    lua_setfield(L, -2, "traceback");
  }
  lua_pushinteger(L, attempt);
  lua_setfield(L, -2, "attempt");
  bool wanted = false;
  if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
    wanted = lua_toboolean(L, -1);
  } else {
    mb_log_field f[] = {MB_LS("job", job->id),
                        MB_LS("error", lua_tostring(L, -1))};
    mb_log(MB_LOG_ERROR, "retry_on failed; not retrying", f, 2);
  }
  lua_settop(L, top);
  mb_host_work_end();
  return wanted;
}

static void retry_policy(mb_runner *r, mb_job *job, const mb_fire *fire,
                         uint64_t run_id, const char *kind,
                         const char *error, const char *traceback) {
  const mb_job_policy *p = job->policy;
  if (p->retry_attempts <= 1 || job->removed || mb_sched_stopped(r->sched))
    return;
  int attempt = fire->attempt;
  if (attempt >= p->retry_attempts) {
    mb_event ev = mb_event_make(MB_EV_RETRIES_EXHAUSTED, job->id);
    ev.run_id = run_id;
    ev.scheduled_time = fire->scheduled;
    ev.attempt = attempt;
    ev.error = error;
    mb_sched_emit(r->sched, &ev);
    return;
  }
  if (!retry_wanted(r, job, kind, error, traceback, attempt)) return;
  /* retry_on may have changed the job's policy, and the one p points to
   * may be gone with it: the delay is the job's policy's now. */
  p = job->policy;
  mb_fire next = {fire->scheduled, attempt + 1, fire->manual};
  mb_time due = mb_sched_now(r->sched) + retry_delay(r->sched, p, attempt);
  if (mb_sched_retry(r->sched, job, due, &next) < 0) return;
  mb_event ev = mb_event_make(MB_EV_RETRY, job->id);
  ev.run_id = run_id;
  ev.scheduled_time = fire->scheduled;
  ev.attempt = attempt + 1;
  ev.next_time = due;
  ev.error = error;
  mb_sched_emit(r->sched, &ev);
}

static void after_failure(mb_run *run, const char *kind, const char *error,
                          const char *traceback) {
  retry_policy(run->runner, run->job, &run->fire, run->id, kind, error,
               traceback);
}

void mb_runner_interrupted(mb_runner *r, mb_job *job, const mb_fire *fire,
                           const char *error) {
  retry_policy(r, job, fire, 0, "interrupted", error, NULL);
}

/* ---- ending ---- */

static void on_count_hook(lua_State *L, lua_Debug *ar);

/* Which job the outermost end_run is draining the buffer of, and how
 * deep end_run calls are nested (a buffered run that ends at once ends
 * inside the one that started it). */
static mb_job *draining;
static int end_depth;

static void drain_buffer(mb_runner *r, mb_job *job) {
  while (job->nbuffered && !job->removed && !mb_sched_stopped(r->sched) &&
         job->running < job->policy->max_instances) {
    mb_fire next = job->buffer[0];
    memmove(job->buffer, job->buffer + 1,
            --job->nbuffered * sizeof *job->buffer);
    mb_runner_fire(r, job, &next);
  }
}

/* Run the job's pending to-be-closed handlers. With a timeout they get
 * one more timeout's worth of real time, then each is interrupted. */
static int close_thread(mb_run *run) {
  *extra(run->co) = NULL;
  /* A thread whose function returned (or never started) has nothing
   * left to close and can run the next job as it is; only one left
   * suspended or in error needs the reset. */
  if (lua_status(run->co) == LUA_OK) {
    lua_settop(run->co, 0);
    return LUA_OK;
  }
  mb_run *was = executing;
  if (run->timeout > 0) {
    run->closing = true;
    run->slice_start = real_mono();
    executing = run;
    lua_sethook(run->co, on_count_hook, LUA_MASKCOUNT, HOOK_INSTRUCTIONS);
  }
  int status = lua_resetthread(run->co);
  lua_sethook(run->co, NULL, 0, 0);
  executing = was;
  return status;
}

static void end_run(mb_run *run, int how, const char *error,
                    const char *traceback, const char *reason) {
  if (run->ending) return;
  if (run->busy) {
    /* Its C caller (inside lua_resume, or announcing its start) ends it
     * once it is back. */
    run->cancel_requested = true;
    run->cancel_reason = reason;
    return;
  }
  run->ending = true;
  end_depth++;
  mb_runner *r = run->runner;
  mb_job *job = run->job;
  mb_clock *clock = mb_sched_clock(r->sched);
  if (run->cancel) {
    mb_wait_cancel cancel = run->cancel;
    run->cancel = NULL;
    cancel(run, run->wait);
  }
  mb_timer_stop(clock, &run->sleep_timer);
  mb_timer_stop(clock, &run->deadline_timer);
  lua_sethook(run->co, NULL, 0, 0);
  *run->prevp = run->next;
  if (run->next) run->next->prevp = run->prevp;
  r->active--;
  job->running--;

  /* ctx.state is saved after every run; state that cannot be saved
   * fails a run that had otherwise succeeded. */
  if (r->save_state && job->lua_ref != LUA_NOREF) {
    const char *state_error = r->save_state(job, r->state_data);
    if (state_error && how == ENDED_OK) {
      how = ENDED_ERROR;
      error = state_error;
    }
  }
  static const int kinds[] = {MB_EV_EXECUTED, MB_EV_ERROR, MB_EV_TIMEOUT,
                              MB_EV_CANCELLED};
  mb_event ev = mb_event_make(kinds[how], job->id);
  ev.job = job;
  ev.log_tail = run->tail;
  ev.run_id = run->id;
  ev.scheduled_time = run->fire.scheduled;
  ev.start_time = run->started;
  ev.duration = mb_clock_mono(clock) - run->started_mono;
  ev.attempt = run->fire.attempt;
  ev.manual = run->fire.manual;
  ev.error = error;
  ev.traceback = traceback;
  ev.reason = reason;
  mb_sched_emit(r->sched, &ev);
  if (how == ENDED_ERROR || how == ENDED_TIMEOUT)
    after_failure(run, how == ENDED_ERROR ? "error" : "timeout", error,
                  traceback);

  /* Closing the thread runs the job's pending to-be-closed variables;
   * error and traceback live on its stack, so this comes after. */
  int reset = close_thread(run);
  if (reset == LUA_OK && r->nspare < SPARE_THREADS) {
    lua_settop(run->co, 0);
    r->spare[r->nspare++] = (spare_thread){run->co, run->co_ref};
  } else {
    mb_unref(r->L, run->co_ref);
  }
  free(run->tail);
  mb_pool_free(run_pool, run);

  /* The freed slot goes to the oldest buffered fire before any new fire
   * can take it. The outermost end_run drains in a loop, so a long
   * buffer of quick runs does not nest one call per run; from under a
   * job's code, or for another job, it waits for the next turn. */
  if (job->nbuffered && !job->removed && !mb_sched_stopped(r->sched)) {
    if (end_depth == 1 && !executing) {
      mb_job *outer = draining;
      draining = job;
      drain_buffer(r, job);
      draining = outer;
    } else if (job != draining) {
      mb_fire next = job->buffer[0];
      memmove(job->buffer, job->buffer + 1,
              --job->nbuffered * sizeof *job->buffer);
      mb_sched_fire_soon(r->sched, job, &next);
    }
  }
  mb_sched_run_ended(r->sched, job);
  mb_job_unref(job);
  end_depth--;
  if (r->active == 0 && r->on_empty) r->on_empty(r->on_empty_data);
}

static void on_count_hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  mb_run *run = executing;
  /* A coroutine made by a job inherits its hook and may outlive it, or
   * be resumed by a run without a timeout: nothing to check there. */
  if (!run || run->timeout <= 0) {
    lua_sethook(L, NULL, 0, 0);
    return;
  }
  if (run->closing) {
    if (real_mono() - run->slice_start >= run->timeout)
      luaL_error(L, "a to-be-closed handler ran past the job's timeout");
    return;
  }
  if (!run->timed_out) {
    bool past_deadline = run->deadline_mono != MB_TIME_NONE &&
                         mb_clock_mono(mb_run_clock(run)) >= run->deadline_mono;
    if (!past_deadline && real_mono() - run->slice_start < run->timeout)
      return;
    /* From now on, every instruction tries to unwind the run. */
    run->timed_out = true;
    lua_sethook(run->co, on_count_hook, LUA_MASKCOUNT, 1);
    if (L != run->co) lua_sethook(L, on_count_hook, LUA_MASKCOUNT, 1);
  }
  /* In a hook, lua_yield marks the thread and returns; the VM yields
   * once the hook is back. */
  if (lua_isyieldable(L)) {
    lua_yield(L, 0);
    return;
  }
  /* Inside a metamethod or a callback called from C (a sort comparator)
   * no yield is allowed: an error leaves it, and the next instruction
   * that can yield does. */
  luaL_error(L, "the job's timeout passed");
}

static const char *timeout_text(mb_run *run, char *buf, size_t n) {
  char d[32];
  snprintf(buf, n, "timed out after %s",
           mb_duration_format(run->timeout, d, sizeof d));
  return buf;
}

static void resume(mb_run *run, int nargs) {
  lua_State *co = run->co;
  int nres = 0;
  run->slice_start = real_mono();
  mb_run *was = executing;
  executing = run;
  run->busy = true;
  int rc = lua_resume(co, NULL, nargs, &nres);
  run->busy = false;
  executing = was;
  char text[160];
  if (run->cancel_requested) {
    if (rc == LUA_YIELD || rc == LUA_OK) lua_pop(co, nres);
    end_run(run, ENDED_CANCELLED, NULL, NULL, run->cancel_reason);
    return;
  }
  /* The hook may have had to raise instead of yield (no yield allowed
   * where it struck), and the error left the job: still a timeout. */
  if (run->timed_out && rc != LUA_YIELD && rc != LUA_OK) {
    end_run(run, ENDED_TIMEOUT, timeout_text(run, text, sizeof text), NULL,
            NULL);
    return;
  }
  if (rc == LUA_YIELD) {
    if (run->timed_out) {
      end_run(run, ENDED_TIMEOUT, timeout_text(run, text, sizeof text), NULL,
              NULL);
      return;
    }
    if (run->cancel) return;
    lua_pop(co, nres);
    end_run(run, ENDED_ERROR,
            "the job yielded to the scheduler directly; wait with the "
            "moonbeat stdlib (moonbeat.time.sleep, ...) instead",
            NULL, NULL);
    return;
  }
  if (rc == LUA_OK) {
    lua_pop(co, nres);
    end_run(run, ENDED_OK, NULL, NULL, NULL);
    return;
  }
  if (rc == LUA_ERRMEM) {
    mb_lua_memory_message(text, sizeof text);
    end_run(run, ENDED_ERROR, text, NULL, NULL);
    return;
  }
  const char *msg = lua_tostring(co, -1);
  if (!msg) msg = luaL_typename(co, -1);
  /* After a stack overflow there may be no room for the traceback. */
  const char *trace = NULL;
  if (lua_checkstack(co, 8)) {
    luaL_traceback(co, co, NULL, 0);
    trace = lua_tostring(co, -1);
  }
  end_run(run, ENDED_ERROR, msg, trace, NULL);
}

void mb_run_wake(mb_run *run, int nresults) {
  run->cancel = NULL;
  run->wait = NULL;
  resume(run, nresults);
}

int mb_run_wait(mb_run *run, mb_wait_cancel cancel, void *wait) {
  run->cancel = cancel;
  run->wait = wait;
  return lua_yield(run->co, 0);
}

static void on_deadline(mb_timer *t) {
  mb_run *run = t->data;
  char text[160];
  end_run(run, ENDED_TIMEOUT, timeout_text(run, text, sizeof text), NULL,
          NULL);
}

/* ---- sleep ---- */

static void on_sleep_done(mb_timer *t) { mb_run_wake(t->data, 0); }

static void cancel_sleep(mb_run *run, void *wait) {
  (void)wait;
  mb_timer_stop(mb_run_clock(run), &run->sleep_timer);
}

int mb_run_sleep(lua_State *co, mb_time delay) {
  mb_run *run = mb_run_current(co);
  if (!run)
    return luaL_error(co, "sleep: only a job's run can sleep (this code "
                      "is not running as a job's run function)");
  mb_timer_start(mb_run_clock(run), &run->sleep_timer, delay);
  return mb_run_wait(run, cancel_sleep, NULL);
}

/* ---- ctx ---- */

static const char *const log_levels[] = {"debug", "info", "warn", "error"};

static int by_key(const void *a, const void *b) {
  return strcmp(((const mb_log_field *)a)->key,
                ((const mb_log_field *)b)->key);
}

void mb_lua_log(lua_State *L, int level, const char *job_id,
                lua_Integer run_id) {
  const char *msg = luaL_checkstring(L, 1);
  bool has_fields = !lua_isnoneornil(L, 2);
  if (has_fields) luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  int base = lua_gettop(L);
  size_t nfixed = 0;
  mb_log_field fixed[2];
  if (job_id) fixed[nfixed++] = MB_LS("job", job_id);
  if (run_id) fixed[nfixed++] = MB_LI("run", run_id);
  /* Leave (key text, value) pairs on the stack, values as strings
   * unless numbers or booleans, so the texts live while we log. */
  if (has_fields) {
    lua_pushnil(L);
    while (lua_next(L, 2)) {
      luaL_checkstack(L, 6, "too many log fields");
      lua_pushvalue(L, -2);
      luaL_tolstring(L, -1, NULL);
      lua_remove(L, -2);
      lua_insert(L, -2);
      int t = lua_type(L, -1);
      if (t != LUA_TNUMBER && t != LUA_TBOOLEAN) {
        luaL_tolstring(L, -1, NULL);
        lua_remove(L, -2);
      }
      lua_pushvalue(L, -3);
      lua_remove(L, -4);
    }
  }
  size_t n = (size_t)(lua_gettop(L) - base) / 2;
  mb_log_field *f = mb_xmalloc((n + 2) * sizeof *f);
  memcpy(f, fixed, nfixed * sizeof *f);
  for (size_t i = 0; i < n; i++) {
    int k = base + 1 + 2 * (int)i, v = k + 1;
    const char *key = lua_tostring(L, k);
    if (lua_type(L, v) == LUA_TBOOLEAN)
      f[nfixed + i] = MB_LB(key, lua_toboolean(L, v));
    else if (lua_isinteger(L, v))
      f[nfixed + i] = MB_LI(key, lua_tointeger(L, v));
    else if (lua_type(L, v) == LUA_TNUMBER)
      f[nfixed + i] = MB_LN(key, lua_tonumber(L, v));
    else
      f[nfixed + i] = MB_LS(key, lua_tostring(L, v));
  }
  qsort(f + nfixed, n, sizeof *f, by_key);
  mb_log(level, msg, f, n + nfixed);
  if (executing && run_id && (uint64_t)run_id == executing->id) {
    static const char *const tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, tags[level]);
    luaL_addchar(&b, ' ');
    luaL_addstring(&b, msg);
    for (size_t i = nfixed; i < n + nfixed; i++) {
      char num[64];
      luaL_addchar(&b, ' ');
      luaL_addstring(&b, f[i].key);
      luaL_addchar(&b, '=');
      switch (f[i].type) {
      case MB_LF_STR: luaL_addstring(&b, f[i].s ? f[i].s : ""); break;
      case MB_LF_BOOL: luaL_addstring(&b, f[i].i ? "true" : "false"); break;
      case MB_LF_NUM:
        snprintf(num, sizeof num, "%.14g", f[i].n);
        luaL_addstring(&b, num);
        break;
      default:
        snprintf(num, sizeof num, "%lld", f[i].i);
        luaL_addstring(&b, num);
      }
    }
    luaL_pushresult(&b);
    size_t len;
    const char *line = lua_tolstring(L, -1, &len);
    tail_append(executing, line, len);
    lua_pop(L, 1);
  }
  free(f);
  lua_settop(L, 2);
}

/* A run's ctx is a userdata: its facts, fixed when the run starts, and a
 * copy of its job's id, so that a ctx kept past its run still reads. As
 * a table with its fields it was a third of a trivial run: the table,
 * four hashed fields, the id interned as a Lua string, and collecting
 * them. Fields a job sets on ctx, and log and state once made, live in a
 * table made on first use: the userdata's user value. */
typedef struct run_ctx {
  const void *mark;       /* &ctx_mark (udata.h) */
  lua_Integer run_id;
  lua_Integer attempt;
  double scheduled_time;
  double deadline;        /* when has_deadline */
  uint32_t id_len;
  bool has_deadline;
  bool has_fields;        /* it has its own table */
  char job_id[];
} run_ctx;

/* The fields a run is given, in the order pairs() lists them. */
enum { CTX_JOB_ID, CTX_RUN_ID, CTX_SCHEDULED_TIME, CTX_ATTEMPT, CTX_DEADLINE,
       CTX_NFACTS, CTX_LOG = CTX_NFACTS, CTX_STATE, CTX_NNAMES };
#define CTX_NAME(text) {text, sizeof text - 1}
static const struct {
  const char *text;
  size_t len;
} ctx_names[CTX_NNAMES] = {
  CTX_NAME("job_id"), CTX_NAME("run_id"), CTX_NAME("scheduled_time"),
  CTX_NAME("attempt"), CTX_NAME("deadline"), CTX_NAME("log"),
  CTX_NAME("state"),
};

static int ctx_name(lua_State *L, int idx) {
  if (lua_type(L, idx) != LUA_TSTRING) return CTX_NNAMES;
  size_t len;
  const char *key = lua_tolstring(L, idx, &len);
  int f = 0;
  while (f < CTX_NNAMES && !(ctx_names[f].len == len &&
                             memcmp(key, ctx_names[f].text, len) == 0))
    f++;
  return f;
}

/* Not const: constants may share an address (-fmerge-all-constants). */
static char ctx_mark;

/* The ctx at idx: ours, not some other value handed to a metamethod or
 * a log function by the debug library. */
static run_ctx *check_ctx(lua_State *L, int idx) {
  return mb_udata_check(L, idx, &ctx_mark, sizeof(run_ctx), "ctx");
}

/* Push fact f of c; false (nothing pushed) for a deadline it has not. */
static bool push_fact(lua_State *L, const run_ctx *c, int f) {
  switch (f) {
  case CTX_JOB_ID: lua_pushlstring(L, c->job_id, c->id_len); return true;
  case CTX_RUN_ID: lua_pushinteger(L, c->run_id); return true;
  case CTX_SCHEDULED_TIME: lua_pushnumber(L, c->scheduled_time); return true;
  case CTX_ATTEMPT: lua_pushinteger(L, c->attempt); return true;
  default:
    if (!c->has_deadline) return false;
    lua_pushnumber(L, c->deadline);
    return true;
  }
}

/* Push the table of fields made or set on the ctx at idx (its user
 * value) and return true; false, with nothing pushed, when it has none.
 * The user value is checked: the debug library can replace it. */
static bool push_fields(lua_State *L, int idx) {
  const run_ctx *c = lua_touserdata(L, idx);
  if (!c->has_fields) return false;
  if (lua_getiuservalue(L, idx, 1) == LUA_TTABLE) return true;
  lua_pop(L, 1);
  return false;
}

/* push_fields, the table made when there is none. */
static void push_fields_made(lua_State *L, int idx) {
  idx = lua_absindex(L, idx);
  if (push_fields(L, idx)) return;
  lua_createtable(L, 0, 2);
  lua_pushvalue(L, -1);
  lua_setiuservalue(L, idx, 1);
  ((run_ctx *)lua_touserdata(L, idx))->has_fields = true;
}

/* fields[key] = the value on top (popped), for the ctx at idx. */
static void set_field(lua_State *L, int idx, int key) {
  idx = lua_absindex(L, idx);
  key = lua_absindex(L, key);
  push_fields_made(L, idx);
  lua_pushvalue(L, key);
  lua_pushvalue(L, -3);
  lua_rawset(L, -3);
  lua_pop(L, 2);
}

/* ctx.log.info(msg, fields): upvalue 1 is ctx, 2 the level. */
static int ctx_log(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  const run_ctx *c = check_ctx(L, -1);
  /* A copy: logging runs the fields' __tostring, which may leave the
   * ctx to the collector (mb_lua_log keeps only its arguments). */
  char job[256];
  snprintf(job, sizeof job, "%s", c->job_id);
  lua_Integer run = c->run_id;
  lua_pop(L, 1);
  mb_lua_log(L, (int)lua_tointeger(L, lua_upvalueindex(2)), job, run);
  return 0;
}

/* moonbeat.log's functions: upvalue 1 is the level. */
static int executing_log(lua_State *L) {
  int level = (int)lua_tointeger(L, lua_upvalueindex(1));
  if (!executing) {
    mb_lua_log(L, level, NULL, 0);
    return 0;
  }
  /* A copy: logging may run __tostring code that renames the job. */
  char job[256];
  snprintf(job, sizeof job, "%s", executing->job->id);
  mb_lua_log(L, level, job, (lua_Integer)executing->id);
  return 0;
}

int luaopen_moonbeat_core_log(lua_State *L) {
  lua_createtable(L, 0, 4);
  for (int i = 0; i < 4; i++) {
    lua_pushinteger(L, MB_LOG_DEBUG + i);
    lua_pushcclosure(L, executing_log, 1);
    lua_setfield(L, -2, log_levels[i]);
  }
  return 1;
}

/* The job a ctx's state belongs to: its run's, found by run id while
 * it is in flight, or, for a ctx kept past its run, the job of its id
 * now. NULL once the scheduler is closed (r NULL) or the job gone. */
static mb_job *ctx_job(mb_runner *r, const run_ctx *c) {
  if (!r) return NULL;
  uint64_t id = (uint64_t)c->run_id;
  mb_job *job = NULL;
  if (executing && executing->runner == r && executing->id == id)
    job = executing->job;
  for (mb_run *run = r->runs; !job && run; run = run->next)
    if (run->id == id) job = run->job;
  if (!job) job = mb_sched_get_job(r->sched, c->job_id);
  /* Replaced while it runs: the new job has the state now. */
  if (job && job->lua_ref == LUA_NOREF) job = mb_sched_get_job(r->sched, job->id);
  return job;
}

/* ctx.state on first use: most jobs never touch it, and a table per run
 * for nothing is a tenth of a trivial run. It is the job's table, kept
 * in its spec between runs. */
static int ctx_state(lua_State *L, mb_runner *r, const run_ctx *c) {
  mb_job *job = ctx_job(r, c);
  /* Held while its spec is made whole: the allocations may run a
   * finalizer that removes it. */
  if (job) {
    mb_job_ref(job);
    mb_host_whole_spec(L, job);
  }
  bool gone = !job || job->lua_ref == LUA_NOREF;
  if (!gone) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, job->lua_ref);
    job->rec.has_state = true;  /* saved after each run from now on */
  }
  if (job) mb_job_unref(job);
  if (gone) {
    /* A job gone for good: a table of its own, kept by nothing else. */
    lua_newtable(L);
  } else if (get_key(L, r, -1, KEY_STATE) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushvalue(L, -1);
    set_key(L, r, -3, KEY_STATE);
  }
  lua_pushvalue(L, -1);
  set_field(L, 1, 2);
  return 1;
}

static int ctx_index(lua_State *L) {
  mb_runner *r = lua_touserdata(L, lua_upvalueindex(1));
  const run_ctx *c = check_ctx(L, 1);
  if (push_fields(L, 1)) {
    lua_pushvalue(L, 2);
    if (lua_rawget(L, -2) != LUA_TNIL) return 1;
    lua_pop(L, 2);
  }
  int f = ctx_name(L, 2);
  if (f < CTX_NFACTS) return push_fact(L, c, f) ? 1 : 0;
  if (f == CTX_STATE) return ctx_state(L, r, c);
  if (f != CTX_LOG) return 0;
  lua_createtable(L, 0, 4);
  for (int i = 0; i < 4; i++) {
    lua_pushvalue(L, 1);
    lua_pushinteger(L, MB_LOG_DEBUG + i);
    lua_pushcclosure(L, ctx_log, 2);
    lua_setfield(L, -2, log_levels[i]);
  }
  lua_pushvalue(L, -1);
  set_field(L, 1, 2);
  return 1;
}

/* ctx.x = v: a job may keep its own fields on ctx; the run's facts, log
 * and state are not to be replaced. Setting the value already there is
 * allowed, for `ctx.state = ctx.state or {}`; reading it here makes
 * nothing (a log or state not made yet cannot be the value). */
static int ctx_newindex(lua_State *L) {
  const run_ctx *c = check_ctx(L, 1);
  int f = ctx_name(L, 2);
  if (f < CTX_NNAMES) {
    bool same;
    if (f < CTX_NFACTS) {
      same = push_fact(L, c, f) ? lua_rawequal(L, -1, 3) : lua_isnil(L, 3);
    } else {
      same = push_fields(L, 1);
      if (same) {
        lua_pushvalue(L, 2);
        lua_rawget(L, -2);
        same = !lua_isnil(L, -1) && lua_rawequal(L, -1, 3);
      }
    }
    if (same) return 0;
    return luaL_error(L, "ctx.%s cannot be assigned%s", ctx_names[f].text,
                      f == CTX_STATE ? ": set fields of ctx.state instead" : "");
  }
  lua_pushvalue(L, 3);
  set_field(L, 1, 2);
  return 0;
}

/* pairs(ctx): the run's facts, then the fields made or set on it. */
static int ctx_next(lua_State *L) {
  const run_ctx *c = check_ctx(L, 1);
  lua_settop(L, 2);
  int f = lua_isnil(L, 2) ? -1 : ctx_name(L, 2);
  if (f < CTX_NFACTS) {
    for (f++; f < CTX_NFACTS; f++) {
      lua_pushlstring(L, ctx_names[f].text, ctx_names[f].len);
      if (push_fact(L, c, f)) return 2;
      lua_pop(L, 1);
    }
    lua_pushnil(L);
    lua_replace(L, 2);
  }
  if (!push_fields(L, 1)) return 0;
  lua_pushvalue(L, 2);
  return lua_next(L, -2) ? 2 : 0;
}

static int ctx_pairs(lua_State *L) {
  check_ctx(L, 1);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

static int ctx_tostring(lua_State *L) {
  const run_ctx *c = check_ctx(L, 1);
  lua_pushfstring(L, "ctx: %s run %I", c->job_id, c->run_id);
  return 1;
}

static void push_ctx_meta(lua_State *L, mb_runner *r) {
  lua_createtable(L, 0, 5);
  lua_pushlightuserdata(L, r);
  lua_pushcclosure(L, ctx_index, 1);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, ctx_newindex);
  lua_setfield(L, -2, "__newindex");
  lua_pushcfunction(L, ctx_next);
  lua_pushcclosure(L, ctx_pairs, 1);
  lua_setfield(L, -2, "__pairs");
  lua_pushcfunction(L, ctx_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pushliteral(L, "ctx");
  lua_setfield(L, -2, "__name");
  /* Shared by every run's ctx: getmetatable(ctx) does not hand it out
   * for one job to change for all. */
  lua_pushliteral(L, "ctx");
  lua_setfield(L, -2, "__metatable");
}

static void push_ctx(lua_State *co, mb_run *run) {
  const mb_runner *r = run->runner;
  const char *id = run->job->id;
  size_t len = strlen(id);
  run_ctx *c = lua_newuserdatauv(co, sizeof *c + len + 1, 1);
  c->mark = &ctx_mark;
  c->has_fields = false;
  c->run_id = (lua_Integer)run->id;
  c->attempt = run->fire.attempt;
  c->scheduled_time = (double)run->fire.scheduled / 1e6;
  c->has_deadline = run->deadline_mono != MB_TIME_NONE;
  c->deadline = c->has_deadline ? (double)(run->started + run->timeout) / 1e6 : 0;
  c->id_len = (uint32_t)len;
  memcpy(c->job_id, id, len + 1);
  lua_rawgeti(co, LUA_REGISTRYINDEX, r->ctx_meta);
  lua_setmetatable(co, -2);
}

/* ---- starting ---- */

/* Whether the function on top of co can see what it is called with: a
 * Lua function with no parameters and no `...` cannot (extra arguments
 * are dropped at the call), so its run makes no ctx, and no args. Half
 * of a trivial run was its ctx: the table, its fields, its collection.
 * A C function may read anything it is given. */
static bool takes_arguments(lua_State *co) {
  lua_Debug ar;
  if (lua_type(co, -1) != LUA_TFUNCTION) return true;  /* fails as before */
  lua_pushvalue(co, -1);
  if (!lua_getinfo(co, ">u", &ar)) return true;
  return ar.nparams > 0 || ar.isvararg;
}

/* With [spec, fn, ctx] on co, push the spec's args (a1..an) and kwargs;
 * returns how many. */
static int push_args(lua_State *co, const mb_runner *r) {
  int nargs = 0;
  if (get_key(co, r, -3, KEY_ARGS) == LUA_TTABLE) {
    get_key(co, r, -1, KEY_N);
    lua_Integer n = lua_tointeger(co, -1);
    lua_pop(co, 1);
    /* Validation bounds n; stay safe if a spec was changed under us. */
    if (n < 0 || n > 250 || !lua_checkstack(co, (int)n + 4)) n = 0;
    for (int i = 1; i <= n; i++) lua_rawgeti(co, -i, i);
    /* [spec, fn, ctx, args, a1..an]: drop args. */
    lua_remove(co, -(int)(n + 1));
    nargs += (int)n;
  } else {
    lua_pop(co, 1);
  }
  if (get_key(co, r, -(nargs + 3), KEY_KWARGS) == LUA_TTABLE)
    nargs++;
  else
    lua_pop(co, 1);
  return nargs;
}

static void start_run(mb_runner *r, mb_job *job, const mb_fire *fire) {
  lua_State *L = r->L;
  mb_clock *clock = mb_sched_clock(r->sched);
  mb_run *run = new_run();
  run->runner = r;
  run->job = job;
  run->id = mb_runner_take_id(r);
  run->fire = *fire;
  run->started = mb_clock_now(clock);
  run->started_mono = mb_clock_mono(clock);
  run->deadline_mono = MB_TIME_NONE;
  mb_timer_init(&run->sleep_timer, on_sleep_done, run);
  mb_timer_init(&run->deadline_timer, on_deadline, run);
  mb_job_ref(job);
  job->running++;
  if (r->nspare) {
    spare_thread t = r->spare[--r->nspare];
    run->co = t.co;
    run->co_ref = t.ref;
  } else {
    run->co = lua_newthread(L);
    run->co_ref = mb_ref(L);
  }
  *extra(run->co) = run;
  run->next = r->runs;
  run->prevp = &r->runs;
  if (r->runs) r->runs->prevp = &run->next;
  r->runs = run;
  r->active++;
  run->timeout = job->policy->timeout;
  if (run->timeout > 0) {
    run->deadline_mono = run->started_mono + run->timeout;
    mb_timer_start(clock, &run->deadline_timer, run->timeout);
    lua_sethook(run->co, on_count_hook, LUA_MASKCOUNT, HOOK_INSTRUCTIONS);
  }

  lua_State *co = run->co;
  lua_rawgeti(co, LUA_REGISTRYINDEX, job->lua_ref);
  /* A lean job's ref is its run function: no spec, no args. */
  bool lean = job->lua_lean;
  if (!lean) get_key(co, r, -1, KEY_RUN);
  int nargs = 0;
  if (takes_arguments(co)) {
    push_ctx(co, run);
    nargs = 1 + (lean ? 0 : push_args(co, r));
  }
  if (!lean) lua_remove(co, -(nargs + 2));  /* the spec */

  mb_event ev = mb_event_make(MB_EV_STARTED, job->id);
  ev.job = job;
  ev.run_id = run->id;
  ev.scheduled_time = fire->scheduled;
  ev.start_time = run->started;
  ev.attempt = fire->attempt;
  ev.manual = fire->manual;
  /* A listener may cancel the run it hears of: end it, do not start it. */
  run->busy = true;
  mb_sched_emit(r->sched, &ev);
  run->busy = false;
  if (run->cancel_requested) {
    lua_settop(co, 0);
    end_run(run, ENDED_CANCELLED, NULL, NULL, run->cancel_reason);
    return;
  }
  resume(run, nargs);
}

static void overlap_event(mb_runner *r, mb_job *job, const mb_fire *fire,
                          int kind, const char *reason) {
  mb_event ev = mb_event_make(kind, job->id);
  ev.scheduled_time = fire->scheduled;
  ev.attempt = fire->attempt;
  ev.manual = fire->manual;
  ev.reason = reason;
  mb_sched_emit(r->sched, &ev);
}

static void buffer_fire(mb_job *job, const mb_fire *fire) {
  if (job->nbuffered == job->buffer_cap) {
    job->buffer_cap = job->buffer_cap ? 2 * job->buffer_cap : 4;
    job->buffer = mb_xrealloc(job->buffer,
                              job->buffer_cap * sizeof *job->buffer);
  }
  job->buffer[job->nbuffered++] = *fire;
}

static mb_run *oldest_run(mb_runner *r, mb_job *job) {
  mb_run *oldest = NULL;
  for (mb_run *run = r->runs; run; run = run->next)
    if (run->job == job && !run->ending && !run->cancel_requested)
      oldest = run;  /* the list is newest first */
  return oldest;
}

void mb_runner_fire(mb_runner *r, mb_job *job, const mb_fire *fire) {
  const mb_job_policy *p = job->policy;
  if (job->removed || mb_sched_stopped(r->sched)) return;
  if (p->overlap != MB_OVERLAP_ALLOW_ALL && job->running >= p->max_instances) {
    char reason[96];
    snprintf(reason, sizeof reason, "max_instances (%u) reached",
             p->max_instances);
    switch (p->overlap) {
    case MB_OVERLAP_BUFFER_ONE:
      if (job->nbuffered == 0) {
        buffer_fire(job, fire);
        overlap_event(r, job, fire, MB_EV_BUFFERED, reason);
      } else {
        overlap_event(r, job, fire, MB_EV_SKIPPED,
                      "max_instances reached and a fire is already buffered");
      }
      return;
    case MB_OVERLAP_BUFFER_ALL:
      if (job->nbuffered < p->max_buffered) {
        buffer_fire(job, fire);
        overlap_event(r, job, fire, MB_EV_BUFFERED, reason);
      } else {
        snprintf(reason, sizeof reason, "max_instances reached and the "
                 "buffer is full (%u)", p->max_buffered);
        overlap_event(r, job, fire, MB_EV_SKIPPED, reason);
      }
      return;
    case MB_OVERLAP_CANCEL_OTHER: {
      mb_run *old = oldest_run(r, job);
      if (old) {
        end_run(old, ENDED_CANCELLED, NULL, NULL,
                "replaced by a newer fire (overlap = cancel_other)");
        /* Its listeners may have removed the job or shut down. */
        if (job->removed || mb_sched_stopped(r->sched)) return;
        /* A run whose code is executing ends only when it returns. Its
         * listeners may have changed the policy (p may be gone). */
        if (job->running >= job->policy->max_instances) {
          overlap_event(r, job, fire, MB_EV_SKIPPED, reason);
          return;
        }
      }
      break;
    }
    default:
      overlap_event(r, job, fire, MB_EV_SKIPPED, reason);
      return;
    }
  }
  start_run(r, job, fire);
}

static mb_run *first_to_cancel(mb_runner *r, mb_job *job) {
  for (mb_run *run = r->runs; run; run = run->next)
    if ((!job || run->job == job) && !run->ending && !run->cancel_requested)
      return run;
  return NULL;
}

void mb_runner_cancel(mb_runner *r, mb_job *job, const char *reason) {
  /* Rescan from the head each time: ending one run may end others. */
  for (mb_run *run; (run = first_to_cancel(r, job));)
    end_run(run, ENDED_CANCELLED, NULL, NULL, reason);
}

uint64_t mb_runner_free(mb_runner *r) {
  if (!r) return 0;
  r->on_empty = NULL;
  mb_runner_cancel(r, NULL, "the scheduler closed");
  uint64_t last = r->last_id;
  while (r->nspare) mb_unref(r->L, r->spare[--r->nspare].ref);
  /* A ctx kept past the scheduler reads its facts still; its state is
   * then a table of its own (ctx_index's runner becomes NULL). */
  lua_rawgeti(r->L, LUA_REGISTRYINDEX, r->ctx_meta);
  lua_getfield(r->L, -1, "__index");
  lua_pushlightuserdata(r->L, NULL);
  lua_setupvalue(r->L, -2, 1);
  lua_pop(r->L, 2);
  luaL_unref(r->L, LUA_REGISTRYINDEX, r->ctx_meta);
  for (int k = 0; k < KEY_COUNT; k++)
    luaL_unref(r->L, LUA_REGISTRYINDEX, r->keys[k]);
  free(r);
  return last;
}
