/* run.c: runs as coroutines. Only mb_run_resume calls lua_resume, and
 * only from loop callbacks; ending a run never resumes it, so a job's
 * own pcall cannot catch its cancellation. */
#include "run.h"

#include <lauxlib.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "tz.h"

struct mb_run {
  mb_runner *runner;
  mb_job *job;
  lua_State *co;
  int co_ref;
  uint64_t id;
  mb_time scheduled, started, started_mono;
  int attempt;
  mb_timer sleep_timer;
  mb_wait_cancel cancel;  /* non-NULL while the run waits */
  void *wait;
  mb_run *next, **prevp;
};

struct mb_runner {
  lua_State *L;
  mb_sched *sched;
  mb_run *runs;
  size_t active;
};

static long live_refs;

int mb_ref(lua_State *L) {
  live_refs++;
  return luaL_ref(L, LUA_REGISTRYINDEX);
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

mb_sched *mb_run_sched(const mb_run *run) { return run->runner->sched; }
mb_clock *mb_run_clock(const mb_run *run) {
  return mb_sched_clock(run->runner->sched);
}

mb_runner *mb_runner_new(lua_State *L, mb_sched *sched) {
  mb_runner *r = mb_xcalloc(1, sizeof *r);
  r->L = L;
  r->sched = sched;
  return r;
}

size_t mb_runner_active(const mb_runner *r) { return r->active; }

/* ---- ending ---- */

enum { ENDED_OK, ENDED_ERROR, ENDED_CANCELLED };

static void end_run(mb_run *run, int how, const char *error,
                    const char *traceback) {
  mb_runner *r = run->runner;
  mb_clock *clock = mb_sched_clock(r->sched);
  if (run->cancel) {
    mb_wait_cancel cancel = run->cancel;
    run->cancel = NULL;
    cancel(run, run->wait);
  }
  mb_timer_stop(clock, &run->sleep_timer);
  mb_time took = mb_clock_mono(clock) - run->started_mono;
  static const char *const status[] = {"success", "error", "cancelled"};
  mb_log_field f[] = {
    MB_LS("job", run->job->id), MB_LI("run", run->id),
    MB_LS("status", status[how]), MB_LD("duration", took),
    MB_LS("error", error), MB_LS("traceback", traceback),
  };
  size_t nf = how == ENDED_ERROR ? 6 : 4;
  mb_log(how == ENDED_ERROR ? MB_LOG_ERROR : MB_LOG_INFO,
         how == ENDED_ERROR ? "run failed" : "run finished", f, nf);
  /* Closing the thread runs the job's pending to-be-closed variables. */
  *extra(run->co) = NULL;
  lua_resetthread(run->co);
  mb_unref(r->L, run->co_ref);
  *run->prevp = run->next;
  if (run->next) run->next->prevp = run->prevp;
  r->active--;
  run->job->running--;
  mb_job_unref(run->job);
  free(run);
}

static void resume(mb_run *run, int nargs) {
  lua_State *co = run->co;
  int nres = 0;
  int rc = lua_resume(co, NULL, nargs, &nres);
  if (rc == LUA_YIELD) {
    if (run->cancel) return;
    lua_pop(co, nres);
    end_run(run, ENDED_ERROR,
            "the job yielded to the scheduler directly; wait with the "
            "moonbeat stdlib (moonbeat.time.sleep, ...) instead",
            NULL);
    return;
  }
  if (rc == LUA_OK) {
    lua_pop(co, nres);
    end_run(run, ENDED_OK, NULL, NULL);
    return;
  }
  const char *msg = lua_tostring(co, -1);
  if (!msg) msg = luaL_typename(co, -1);
  luaL_traceback(co, co, NULL, 0);
  end_run(run, ENDED_ERROR, msg, lua_tostring(co, -1));
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
  free(f);
  lua_settop(L, 2);
}

/* ctx.log.info(msg, fields): upvalue 1 is ctx, 2 the level. */
static int ctx_log(lua_State *L) {
  lua_getfield(L, lua_upvalueindex(1), "job_id");
  lua_getfield(L, lua_upvalueindex(1), "run_id");
  const char *job = lua_tostring(L, -2);
  lua_Integer run = lua_tointeger(L, -1);
  /* The job id string stays alive in ctx while we log. */
  lua_pop(L, 2);
  mb_lua_log(L, (int)lua_tointeger(L, lua_upvalueindex(2)), job, run);
  return 0;
}

static int ctx_index(lua_State *L) {
  if (strcmp(luaL_checkstring(L, 2), "log") != 0) return 0;
  lua_createtable(L, 0, 4);
  for (int i = 0; i < 4; i++) {
    lua_pushvalue(L, 1);
    lua_pushinteger(L, MB_LOG_DEBUG + i);
    lua_pushcclosure(L, ctx_log, 2);
    lua_setfield(L, -2, log_levels[i]);
  }
  lua_pushvalue(L, -1);
  lua_setfield(L, 1, "log");
  return 1;
}

static void push_ctx(lua_State *co, mb_run *run) {
  lua_createtable(co, 0, 6);
  lua_pushstring(co, run->job->id);
  lua_setfield(co, -2, "job_id");
  lua_pushinteger(co, (lua_Integer)run->id);
  lua_setfield(co, -2, "run_id");
  lua_pushnumber(co, (double)run->scheduled / 1e6);
  lua_setfield(co, -2, "scheduled_time");
  lua_pushinteger(co, run->attempt);
  lua_setfield(co, -2, "attempt");
  if (luaL_newmetatable(co, "moonbeat.ctx")) {
    lua_pushcfunction(co, ctx_index);
    lua_setfield(co, -2, "__index");
  }
  lua_setmetatable(co, -2);
}

/* ---- starting ---- */

void mb_runner_fire(mb_runner *r, mb_job *job, mb_time scheduled) {
  static uint64_t next_id = 1;
  lua_State *L = r->L;
  mb_clock *clock = mb_sched_clock(r->sched);
  mb_run *run = mb_xcalloc(1, sizeof *run);
  run->runner = r;
  run->job = job;
  run->id = next_id++;
  run->scheduled = scheduled;
  run->started = mb_clock_now(clock);
  run->started_mono = mb_clock_mono(clock);
  run->attempt = 1;
  mb_timer_init(&run->sleep_timer, on_sleep_done, run);
  mb_job_ref(job);
  job->running++;
  run->co = lua_newthread(L);
  run->co_ref = mb_ref(L);
  *extra(run->co) = run;
  run->next = r->runs;
  run->prevp = &r->runs;
  if (r->runs) r->runs->prevp = &run->next;
  r->runs = run;
  r->active++;

  lua_State *co = run->co;
  lua_rawgeti(co, LUA_REGISTRYINDEX, job->lua_ref);
  lua_getfield(co, -1, "run");
  push_ctx(co, run);
  int nargs = 1;
  if (lua_getfield(co, -3, "args") == LUA_TTABLE) {
    lua_getfield(co, -1, "n");
    int n = (int)lua_tointeger(co, -1);
    lua_pop(co, 1);
    luaL_checkstack(co, n + 2, "too many job arguments");
    for (int i = 1; i <= n; i++) lua_rawgeti(co, -i, i);
    /* [spec, fn, ctx, args, a1..an]: drop args. */
    lua_remove(co, -(n + 1));
    nargs += n;
  } else {
    lua_pop(co, 1);
  }
  if (lua_getfield(co, -(nargs + 2), "kwargs") == LUA_TTABLE)
    nargs++;
  else
    lua_pop(co, 1);
  lua_remove(co, -(nargs + 2));  /* the spec */

  char when[64];
  mb_time_format(scheduled, mb_tz_utc(), when, sizeof when);
  mb_log_field f[] = {
    MB_LS("job", job->id), MB_LI("run", run->id), MB_LS("scheduled", when),
    MB_LD("late", run->started - scheduled),
  };
  mb_log(MB_LOG_INFO, "run started", f, 4);
  resume(run, nargs);
}

void mb_runner_cancel(mb_runner *r, mb_job *job) {
  for (mb_run *run = r->runs, *next; run; run = next) {
    next = run->next;
    if (!job || run->job == job) end_run(run, ENDED_CANCELLED, NULL, NULL);
  }
}

void mb_runner_free(mb_runner *r) {
  if (!r) return;
  mb_runner_cancel(r, NULL);
  free(r);
}
