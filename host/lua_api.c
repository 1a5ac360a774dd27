/* lua_api.c: the moonbeat.core module. A scheduler userdata owns a
 * clock, a scheduler core and a runner (its state: lua_host.h); a job
 * userdata holds a counted reference to its job so that Lua's GC and the
 * core never race. sched:restore lives in restore.c. */
#include "lua_api.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef MB_LUA_MIMALLOC
#include <mimalloc.h>
#endif

#include "control_lua.h"
#include "embedded.h"
#include "event.h"
#include "exec.h"
#include "fs.h"
#include "gc.h"
#include "handles.h"
#include "http.h"
#include "job_spec.h"
#include "log.h"
#include "loop.h"
#include "lua_host.h"
#include "repl.h"
#include "run.h"
#include "sched.h"
#include "share.h"
#include "spec_text.h"
#include "sqlite.h"
#include "store.h"
#include "trigger.h"
#include "tz.h"
#include "udata.h"
#include "watch.h"

#define SCHED_MT "moonbeat.scheduler"
#define JOB_MT "moonbeat.job"
#define TRIGGER_MT "moonbeat.trigger"
#define JOB_METHODS "moonbeat.job.methods"
#define WATCH_MT "moonbeat.watch"


/* ---- the Lua allocator: a limit on job code ---- */

static size_t lua_mem_used;
static size_t lua_mem_limit = (size_t)1 << 30;
/* > 0 while the host calls into Lua (events, listeners, retry_on, the
 * log sink): that is not the job's memory to refuse, and not a moment
 * to close a scheduler in. */
static int host_work;

void mb_host_work_begin(void) { host_work++; }
void mb_host_work_end(void) { host_work--; }

/* On mimalloc (Makefile): blocks the size of Lua's objects, freed in
 * bursts by the collector, cost it a fraction of what they cost glibc.
 * Built with a sanitizer, the C library's, which the sanitizer sees. */
#ifdef MB_LUA_MIMALLOC
#define lua_block_new mi_malloc
#define lua_block_resize mi_realloc
#define lua_block_free mi_free
#else
#define lua_block_new malloc
#define lua_block_resize realloc
#define lua_block_free free
#endif

/* Growth is refused only while a run's code executes, so a greedy job
 * fails alone and the host itself never meets a failed allocation. */
static void *lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    lua_block_free(ptr);
    lua_mem_used -= old;
    return NULL;
  }
  if (nsize > old && lua_mem_limit &&
      lua_mem_used + (nsize - old) > lua_mem_limit && !host_work &&
      mb_run_executing())
    return NULL;
  /* Most blocks are new: allocating spares the way through resizing. */
  void *p = ptr ? lua_block_resize(ptr, nsize) : lua_block_new(nsize);
  if (!p) return NULL;
  lua_mem_used = lua_mem_used - old + nsize;
  return p;
}

lua_State *mb_lua_newstate(void) { return lua_newstate(lua_alloc, NULL); }

void mb_lua_memory_message(char *buf, size_t n) {
  snprintf(buf, n, "memory limit exceeded: job code may use %.1f MiB of Lua "
           "memory in all (--memory-limit)",
           (double)lua_mem_limit / (1024.0 * 1024.0));
}

/* The newest open scheduler: whose clock `core.now` reads outside runs. */
static host *current;
static int log_sink_ref = LUA_NOREF;
static lua_State *log_sink_L;

static mb_time to_usec(double seconds) { return (mb_time)llround(seconds * 1e6); }
static double to_seconds(mb_time t) { return (double)t / 1e6; }

static void push_time(lua_State *L, mb_time t) {
  if (t == MB_TIME_NONE)
    lua_pushnil(L);
  else
    lua_pushnumber(L, to_seconds(t));
}

/* ---- spec tables shared by restored jobs (lua_host.h) ---- */

void host_release_shared(lua_State *L, struct mb_shared_spec *spec) {
  if (--spec->users > 0) return;
  if (spec->in) mb_share_remove(spec->in, &spec->node);
  mb_unref(L, spec->ref);
  free(spec);
}

static uint64_t address_hash(const void *p) {
  uint64_t h = (uint64_t)(uintptr_t)p * 0x9e3779b97f4a7c15ULL;
  return h ^ (h >> 32);  /* the table takes the low bits */
}

static bool same_fn(const mb_share_node *node, const void *fn) {
  return ((const struct mb_shared_spec *)node)->fn == fn;
}

/* The run function on top of the stack (popped), shared by the lean
 * jobs given it: held while the entry is, its address stays its own. */
static struct mb_shared_spec *hold_run(host *h, lua_State *L) {
  const void *fn = lua_topointer(L, -1);
  uint64_t hash = address_hash(fn);
  struct mb_shared_spec *run = (struct mb_shared_spec *)mb_share_find(
      &h->lean_runs, hash, same_fn, fn);
  if (run) {
    lua_pop(L, 1);
    run->users++;
    return run;
  }
  int ref = mb_ref(L);  /* first: it may raise, and nothing is held yet */
  run = mb_xcalloc(1, sizeof *run);
  run->in = &h->lean_runs;
  run->fn = fn;
  run->ref = ref;
  run->users = 1;
  mb_share_add(&h->lean_runs, &run->node, hash);
  return run;
}

/* A copy of the table at idx, with nested tables copied too (a spec
 * holds plain data and functions: no cycles), but for a spec's policy,
 * which is replaced and never changed in place. */
void host_push_copy(lua_State *L, int idx, int nrec) {
  idx = lua_absindex(L, idx);
  lua_createtable(L, 0, nrec);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    /* Each level takes four more slots; a spec's data may nest deeply,
     * and this runs from loop callbacks, where nothing has grown the
     * stack. Past what the stack can hold, the rest is shared. */
    if (lua_type(L, -1) == LUA_TTABLE &&
        !(lua_type(L, -2) == LUA_TSTRING &&
          strcmp(lua_tostring(L, -2), "policy") == 0) &&
        lua_checkstack(L, 4)) {
      host_push_copy(L, -1, 0);
      lua_replace(L, -2);
    }
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
}

/* Give job a spec table of its own when it shares one: a copy with its
 * id and name. */
void host_own_spec(host *h, mb_job *job) {
  struct mb_shared_spec *spec = job->lua_shared;
  /* A lean job's shared function is all it needs to run. */
  if (!spec || job->lua_lean) return;
  lua_State *L = h->L;
  /* Only memory can be short here: the mb_x allocators' answer. */
  if (!lua_checkstack(L, 8)) mb_out_of_memory(0);
  /* Host work, as job code may ask for it (job_spec): the memory limit
   * must not raise between the job's ref and unref. */
  mb_host_work_begin();
  mb_job_ref(job);
  lua_rawgeti(L, LUA_REGISTRYINDEX, spec->ref);
  host_push_copy(L, -1, 12);
  lua_pushstring(L, job->id);
  lua_setfield(L, -2, "id");
  lua_pushstring(L, job->name);
  lua_setfield(L, -2, "name");
  /* A finalizer the copy's allocations ran may have removed the job,
   * which let go of the shared spec already. */
  if (job->lua_shared == spec) {
    job->lua_ref = mb_ref(L);
    job->lua_shared = NULL;
    host_release_shared(L, spec);
  } else {
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  mb_job_unref(job);
  mb_host_work_end();
}

/* ---- hooks from the scheduler core ---- */

static void hook_fire(mb_sched *s, mb_job *job, const mb_fire *fire,
                      void *data) {
  (void)s;
  host *h = data;
  host_own_spec(h, job);
  mb_runner_fire(h->runner, job, fire);
}

static void hook_removed(mb_sched *s, mb_job *job, void *data) {
  (void)s;
  host *h = data;
  /* A job that is done stays on record, so a restart does not run its
   * date again. */
  if (job->done && h->store) host_mark_dirty(h, job);
  if (job->lua_shared)
    host_release_shared(h->L, job->lua_shared);
  else
    mb_unref(h->L, job->lua_ref);
  job->lua_shared = NULL;
  job->lua_ref = LUA_NOREF;
  if (job->rec.has_handle) mb_handles_removed(h->handles, h->L, job);
}

static void set_time_field(lua_State *L, const char *key, mb_time t) {
  if (t == MB_TIME_NONE) return;
  push_time(L, t);
  lua_setfield(L, -2, key);
}

static void set_string_field(lua_State *L, const char *key, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, key);
}

static void push_event(lua_State *L, const mb_event *ev) {
  lua_createtable(L, 0, 12);
  set_string_field(L, "kind", mb_event_name(ev->kind));
  set_string_field(L, "job_id", ev->job_id);
  if (ev->run_id) {
    lua_pushinteger(L, (lua_Integer)ev->run_id);
    lua_setfield(L, -2, "run_id");
  }
  set_time_field(L, "scheduled_time", ev->scheduled_time);
  set_time_field(L, "start_time", ev->start_time);
  if (ev->duration >= 0) {
    lua_pushnumber(L, to_seconds(ev->duration));
    lua_setfield(L, -2, "duration");
  }
  if (ev->attempt) {
    lua_pushinteger(L, ev->attempt);
    lua_setfield(L, -2, "attempt");
  }
  set_string_field(L, "error", ev->error);
  set_string_field(L, "traceback", ev->traceback);
  set_time_field(L, "next_time", ev->next_time);
  set_string_field(L, "reason", ev->reason);
  char desc[512];
  set_string_field(L, "trigger", mb_event_detail(ev, desc, sizeof desc));
}

/* ---- the store: what events leave behind ---- */

/* Job rows are written lazily. A run's record is the truth about its
 * fire: a run that started or succeeded, a fire missed or skipped,
 * changes nothing in the job's row that the history does not hold (its
 * counters, last run and schedule follow from the runs after the row's
 * checkpoint, and restore folds them back in). Such a job is only marked
 * stale, and stale rows are written every SWEEP_EVERY, before their
 * history is pruned, and on close. Anything else (a failure and its
 * retry, a pause, ctx.state, a run asked for) saves the row with the
 * turn's other writes, so that it is never apart from them. */
#define SWEEP_EVERY (10 * MB_SEC)
enum { SWEEP_BATCH = 1000 };

static void list_add(mb_job ***list, size_t *len, size_t *cap, mb_job *job) {
  if (*len == *cap) {
    *cap = *cap ? 2 * *cap : 64;
    *list = mb_xrealloc(*list, *cap * sizeof **list);
  }
  mb_job_ref(job);
  (*list)[(*len)++] = job;
}

/* Whether job's row is still its to write: a job removed is not, but a
 * job that is done stays on record as done (saved in the turn it is
 * done, so that a new job of its id writes after it), unless its id
 * went to a new job already. */
static bool owns_row(host *h, mb_job *job) {
  return !job->removed ||
         (job->done && !mb_sched_get_job(h->sched, job->id));
}

void host_touch(host *h, mb_job *job, bool must_save) {
  if (!owns_row(h, job)) return;
  if (must_save) job->rec.must_save = true;
  if (job->rec.dirty) return;
  job->rec.dirty = true;
  list_add(&h->dirty, &h->ndirty, &h->dirty_cap, job);
}

/* Its row is to be written with this turn's writes. */
void host_mark_dirty(host *h, mb_job *job) { host_touch(h, job, true); }

/* A trigger's identity across restarts: its description and zone,
 * worked out once per (shared) trigger: every save needs it. */
const char *host_trigger_identity(mb_job *job) {
  return mb_trigger_identity(job->trigger);
}

static long long last_run_id(const host *h) {
  return h->runner ? (long long)mb_runner_last_id(h->runner)
                   : h->closed_last_id;
}

static void save_job(host *h, mb_job *job) {
  const char *trigger = host_trigger_identity(job);
  const struct mb_job_record *rec = &job->rec;
  char *shared_text =
    rec->spec_shared ? mb_spec_shared_text(rec->spec_shared, job->id) : NULL;
  mb_job_state st = {
    .job_id = job->id,
    .trigger = trigger,
    .next_fire = job->next_fire,
    .last_fire = job->last_fire,
    .paused = job->paused,
    .pause_note = rec->pause_note,
    .retry_due = job->retry_due,
    .retry_attempt = job->retry_fire.attempt,
    .retry_scheduled = job->retry_fire.scheduled,
    .ok = rec->ok, .failed = rec->failed, .timed_out = rec->timed_out,
    .missed = rec->missed, .skipped = rec->skipped,
    .cancelled = rec->cancelled,
    .last_status = rec->last_status,
    .last_start = rec->last_start,
    .last_duration = rec->last_duration,
    .last_error = rec->last_error,
    .state = rec->state,
    .spec = shared_text ? shared_text : rec->spec,
    /* Every run recorded so far is in rec: this job's runs with ids up
     * to the latest taken are all held by this row (one in flight ends
     * with a save of its own, see record_event). */
    .checkpoint = last_run_id(h),
  };
  mb_store_save_job(h->store, &st);
  free(shared_text);
  job->rec.checkpoint = st.checkpoint;
  job->rec.must_save = false;
  job->rec.stale = false;
}

void host_set_string(char **slot, const char *v) {
  free(*slot);
  *slot = v ? mb_xstrdup(v) : NULL;
}

/* A run status as the static name it is kept as: a job's last status
 * is one of a few names, set at every run, not a copy of its own. A
 * text this version never writes (a hand-edited store) reads as
 * "unknown". */
const char *host_status_static(const char *text) {
  static const char *const names[] = {"success", "error", "timeout",
                                      "cancelled", "missed", "skipped",
                                      "interrupted", "running"};
  if (!text) return NULL;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(text, names[i]) == 0) return names[i];
  return "unknown";
}

static const char *status_name(int kind) {
  switch (kind) {
  case MB_EV_EXECUTED: return "success";
  case MB_EV_ERROR: return "error";
  case MB_EV_TIMEOUT: return "timeout";
  case MB_EV_CANCELLED: return "cancelled";
  case MB_EV_MISSED: return "missed";
  case MB_EV_SKIPPED: return "skipped";
  default: return NULL;
  }
}

static void record_event(host *h, const mb_event *ev) {
  if (ev->kind == MB_EV_REMOVED) {
    /* A job that is done stays on record as done, so that a restart
     * does not run its date again; a replaced one is saved anew. */
    if (!ev->reason) mb_store_delete_job(h->store, ev->job_id);
    return;
  }
  /* A run's job while it is in the scheduler is the job of its id;
   * once removed, the id may belong to a new one. */
  mb_job *job = ev->job && !ev->job->removed
                    ? ev->job
                    : mb_sched_get_job(h->sched, ev->job_id);
  const char *status = status_name(ev->kind);
  long long run_id = 0;
  if (ev->kind == MB_EV_STARTED || status) {
    mb_run_record run = {
      .run_id = ev->run_id ? (long long)ev->run_id
                           : (long long)mb_runner_take_id(h->runner),
      .job_id = ev->job_id,
      .scheduled = ev->scheduled_time,
      .started = ev->start_time,
      .finished = ev->start_time != MB_TIME_NONE && ev->duration >= 0
                      ? ev->start_time + ev->duration
                      : MB_TIME_NONE,
      .attempt = ev->attempt ? ev->attempt : 1,
      .status = status ? status : "running",
      .error = ev->kind == MB_EV_ERROR || ev->kind == MB_EV_TIMEOUT
                   ? ev->error
                   : ev->reason,
      .traceback = ev->traceback,
      .log_tail = ev->log_tail,
      .host = h->hostname,
      .pid = h->pid,
    };
    mb_store_save_run(h->store, &run);
    run_id = run.run_id;
  }
  if (!job) return;
  /* Adding or pausing the job restore puts back leaves its row as it
   * was: restore_one saves it if restoring changed the row. */
  if ((ev->kind == MB_EV_ADDED || ev->kind == MB_EV_PAUSED) &&
      h->restoring_id && strcmp(ev->job_id, h->restoring_id) == 0)
    return;
  if (status) job->rec.unpruned++;
  struct mb_job_record *rec = &job->rec;
  switch (ev->kind) {
  case MB_EV_EXECUTED: rec->ok++; break;
  case MB_EV_ERROR: rec->failed++; break;
  case MB_EV_TIMEOUT: rec->timed_out++; break;
  case MB_EV_CANCELLED: rec->cancelled++; break;
  case MB_EV_MISSED: rec->missed++; break;
  case MB_EV_SKIPPED: rec->skipped++; break;
  default: break;
  }
  if (status && ev->run_id) {
    rec->last_status = status;
    rec->last_start = ev->start_time;
    rec->last_duration = ev->duration;
    host_set_string(&rec->last_error, ev->error);
  }
  /* What a restore can fold back in from the history: a first attempt
   * at a trigger's fire that started or succeeded, or a fire missed or
   * skipped, recorded after the row's checkpoint. */
  bool foldable = ev->kind == MB_EV_STARTED || ev->kind == MB_EV_EXECUTED ||
                  ev->kind == MB_EV_MISSED || ev->kind == MB_EV_SKIPPED;
  host_touch(h, job, !foldable || ev->manual || ev->attempt > 1 ||
                    run_id <= rec->checkpoint);
}

static void report_store_error(host *h, const mb_err *err) {
  /* Once per distinct failure: a full disk fails every turn. */
  if (strcmp(h->last_store_error, err->msg) == 0) return;
  snprintf(h->last_store_error, sizeof h->last_store_error, "%s", err->msg);
  mb_log_field f[] = {MB_LS("error", err->msg)};
  mb_log(MB_LOG_ERROR, "store write failed; retrying", f, 1);
}

/* Bring stale rows up to date, at most `most` of them this turn (a
 * sweep of many jobs goes over several turns, so that it never holds
 * the loop for long). Once none is left, every row holds every run up
 * to where the sweep began, and the store says so: a restore folds in
 * only what comes after. */
static void sweep(host *h, size_t most) {
  while (h->nstale && most--) {
    mb_job *job = h->stale[--h->nstale];
    if (job->rec.stale && !job->removed) save_job(h, job);
    job->rec.stale = false;
    mb_job_unref(job);
  }
  if (h->nstale) return;
  h->sweeping = false;
  h->settled = h->sweep_from < h->settle_cap ? h->sweep_from : h->settle_cap;
  mb_store_settle(h->store, h->settled);
}

/* Commit what this turn wrote, then prune a little. */
void host_flush(host *h) {
  if (!h->store) return;
  size_t n = h->ndirty;
  for (size_t i = 0; i < n; i++) {
    mb_job *job = h->dirty[i];
    job->rec.dirty = false;
    if (!owns_row(h, job)) continue;
    if (job->rec.must_save) {
      save_job(h, job);
    } else if (!job->rec.stale) {
      job->rec.stale = true;
      list_add(&h->stale, &h->nstale, &h->stale_cap, job);
    }
  }
  mb_time now = mb_clock_now(h->clock);
  mb_time now_mono = mb_clock_mono(h->clock);
  bool age_prune_all = h->retention.max_age > 0 &&
                       now - h->last_age_prune > 3600 * MB_SEC;
  if (!h->sweeping && (h->final_flush || age_prune_all ||
                      ((h->nstale || last_run_id(h) > h->settled) &&
                       now_mono - h->last_sweep >= SWEEP_EVERY))) {
    h->sweeping = true;
    h->sweep_from = last_run_id(h);
    h->last_sweep = now_mono;
  }
  /* Before history of every job is pruned by age, every row holds it. */
  if (h->sweeping)
    sweep(h, h->final_flush || age_prune_all ? SIZE_MAX : SWEEP_BATCH);
  if (!mb_store_pending(h->store)) goto done;
  /* History beyond retention goes in small steps, for the jobs that
   * just ran; history of removed jobs ages out hourly. */
  {
    mb_prune *items = mb_xmalloc((n + 1) * sizeof *items);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
      mb_job *job = h->dirty[i];
      mb_retention r = h->retention;
      if (job->policy->keep_runs > 0) r.keep_runs = job->policy->keep_runs;
      if (job->policy->keep_for > 0) r.max_age = job->policy->keep_for;
      /* A job's history is trimmed once a tenth of what it keeps has
       * come in since the last trim, not after every run. */
      int every = r.keep_runs > 10 ? r.keep_runs / 10 : 1;
      bool by_age = r.max_age > 0 && job->rec.unpruned > 0 &&
                    now - job->rec.pruned_at >= r.max_age / 10;
      if (job->removed || (job->rec.unpruned < every && !by_age)) continue;
      job->rec.unpruned = 0;
      job->rec.pruned_at = now;
      /* What is pruned must be held by the row first. */
      if (job->rec.stale) save_job(h, job);
      items[k++] = (mb_prune){job->id, r};
    }
    if (age_prune_all) {
      h->last_age_prune = now;
      items[k++] = (mb_prune){NULL, {0, h->retention.max_age}};
    }
    mb_store_prune(h->store, items, k, now, 500);
    free(items);
  }
  mb_err err = {0};
  /* All of a turn's writes in one transaction: a run's record and the
   * job state that says its fire is done must never be apart, or a
   * crash between them would lose the one or repeat the other. Under
   * the virtual clock the flush waits for the writer, so that specs see
   * a turn's writes (and their failures) when the turn is over. */
  bool wait = mb_clock_kind(h->clock) == MB_CLOCK_VIRTUAL;
  if (mb_store_flush(h->store, wait, &err) < 0) {
    report_store_error(h, &err);
  } else if (h->last_store_error[0]) {
    h->last_store_error[0] = '\0';
    mb_log(MB_LOG_INFO, "store writes resumed", NULL, 0);
  }
done:
  for (size_t i = 0; i < n; i++) mb_job_unref(h->dirty[i]);
  /* Jobs marked while this flush ran (listeners) wait for the next. */
  if (n && h->ndirty > n)
    memmove(h->dirty, h->dirty + n, (h->ndirty - n) * sizeof *h->dirty);
  h->ndirty -= n;
}

static void on_turn_prepare(uv_prepare_t *p) {
  host *h = p->data;
  host_flush(h);
  mb_gc_pace(&h->gc, h->L);
}

/* The runner's question after each run: keep ctx.state. */
static const char *save_state(mb_job *job, void *data) {
  host *h = data;
  static char error[256];
  /* A lean job has no spec to keep a state in: none was asked for. */
  if (h->state_ref == LUA_NOREF || job->lua_ref == LUA_NOREF ||
      job->lua_lean)
    return NULL;
  bool saved_empty = !job->rec.state || strcmp(job->rec.state, "{}") == 0;
  if (!job->rec.has_state && saved_empty) return NULL;
  lua_State *L = h->L;
  /* Most jobs never touch ctx.state: an empty table that was empty
   * before needs no saving. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, job->lua_ref);
  lua_getfield(L, -1, "state");
  bool empty = !lua_istable(L, -1);
  if (!empty) {
    lua_pushnil(L);
    empty = lua_next(L, -2) == 0;
    if (!empty) lua_pop(L, 2);
  }
  lua_pop(L, 2);
  if (empty && saved_empty) return NULL;
  mb_host_work_begin();
  const char *result = NULL;
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->state_ref);
  lua_rawgeti(L, LUA_REGISTRYINDEX, job->lua_ref);
  lua_getfield(L, -1, "state");
  lua_remove(L, -2);
  if (lua_pcall(L, 1, 2, 0) != LUA_OK) {
    snprintf(error, sizeof error, "ctx.state: %s", lua_tostring(L, -1));
    result = error;
    lua_pop(L, 1);
  } else if (lua_isnil(L, -2)) {
    snprintf(error, sizeof error, "%s", lua_tostring(L, -1));
    result = error;
    lua_pop(L, 2);
  } else {
    const char *text = lua_tostring(L, -2);
    if (!job->rec.state || strcmp(job->rec.state, text) != 0) {
      host_set_string(&job->rec.state, text);
      host_mark_dirty(h, job);
    }
    lua_pop(L, 2);
  }
  mb_host_work_end();
  return result;
}

static void hook_event(mb_sched *s, const mb_event *ev, void *data) {
  (void)s;
  host *h = data;
  /* A job the restore puts back is counted in the start's summary line
   * (restored=N): one line each would be a million lines for a million
   * stored jobs. */
  if (h->restoring_id && ev->kind == MB_EV_ADDED)
    mb_event_log_at(ev, MB_LOG_DEBUG);
  else
    mb_event_log(ev);
  if (h->store) record_event(h, ev);
  if (h->event_ref == LUA_NOREF || h->closed) return;
  lua_State *L = h->L;
  mb_host_work_begin();
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->event_ref);
  push_event(L, ev);
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    mb_log_field f[] = {MB_LS("error", lua_tostring(L, -1))};
    mb_log(MB_LOG_ERROR, "event handler failed", f, 1);
    lua_pop(L, 1);
  }
  mb_host_work_end();
}

/* ---- scheduler userdata ---- */

/* The scheduler's userdata: its host, NULL once closed. */
typedef struct sched_ud {
  const void *mark;  /* &sched_mark (udata.h) */
  host *h;
} sched_ud;

/* Marks are not const: constants may share an address. */
static char sched_mark;

static sched_ud *check_sched(lua_State *L, int idx) {
  return mb_udata_check(L, idx, &sched_mark, sizeof(sched_ud), SCHED_MT);
}

host *host_check(lua_State *L, int idx) {
  sched_ud *u = check_sched(L, idx);
  if (!u->h || u->h->closed)
    luaL_error(L, "the scheduler is closed");
  return u->h;
}

uv_loop_t *mb_lua_check_loop(lua_State *L, int idx) {
  return host_check(L, idx)->loop;
}

static mb_time host_now(void *data) { return mb_clock_now(((host *)data)->clock); }

static int core_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "clock");
  const char *kind = luaL_optstring(L, -1, "real");
  bool virtual = strcmp(kind, "virtual") == 0;
  if (!virtual && strcmp(kind, "real") != 0)
    return luaL_error(L, "clock: expected 'real' or 'virtual', got '%s'",
                      kind);
  lua_getfield(L, 1, "start");
  mb_time start = to_usec(luaL_optnumber(L, -1, 1767225600.0));
  lua_getfield(L, 1, "timezone");
  const mb_tz *default_tz = mb_tz_local();
  mb_err tz_err;
  if (!lua_isnil(L, -1) &&
      mb_tz_get(luaL_checkstring(L, -1), &default_tz, &tz_err) < 0)
    return luaL_error(L, "%s", tz_err.msg);
  lua_pop(L, 3);
  mb_store *store = NULL;
  if (lua_getfield(L, 1, "db") == LUA_TSTRING) {
    mb_err store_err = {0};
    if (mb_store_open(lua_tostring(L, -1), &store, &store_err) < 0) {
      lua_pushnil(L);
      lua_pushstring(L, store_err.msg);
      return 2;
    }
  }
  lua_pop(L, 1);

  host *h = mb_xcalloc(1, sizeof *h);
  /* Runs are made from the main thread: the caller may be a coroutine
   * that does not outlive the scheduler. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  h->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  h->handles = mb_handles_of(L);
  mb_gc_start(&h->gc, h->L);
  h->default_tz = default_tz;
  if (virtual) {
    h->loop = mb_xmalloc(sizeof *h->loop);
    uv_loop_init(h->loop);
    h->own_loop = true;
  } else {
    h->loop = uv_default_loop();
  }
  mb_err err = {0};
  h->clock = mb_clock_new(h->loop, virtual ? MB_CLOCK_VIRTUAL : MB_CLOCK_REAL,
                          start, &err);
  if (!h->clock) {
    if (h->own_loop) {
      uv_loop_close(h->loop);
      free(h->loop);
    }
    free(h);
    return luaL_error(L, "cannot start the clock: %s", err.msg);
  }
  mb_sched_hooks hooks = {hook_fire, hook_removed, hook_event};
  h->event_ref = LUA_NOREF;
  h->sigint_ref = LUA_NOREF;
  h->hup_ref = LUA_NOREF;
  h->state = RUNNING;
  h->shutdown_timeout = 30 * MB_SEC;
  h->sched = mb_sched_new(h->clock, &hooks, h);
  lua_getfield(L, 1, "seed");
  if (lua_isinteger(L, -1))
    mb_sched_seed(h->sched, (uint64_t)lua_tointeger(L, -1));
  lua_pop(L, 1);
  h->runner = mb_runner_new(h->L, h->sched);
  mb_timer_init(&h->shutdown_timer, NULL, h);
  h->state_ref = LUA_NOREF;
  h->retention = (mb_retention){1000, 30 * 86400 * MB_SEC};
  gethostname(h->hostname, sizeof h->hostname - 1);
  h->pid = (long long)getpid();
  h->store = store;
  if (store) {
    mb_runner_set_last_id(h->runner, (uint64_t)mb_store_last_run_id(store));
    h->settled = mb_store_settled(store);
    h->settle_cap = LLONG_MAX;
    h->last_sweep = mb_clock_mono(h->clock);
    mb_runner_on_state(h->runner, save_state, h);
  }
  if (!h->own_loop) {
    uv_prepare_init(h->loop, &h->turn_prepare);
    h->turn_prepare.data = h;
    uv_prepare_start(&h->turn_prepare, on_turn_prepare);
    uv_unref((uv_handle_t *)&h->turn_prepare);
    h->turn_prepare_open = true;
  }
  h->prev_current = current;
  current = h;
  mb_log_set_clock(host_now, h);

  /* User values: the api table (sched:set_api), the job objects'
   * metatable (push_job: cheaper than by name). */
  sched_ud *u = lua_newuserdatauv(L, sizeof *u, 2);
  u->mark = &sched_mark;
  u->h = h;
  luaL_setmetatable(L, SCHED_MT);
  luaL_getmetatable(L, JOB_MT);
  lua_setiuservalue(L, -2, 2);
  return 1;
}

static void on_handle_closed(uv_handle_t *handle) { (void)handle; }

static void detach_watch(struct watch_ud *ud);

static void host_close(host *h) {
  if (h->closed) return;
  h->closed = true;
  mb_unref(h->L, h->event_ref);
  h->event_ref = LUA_NOREF;
  mb_unref(h->L, h->hup_ref);
  h->hup_ref = LUA_NOREF;
  while (h->watches) detach_watch(h->watches);
  mb_timer_stop(h->clock, &h->shutdown_timer);
  /* Ending the runs may start and cancel buffered ones: their ids too. */
  h->closed_last_id = (long long)mb_runner_free(h->runner);
  h->runner = NULL;
  h->final_flush = true;
  host_flush(h);
  mb_unref(h->L, h->state_ref);
  h->state_ref = LUA_NOREF;
  if (h->turn_prepare_open) {
    uv_close((uv_handle_t *)&h->turn_prepare, on_handle_closed);
  }
  mb_sched_free(h->sched);
  mb_store_close(h->store);
  h->store = NULL;
  free(h->dirty);
  free(h->stale);
  mb_clock_close(h->clock);
  mb_http_loop_close(h->loop);
  mb_sqlite_loop_drain(h->loop);
  if (h->own_loop) {
    /* Waits the runs abandoned (a killed child not yet reaped, a file
     * request still in the thread pool) end soon, and must end before
     * the loop can close. */
    uv_run(h->loop, UV_RUN_DEFAULT);
    uv_loop_close(h->loop);
    free(h->loop);
  } else {
    uv_run(h->loop, UV_RUN_NOWAIT);
  }
  /* Unlink from the chain of current schedulers. */
  for (host **p = &current; *p; p = &(*p)->prev_current) {
    if (*p == h) {
      *p = h->prev_current;
      break;
    }
  }
  if (current)
    mb_log_set_clock(host_now, current);
  else
    mb_log_set_clock(NULL, NULL);
}

/* Closing tears down the clock and the runs: never from under code that
 * one of them is running. */
static const char *close_refused(const host *h) {
  if (mb_run_executing())
    return "close: not from inside a job's run; use scheduler.shutdown";
  if (host_work)
    return "close: not from inside a listener or callback";
  if (h->running || mb_clock_busy(h->clock))
    return "close: the scheduler is running; shut it down first";
  return NULL;
}

static int sched_close(lua_State *L) {
  sched_ud *u = check_sched(L, 1);
  if (u->h) {
    const char *refused = close_refused(u->h);
    if (refused) return luaL_error(L, "%s", refused);
    host_close(u->h);
    free(u->h);
    u->h = NULL;
  }
  return 0;
}

/* Collected while it cannot be closed safely (a run of another
 * scheduler allocating, say): it stays open, and lua_close collects it
 * again at exit. */
static int sched_gc(lua_State *L) {
  sched_ud *u = check_sched(L, 1);
  if (u->h && !close_refused(u->h)) {
    host_close(u->h);
    free(u->h);
    u->h = NULL;
  }
  return 0;
}

static int sched_set_api(lua_State *L) {
  host_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_setiuservalue(L, 1, 1);
  return 0;
}

/* ---- triggers ---- */

typedef struct trigger_ud {
  mb_trigger *t;
} trigger_ud;

static mb_time opt_time_field(lua_State *L, int idx, const char *name) {
  lua_getfield(L, idx, name);
  mb_time t = lua_isnil(L, -1) ? MB_TIME_NONE : to_usec(lua_tonumber(L, -1));
  lua_pop(L, 1);
  return t;
}

static int fail3(lua_State *L, const char *field, const char *msg) {
  lua_pushnil(L);
  if (field)
    lua_pushstring(L, field);
  else
    lua_pushboolean(L, 0);
  lua_pushstring(L, msg);
  return 3;
}

static int opt_choice(lua_State *L, int idx, const char *key,
                      const char *const names[], int dflt);

/* Messages from cron and trigger read "field: problem"; Lua wants the
 * field apart so it can say where the field sits. */
static int fail_split(lua_State *L, const char *msg) {
  const char *colon = strstr(msg, ": ");
  if (!colon || strcspn(msg, " ") < (size_t)(colon - msg))
    return fail3(L, NULL, msg);
  lua_pushlstring(L, msg, (size_t)(colon - msg));
  return fail3(L, lua_tostring(L, -1), colon + 2);
}

/* sched:new_trigger{kind=, timezone=, run_date=, interval=, start_date=,
 * end_date=, fields={...} | crontab=} -> trigger | nil, field, msg */
static int sched_new_trigger(lua_State *L) {
  host *h = host_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  mb_trigger_spec spec = {0};
  mb_err err = {0};
  lua_getfield(L, 2, "kind");
  const char *kind = luaL_checkstring(L, -1);
  spec.kind = strcmp(kind, "date") == 0       ? MB_TRIGGER_DATE
              : strcmp(kind, "interval") == 0 ? MB_TRIGGER_INTERVAL
                                              : MB_TRIGGER_CRON;
  lua_getfield(L, 2, "timezone");
  const char *tzname = lua_tostring(L, -1);
  spec.tz = h->default_tz;
  spec.tz_given = tzname != NULL;
  if (tzname && mb_tz_get(tzname, &spec.tz, &err) < 0)
    return fail3(L, "timezone", err.msg);
  spec.run_date = opt_time_field(L, 2, "run_date");
  spec.start = opt_time_field(L, 2, "start_date");
  spec.end = opt_time_field(L, 2, "end_date");
  lua_getfield(L, 2, "interval");
  spec.interval = to_usec(lua_tonumber(L, -1));
  if (spec.kind == MB_TRIGGER_CRON) {
    static const char *const gaps[] = {"run", "skip", NULL};
    static const char *const repeats[] = {"first", "last", "both", NULL};
    int gap = opt_choice(L, 2, "dst_gap", gaps, MB_DST_GAP_RUN);
    int repeat = opt_choice(L, 2, "dst_repeat", repeats, MB_DST_REPEAT_FIRST);
    if (lua_getfield(L, 2, "crontab") == LUA_TSTRING) {
      spec.cron = mb_cron_shared_crontab(lua_tostring(L, -1), gap, repeat,
                                         &err);
    } else {
      const char *fields[MB_CRON_NFIELDS] = {0};
      lua_getfield(L, 2, "fields");
      for (int i = 0; i < MB_CRON_NFIELDS; i++) {
        lua_getfield(L, -1, mb_cron_field_name(i));
        fields[i] = lua_tostring(L, -1);  /* kept alive by the table */
        lua_pop(L, 1);
      }
      spec.cron = mb_cron_shared_fields(fields, gap, repeat, &err);
    }
    if (!spec.cron) return fail_split(L, err.msg);
  }
  mb_trigger *t = mb_trigger_new(&spec, mb_clock_now(h->clock), &err);
  if (!t) return fail_split(L, err.msg);
  trigger_ud *ud = lua_newuserdatauv(L, sizeof *ud, 0);
  ud->t = t;
  luaL_setmetatable(L, TRIGGER_MT);
  return 1;
}

static int trigger_gc(lua_State *L) {
  trigger_ud *ud = luaL_checkudata(L, 1, TRIGGER_MT);
  mb_trigger_free(ud->t);
  ud->t = NULL;
  return 0;
}

static void push_description(lua_State *L, const mb_trigger *t) {
  char buf[512];
  mb_trigger_describe(t, buf, sizeof buf);
  lua_pushstring(L, buf);
}

static int trigger_tostring(lua_State *L) {
  trigger_ud *ud = luaL_checkudata(L, 1, TRIGGER_MT);
  if (!ud->t) return lua_pushliteral(L, "trigger (used)"), 1;
  push_description(L, ud->t);
  return 1;
}

/* trigger:next_fires(n, after) -> list of times, computed as a fresh
 * schedule would (previews for `check`, `next` and the REPL). */
static int trigger_next_fires(lua_State *L) {
  trigger_ud *ud = luaL_checkudata(L, 1, TRIGGER_MT);
  if (!ud->t) return luaL_error(L, "trigger already in use by a job");
  lua_Integer n = luaL_checkinteger(L, 2);
  mb_time now = to_usec(luaL_checknumber(L, 3));
  lua_createtable(L, (int)(n > 0 ? n : 0), 0);
  mb_time prev = MB_TIME_NONE;
  for (lua_Integer i = 1; i <= n; i++) {
    mb_time t = mb_trigger_next(ud->t, prev, now);
    if (t == MB_TIME_NONE) break;
    push_time(L, t);
    lua_rawseti(L, -2, i);
    prev = t;
  }
  return 1;
}

mb_trigger *host_take_trigger(lua_State *L, int idx) {
  trigger_ud *ud = luaL_checkudata(L, idx, TRIGGER_MT);
  if (!ud->t) luaL_error(L, "trigger already in use by a job");
  mb_trigger *t = ud->t;
  ud->t = NULL;
  return t;
}

/* ---- jobs ---- */

typedef struct job_ud {
  const void *mark;  /* &job_mark (udata.h) */
  mb_job *job;
} job_ud;

static char job_mark;

static job_ud *test_job(lua_State *L, int idx) {
  return mb_udata_test(L, idx, &job_mark, sizeof(job_ud));
}

static job_ud *check_job(lua_State *L, int idx) {
  return mb_udata_check(L, idx, &job_mark, sizeof(job_ud), JOB_MT);
}

/* A job's handle: the one it has, or a new one (see handles.h). */
static void push_job(lua_State *L, host *h, int sched_idx, mb_job *job) {
  if (mb_handles_push(h->handles, L, job)) return;
  sched_idx = lua_absindex(L, sched_idx);
  /* Held, and host work so that the memory limit does not raise before
   * it is let go: the allocation may run a finalizer that removes the
   * job. (One that asks for the job's handle meanwhile makes a second
   * one; both stay valid.) */
  mb_host_work_begin();
  mb_job_ref(job);
  job_ud *ud = lua_newuserdatauv(L, sizeof *ud, 1);
  ud->mark = &job_mark;
  ud->job = job;
  /* Checked: the debug library can replace a user value. */
  if (lua_getiuservalue(L, sched_idx, 2) != LUA_TTABLE) {
    lua_pop(L, 1);
    luaL_getmetatable(L, JOB_MT);
  }
  lua_setmetatable(L, -2);
  lua_pushvalue(L, sched_idx);
  lua_setiuservalue(L, -2, 1);
  mb_handles_add(h->handles, L, job);
  mb_job_unref(job);
  mb_host_work_end();
}

static mb_job *find_job(lua_State *L, host *h, int idx) {
  if (lua_type(L, idx) == LUA_TUSERDATA) {
    job_ud *ud = check_job(L, idx);
    if (ud->job->removed || ud->job->sched != h->sched) return NULL;
    return ud->job;
  }
  return mb_sched_get_job(h->sched, luaL_checkstring(L, idx));
}

static int no_job(lua_State *L, int idx) {
  lua_pushnil(L);
  if (lua_type(L, idx) == LUA_TUSERDATA) {
    job_ud *ud = lua_touserdata(L, idx);
    lua_pushfstring(L, "job '%s' was removed", ud->job->id);
  } else {
    lua_pushfstring(L, "no job with id '%s'", lua_tostring(L, idx));
  }
  return 2;
}

static mb_time opt_duration(lua_State *L, int idx, const char *key,
                            mb_time dflt) {
  lua_getfield(L, idx, key);
  mb_time t = lua_isnumber(L, -1) ? to_usec(lua_tonumber(L, -1)) : dflt;
  lua_pop(L, 1);
  return t;
}

static int opt_choice(lua_State *L, int idx, const char *key,
                      const char *const names[], int dflt) {
  lua_getfield(L, idx, key);
  const char *v = lua_tostring(L, -1);
  int choice = dflt;
  for (int i = 0; v && names[i]; i++)
    if (strcmp(names[i], v) == 0) choice = i;
  lua_pop(L, 1);
  return choice;
}

static lua_Integer opt_int(lua_State *L, int idx, const char *key,
                           lua_Integer dflt) {
  lua_getfield(L, idx, key);
  lua_Integer v = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : dflt;
  lua_pop(L, 1);
  return v;
}

/* The policy table lua/validate.lua makes (durations in seconds) to C. */
void host_read_policy(lua_State *L, int idx, mb_job_policy *p) {
  static const char *const overlaps[] = {"skip", "buffer_one", "buffer_all",
                                         "cancel_other", "allow_all", NULL};
  static const char *const backoffs[] = {"fixed", "linear", "exponential",
                                         NULL};
  mb_job_policy_default(p);
  if (!lua_istable(L, idx)) return;
  p->timeout = opt_duration(L, idx, "timeout", 0);
  p->max_instances = (unsigned)opt_int(L, idx, "max_instances", 1);
  p->overlap = opt_choice(L, idx, "overlap", overlaps, MB_OVERLAP_SKIP);
  p->max_buffered = (unsigned)opt_int(L, idx, "max_buffered", 100);
  p->misfire_grace = opt_duration(L, idx, "misfire_grace_time", MB_TIME_NONE);
  lua_getfield(L, idx, "coalesce");
  p->coalesce = lua_isnil(L, -1) || lua_toboolean(L, -1);
  lua_pop(L, 1);
  p->jitter = opt_duration(L, idx, "jitter", 0);
  p->retry_attempts = (int)opt_int(L, idx, "retry_attempts", 1);
  p->retry_backoff = opt_choice(L, idx, "retry_backoff", backoffs,
                                MB_BACKOFF_EXPONENTIAL);
  p->retry_delay = opt_duration(L, idx, "retry_delay", MB_SEC);
  p->retry_max_delay = opt_duration(L, idx, "retry_max_delay", 0);
  lua_getfield(L, idx, "retry_jitter");
  p->retry_jitter = lua_tonumber(L, -1);
  lua_pop(L, 1);
  p->keep_runs = (int)opt_int(L, idx, "keep_runs", 0);
  p->keep_for = opt_duration(L, idx, "keep_for", 0);
}

/* sched:add_job(spec): spec is validated and normalised by lua/, with
 * trigger a trigger userdata; the table is kept as the job's Lua side. */
static int sched_add_job(lua_State *L) {
  host *h = host_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_settop(L, 2);
  lua_getfield(L, 2, "id");
  lua_getfield(L, 2, "name");
  lua_getfield(L, 2, "file");
  lua_getfield(L, 2, "replace_existing");
  lua_getfield(L, 2, "trigger");
  lua_getfield(L, 2, "paused");
  lua_getfield(L, 2, "policy");
  const char *id = luaL_checkstring(L, 3);
  const char *name = lua_tostring(L, 4);
  const char *file = lua_tostring(L, 5);
  bool replace = lua_toboolean(L, 6);
  mb_trigger *t = host_take_trigger(L, 7);
  /* The job holds the trigger now; its emptied userdata is no use. */
  lua_pushnil(L);
  lua_setfield(L, 2, "trigger");
  bool paused = lua_toboolean(L, 8);
  mb_job_policy policy;
  host_read_policy(L, 9, &policy);
  mb_job *job;
  mb_err err = {0};
  /* The spec must be the job's before the added event reaches Lua. */
  lua_pushvalue(L, 2);
  mb_job_lua lua = {.ref = mb_ref(L)};
  if (mb_sched_add_job(h->sched, id, name, file, t, &policy, replace, paused,
                       &lua, &job, &err) < 0) {
    mb_unref(L, lua.ref);
    lua_pushnil(L);
    lua_pushstring(L, err.msg);
    return 2;
  }
  /* Its history's age clock starts now: pruning a job by age at its
   * first run would search its history for nothing. */
  job->rec.pruned_at = mb_clock_now(h->clock);
  /* A replaced job's ctx.state comes in its spec (lua/scheduler.lua). */
  if (lua_getfield(L, 2, "state") == LUA_TTABLE) job->rec.has_state = true;
  lua_pop(L, 1);
  push_job(L, h, 1, job);
  mb_job_unref(job);
  return 1;
}

/* sched:add_plain(spec) -> job | false | nil, message. add_job's fast
 * path for a spec of the plain shape (job_spec.h), added at run time
 * outside a job file with its run a function: false when spec is not
 * plain, for lua/validate.lua to read in full. The job's Lua side is
 * then { run = fn } alone; sched:job_spec fills in the rest when asked. */
static int sched_add_plain(lua_State *L) {
  host *h = host_check(L, 1);
  lua_settop(L, 2);
  mb_plain_spec spec;
  if (!mb_job_spec_read(L, 2, h->default_tz, &spec)) {
    lua_pushboolean(L, 0);
    return 1;
  }
  mb_sched_prefetch(h->sched, spec.id);
  mb_time now = mb_clock_now(h->clock);
  mb_err err = {0};
  mb_trigger *t = mb_trigger_new(&spec.trigger, now, &err);
  if (!t) {  /* the validator words why */
    lua_pushboolean(L, 0);
    return 1;
  }
  /* The run function is on top: a lean job holds it alone. Host work:
   * a job at its memory limit must not have the registry's growth raise
   * while the trigger is held here. */
  mb_host_work_begin();
  struct mb_shared_spec *run = hold_run(h, L);
  mb_host_work_end();
  mb_job_lua lua = {.ref = run->ref, .lean = true, .shared = run};
  mb_job *job;
  if (mb_sched_add_job(h->sched, spec.id, spec.name, NULL, t, NULL, false,
                       false, &lua, &job, &err) < 0) {
    host_release_shared(L, run);
    lua_pushnil(L);
    lua_pushstring(L, err.msg);
    return 2;
  }
  job->rec.pruned_at = now;
  /* As scheduler.lua does for a job whose run is a function. */
  job->rec.memory_only = true;
  if (h->store) host_mark_dirty(h, job);
  if (mb_log_wanted(MB_LOG_INFO)) {
    mb_log_field f[] = {
      MB_LS("job", job->id),
      MB_LS("reason", "its run is a function; pass a \"module.function\" "
                      "reference to keep it across restarts"),
    };
    mb_log(MB_LOG_INFO, "job kept in memory only", f, 2);
  }
  push_job(L, h, 1, job);
  mb_job_unref(job);
  return 1;
}

static int sched_get_job(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = mb_sched_get_job(h->sched, luaL_checkstring(L, 2));
  if (!job) return 0;
  push_job(L, h, 1, job);
  return 1;
}

static int sched_get_jobs(lua_State *L) {
  host *h = host_check(L, 1);
  size_t n;
  mb_job **jobs = mb_sched_jobs(h->sched, &n);
  /* Held while handles are made: their allocations may run a finalizer
   * that removes jobs further on in the list. Host work, so that the
   * memory limit does not raise before they are let go. */
  mb_host_work_begin();
  for (size_t i = 0; i < n; i++) mb_job_ref(jobs[i]);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    push_job(L, h, 1, jobs[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  for (size_t i = 0; i < n; i++) mb_job_unref(jobs[i]);
  mb_host_work_end();
  free(jobs);
  return 1;
}

static int sched_pause_job(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = find_job(L, h, 2);
  if (!job) return no_job(L, 2);
  host_set_string(&job->rec.pause_note, luaL_optstring(L, 3, NULL));
  mb_sched_pause_job(h->sched, job);
  lua_pushboolean(L, 1);
  return 1;
}

static int sched_resume_job(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = find_job(L, h, 2);
  if (!job) return no_job(L, 2);
  host_set_string(&job->rec.pause_note, NULL);
  mb_sched_resume_job(h->sched, job);
  lua_pushboolean(L, 1);
  return 1;
}

static int sched_remove_job(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = find_job(L, h, 2);
  if (!job) return no_job(L, 2);
  mb_job_ref(job);
  mb_sched_remove_job(h->sched, job);
  mb_job_unref(job);
  lua_pushboolean(L, 1);
  return 1;
}

static int sched_remove_all_jobs(lua_State *L) {
  host *h = host_check(L, 1);
  mb_sched_remove_all_jobs(h->sched);
  return 0;
}

static int sched_run_job(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = find_job(L, h, 2);
  if (!job) return no_job(L, 2);
  if (mb_sched_fire_soon(h->sched, job, NULL) < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "the scheduler is shutting down");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* sched:next_fires(job, n) -> the job's next n fire times: its next run,
 * then its trigger's times after it (without jitter); none when it is
 * paused or done. The REPL's next_runs. */
static int sched_next_fires(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = find_job(L, h, 2);
  if (!job) return no_job(L, 2);
  lua_Integer n = luaL_checkinteger(L, 3);
  lua_newtable(L);
  if (job->paused || job->next_fire == MB_TIME_NONE || n < 1) return 1;
  push_time(L, job->next_fire);
  lua_rawseti(L, -2, 1);
  mb_time now = mb_clock_now(h->clock), prev = job->next_base;
  for (lua_Integer i = 2; i <= n; i++) {
    prev = mb_trigger_next(job->trigger, prev, now);
    if (prev == MB_TIME_NONE) break;
    push_time(L, prev);
    lua_rawseti(L, -2, i);
  }
  return 1;
}

static int sched_reschedule_job(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = find_job(L, h, 2);
  if (!job) return no_job(L, 2);
  mb_sched_reschedule_job(h->sched, job, host_take_trigger(L, 3));
  lua_pushboolean(L, 1);
  return 1;
}

/* sched:set_next_run_time(job, time|nil) */
static int sched_set_next_run_time(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = find_job(L, h, 2);
  if (!job) return no_job(L, 2);
  mb_time t = lua_isnoneornil(L, 3) ? MB_TIME_NONE
                                    : to_usec(luaL_checknumber(L, 3));
  mb_sched_set_next_fire(h->sched, job, t);
  lua_pushboolean(L, 1);
  return 1;
}

/* A lean job's spec made whole (see mb_job_lua): its run function in a
 * table with the fields lua/validate.lua gives a plain spec, from what
 * the job holds. The allocations may run a finalizer that removes the
 * job; its lua_ref is then LUA_NOREF and nothing is made. */
void mb_host_whole_spec(lua_State *L, mb_job *job) {
  if (!job->lua_lean || job->lua_ref == LUA_NOREF) return;
  /* Host work: a run at its memory limit must not have these
   * allocations raise while the caller holds the job. */
  mb_host_work_begin();
  lua_createtable(L, 0, 7);
  lua_rawgeti(L, LUA_REGISTRYINDEX, job->lua_ref);
  lua_setfield(L, -2, "run");
  lua_pushstring(L, job->id);
  lua_setfield(L, -2, "id");
  lua_pushstring(L, job->name);
  lua_setfield(L, -2, "name");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "replace_existing");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "paused");
  lua_createtable(L, 0, 1);
  lua_pushinteger(L, 0);
  lua_setfield(L, -2, "jitter");
  lua_setfield(L, -2, "policy");
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "state");
  if (job->lua_lean && job->lua_ref != LUA_NOREF) {
    struct mb_shared_spec *run = job->lua_shared;
    if (run) {  /* the function stays the others' */
      job->lua_ref = mb_ref(L);
      job->lua_shared = NULL;
      host_release_shared(L, run);
    } else {
      lua_rawseti(L, LUA_REGISTRYINDEX, job->lua_ref);
    }
    job->lua_lean = false;
  } else {
    lua_pop(L, 1);
  }
  mb_host_work_end();
}

/* sched:job_spec(job) -> the job's normalised spec table, to modify. */
static int sched_job_spec(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = find_job(L, h, 2);
  if (!job) return no_job(L, 2);
  /* Held while its spec is made its own and whole: the allocations
   * may run a finalizer that removes it. */
  mb_job_ref(job);
  host_own_spec(h, job);
  mb_host_whole_spec(L, job);
  bool gone = job->lua_ref == LUA_NOREF;
  if (!gone) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, job->lua_ref);
    /* Whoever holds the spec may give it a ctx.state table. */
    job->rec.has_state = true;
  }
  mb_job_unref(job);
  return gone ? no_job(L, 2) : 1;
}

static int sched_rename_job(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = find_job(L, h, 2);
  if (!job) return no_job(L, 2);
  mb_sched_rename_job(job, luaL_checkstring(L, 3));
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- the store from Lua ---- */

static void push_run(lua_State *L, const mb_run_record *r) {
  lua_createtable(L, 0, 12);
  lua_pushinteger(L, r->run_id);
  lua_setfield(L, -2, "run_id");
  set_string_field(L, "job_id", r->job_id);
  set_time_field(L, "scheduled_time", r->scheduled);
  set_time_field(L, "start_time", r->started);
  set_time_field(L, "end_time", r->finished);
  if (r->started != MB_TIME_NONE && r->finished != MB_TIME_NONE) {
    lua_pushnumber(L, to_seconds(r->finished - r->started));
    lua_setfield(L, -2, "duration");
  }
  lua_pushinteger(L, r->attempt);
  lua_setfield(L, -2, "attempt");
  set_string_field(L, "status", r->status);
  set_string_field(L, "error", r->error);
  set_string_field(L, "traceback", r->traceback);
  set_string_field(L, "log", r->log_tail);
  set_string_field(L, "host", r->host);
  lua_pushinteger(L, r->pid);
  lua_setfield(L, -2, "pid");
}

typedef struct run_list {
  lua_State *L;
  lua_Integer n;
} run_list;

static void collect_run(const mb_run_record *r, void *data) {
  run_list *list = data;
  push_run(list->L, r);
  lua_rawseti(list->L, -2, ++list->n);
}

/* sched:get_runs{job_id, status, since, limit} -> runs, newest first */
static int sched_get_runs(lua_State *L) {
  host *h = host_check(L, 1);
  if (!h->store) {
    lua_pushnil(L);
    lua_pushliteral(L, "get_runs: this scheduler keeps no history (no store)");
    return 2;
  }
  mb_run_filter f = {NULL, NULL, MB_TIME_NONE, 100};
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "job_id");
    f.job_id = lua_tostring(L, -1);
    lua_getfield(L, 2, "status");
    f.status = lua_tostring(L, -1);
    lua_getfield(L, 2, "since");
    if (lua_isnumber(L, -1)) f.since = to_usec(lua_tonumber(L, -1));
    lua_getfield(L, 2, "limit");
    if (lua_isinteger(L, -1)) f.limit = (int)lua_tointeger(L, -1);
  }
  /* What this turn wrote is part of the history asked for. */
  host_flush(h);
  lua_newtable(L);
  run_list list = {L, 0};
  mb_err err = {0};
  if (mb_store_query_runs(h->store, &f, collect_run, &list, &err) < 0) {
    lua_pushnil(L);
    lua_pushstring(L, err.msg);
    return 2;
  }
  return 1;
}

/* sched:set_state_codec(fn): fn(state) -> text | nil, message */
static int sched_set_state_codec(lua_State *L) {
  host *h = host_check(L, 1);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2);
  mb_unref(L, h->state_ref);
  h->state_ref = mb_ref(L);
  mb_runner_on_state(h->runner, save_state, h);
  return 0;
}

/* sched:set_retention{runs = N, age = seconds} (0: no limit) */
static int sched_set_retention(lua_State *L) {
  host *h = host_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_getfield(L, 2, "runs");
  if (lua_isinteger(L, -1)) h->retention.keep_runs = (int)lua_tointeger(L, -1);
  lua_getfield(L, 2, "age");
  if (lua_isnumber(L, -1)) h->retention.max_age = to_usec(lua_tonumber(L, -1));
  return 0;
}

/* sched:store_stats() -> {commits, rows, failed_commits, catch_ups,
 * integrity} */
static int sched_store_stats(lua_State *L) {
  host *h = host_check(L, 1);
  if (!h->store) return 0;
  host_flush(h);
  mb_store_counts counts;
  mb_store_get_counts(h->store, &counts);
  lua_createtable(L, 0, 5);
  lua_pushinteger(L, counts.commits);
  lua_setfield(L, -2, "commits");
  lua_pushinteger(L, counts.rows);
  lua_setfield(L, -2, "rows");
  lua_pushinteger(L, counts.failures);
  lua_setfield(L, -2, "failed_commits");
  lua_pushinteger(L, counts.catch_ups);
  lua_setfield(L, -2, "catch_ups");
  char *check = mb_store_check(h->store);
  lua_pushstring(L, check);
  free(check);
  lua_setfield(L, -2, "integrity");
  return 1;
}

/* sched:set_job_spec(job, text | nil, memory_only) */
static int sched_set_job_spec(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = find_job(L, h, 2);
  if (!job) return no_job(L, 2);
  host_set_string(&job->rec.spec, luaL_optstring(L, 3, NULL));
  mb_spec_shared_release(job->rec.spec_shared);
  job->rec.spec_shared = NULL;
  job->rec.memory_only = lua_toboolean(L, 4);
  if (h->store) host_mark_dirty(h, job);
  lua_pushboolean(L, 1);
  return 1;
}

/* sched:store_limit_pages(n): the store behaves as if the disk filled
 * at n pages (0: lifts it). For specs of what a failed write does. */
static int sched_store_limit_pages(lua_State *L) {
  host *h = host_check(L, 1);
  if (!h->store) return luaL_error(L, "store_limit_pages: no store");
  mb_err err = {0};
  if (mb_store_limit_pages(h->store, luaL_checkinteger(L, 2), &err) < 0)
    return luaL_error(L, "%s", err.msg);
  return 0;
}

/* sched:store_set_lag(n): how many writes may wait for the writer before
 * the loop waits for it (0: the default). For specs of that bound. */
static int sched_store_set_lag(lua_State *L) {
  host *h = host_check(L, 1);
  if (!h->store) return luaL_error(L, "store_set_lag: no store");
  lua_Integer ops = luaL_checkinteger(L, 2);
  luaL_argcheck(L, ops >= 0, 2, "a count of writes, 0 or more");
  mb_store_set_lag(h->store, (size_t)ops);
  return 0;
}

/* sched:modified(job): tell the log and listeners the job changed. */
static int sched_modified(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = find_job(L, h, 2);
  if (!job) return no_job(L, 2);
  char desc[512];
  mb_trigger_describe(job->trigger, desc, sizeof desc);
  mb_event ev = mb_event_make(MB_EV_MODIFIED, job->id);
  ev.detail = desc;
  ev.next_time = job->next_fire;
  mb_sched_emit(h->sched, &ev);
  lua_pushboolean(L, 1);
  return 1;
}

/* sched:set_policy(job, policy) */
static int sched_set_policy(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = find_job(L, h, 2);
  if (!job) return no_job(L, 2);
  mb_job_policy p;
  host_read_policy(L, 3, &p);
  mb_sched_set_policy(h->sched, job, &p);
  lua_pushboolean(L, 1);
  return 1;
}

/* Keep the function at index 2 (nil: none) in *ref, dropping the old. */
static void set_handler(lua_State *L, int *ref) {
  mb_unref(L, *ref);
  *ref = LUA_NOREF;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TFUNCTION);
    lua_settop(L, 2);
    *ref = mb_ref(L);
  }
}

static int sched_set_event_handler(lua_State *L) {
  set_handler(L, &host_check(L, 1)->event_ref);
  return 0;
}

/* ---- shutdown ---- */

static void finish_shutdown(host *h) {
  if (h->state == STOPPED) return;
  h->state = STOPPED;
  mb_timer_stop(h->clock, &h->shutdown_timer);
  mb_runner_on_empty(h->runner, NULL, NULL);
  if (h->running) uv_stop(h->loop);
}

static void on_runs_drained(void *data) { finish_shutdown(data); }

static void on_shutdown_timeout(mb_timer *t) {
  host *h = t->data;
  mb_runner_cancel(h->runner, NULL, "the shutdown timeout passed");
  finish_shutdown(h);
}

/* Stop firing; let the runs in flight finish (wait) within timeout,
 * then cancel what is left. */
static void begin_shutdown(host *h, bool wait, mb_time timeout,
                           const char *signal) {
  if (h->state == STOPPED) return;
  if (h->state == RUNNING) {
    h->state = STOPPING;
    mb_sched_stop(h->sched);
    char limit[32];
    mb_log_field f[] = {
      MB_LI("runs", mb_runner_active(h->runner)),
      MB_LS("wait", wait ? mb_duration_format(timeout, limit, sizeof limit)
                         : "no"),
      MB_LS("signal", signal),
    };
    mb_log(MB_LOG_INFO, "scheduler stopping", f, signal ? 3 : 2);
  }
  if (!wait || mb_runner_active(h->runner) == 0) {
    mb_runner_cancel(h->runner, NULL, "the scheduler shut down");
    finish_shutdown(h);
    return;
  }
  mb_runner_on_empty(h->runner, on_runs_drained, h);
  /* Asking again does not push the deadline back. */
  if (!mb_timer_active(&h->shutdown_timer)) {
    h->shutdown_timer.cb = on_shutdown_timeout;
    mb_timer_start(h->clock, &h->shutdown_timer, timeout);
  }
}

/* sched:shutdown{wait = true, timeout = seconds} */
static int sched_shutdown(lua_State *L) {
  host *h = host_check(L, 1);
  bool wait = true;
  mb_time timeout = h->shutdown_timeout;
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "wait");
    if (!lua_isnil(L, -1)) wait = lua_toboolean(L, -1);
    lua_getfield(L, 2, "timeout");
    if (lua_isnumber(L, -1)) timeout = to_usec(lua_tonumber(L, -1));
    lua_pop(L, 2);
  }
  begin_shutdown(h, wait, timeout, NULL);
  return 0;
}

/* sched:state() -> "running" | "stopping" | "stopped" */
static int sched_state(lua_State *L) {
  host *h = host_check(L, 1);
  static const char *const names[] = {"running", "stopping", "stopped"};
  lua_pushstring(L, names[h->state]);
  return 1;
}

static int job_eq(lua_State *L) {
  job_ud *a = test_job(L, 1), *b = test_job(L, 2);
  lua_pushboolean(L, a && b && a->job == b->job);
  return 1;
}

static int job_index(lua_State *L) {
  job_ud *ud = check_job(L, 1);
  mb_job *job = ud->job;
  const char *key = luaL_checkstring(L, 2);
  if (strcmp(key, "id") == 0) {
    lua_pushstring(L, job->id);
  } else if (strcmp(key, "name") == 0) {
    lua_pushstring(L, job->name);
  } else if (strcmp(key, "file") == 0) {
    lua_pushstring(L, job->file);
  } else if (strcmp(key, "next_run_time") == 0) {
    push_time(L, job->next_fire);
  } else if (strcmp(key, "pause_note") == 0) {
    lua_pushstring(L, job->rec.pause_note);
  } else if (strcmp(key, "persistent") == 0) {
    lua_pushboolean(L, !job->rec.memory_only);
  } else if (strcmp(key, "saved_state") == 0) {
    lua_pushstring(L, job->rec.state);
  } else if (strcmp(key, "counts") == 0) {
    const struct mb_job_record *r = &job->rec;
    lua_createtable(L, 0, 6);
    lua_pushinteger(L, r->ok);
    lua_setfield(L, -2, "ok");
    lua_pushinteger(L, r->failed);
    lua_setfield(L, -2, "failed");
    lua_pushinteger(L, r->timed_out);
    lua_setfield(L, -2, "timed_out");
    lua_pushinteger(L, r->missed);
    lua_setfield(L, -2, "missed");
    lua_pushinteger(L, r->skipped);
    lua_setfield(L, -2, "skipped");
    lua_pushinteger(L, r->cancelled);
    lua_setfield(L, -2, "cancelled");
  } else if (strcmp(key, "last_run") == 0) {
    const struct mb_job_record *r = &job->rec;
    if (!r->last_status) return lua_pushnil(L), 1;
    lua_createtable(L, 0, 4);
    set_string_field(L, "status", r->last_status);
    set_time_field(L, "start_time", r->last_start);
    if (r->last_duration != MB_TIME_NONE) {
      lua_pushnumber(L, to_seconds(r->last_duration));
      lua_setfield(L, -2, "duration");
    }
    set_string_field(L, "error", r->last_error);
  } else if (strcmp(key, "next_retry_time") == 0) {
    push_time(L, job->retry_due);
  } else if (strcmp(key, "paused") == 0) {
    lua_pushboolean(L, job->paused);
  } else if (strcmp(key, "removed") == 0) {
    lua_pushboolean(L, job->removed);
  } else if (strcmp(key, "running") == 0) {
    lua_pushinteger(L, job->running);
  } else if (strcmp(key, "trigger") == 0) {
    push_description(L, job->trigger);
  } else if (strcmp(key, "scheduler") == 0) {
    /* Checked: the debug library can replace a handle's user value. */
    lua_getiuservalue(L, 1, 1);
    if (mb_udata_test(L, -1, &sched_mark, sizeof(sched_ud)))
      lua_getiuservalue(L, -1, 1);
    else
      lua_pushnil(L);
  } else {
    lua_getfield(L, LUA_REGISTRYINDEX, JOB_METHODS);
    if (lua_istable(L, -1))
      lua_getfield(L, -1, key);
    else
      lua_pushnil(L);
  }
  return 1;
}

static int job_tostring(lua_State *L) {
  job_ud *ud = check_job(L, 1);
  char desc[512], next[64];
  mb_trigger_describe(ud->job->trigger, desc, sizeof desc);
  if (ud->job->removed)
    snprintf(next, sizeof next, "removed");
  else if (ud->job->paused)
    snprintf(next, sizeof next, "paused");
  else if (ud->job->next_fire == MB_TIME_NONE)
    snprintf(next, sizeof next, "done");
  else
    mb_time_format(ud->job->next_fire, mb_trigger_tz(ud->job->trigger), next,
                   sizeof next);
  lua_pushfstring(L, "job '%s' (trigger: %s, next run at: %s)", ud->job->id,
                  desc, next);
  return 1;
}

static int core_set_job_methods(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, JOB_METHODS);
  return 0;
}

/* ---- time and the loop ---- */

static int sched_now(lua_State *L) {
  host *h = host_check(L, 1);
  push_time(L, mb_clock_now(h->clock));
  return 1;
}

static int sched_advance(lua_State *L) {
  host *h = host_check(L, 1);
  double secs = luaL_checknumber(L, 2);
  luaL_argcheck(L, secs >= 0, 2, "cannot advance by a negative duration");
  if (mb_clock_kind(h->clock) != MB_CLOCK_VIRTUAL)
    return luaL_error(L, "advance: the scheduler runs on the real clock");
  if (mb_run_current(L))
    return luaL_error(L, "advance: a job's run cannot advance the clock");
  if (mb_clock_advance(h->clock, to_usec(secs)) < 0)
    return luaL_error(L, "advance: the clock is already advancing");
  host_flush(h);
  return 0;
}

static int sched_stall(lua_State *L) {
  host *h = host_check(L, 1);
  double secs = luaL_checknumber(L, 2);
  luaL_argcheck(L, secs >= 0, 2, "cannot stall for a negative duration");
  if (mb_clock_stall(h->clock, to_usec(secs)) < 0)
    return luaL_error(L, "stall: the scheduler runs on the real clock");
  return 0;
}

static int sched_jump(lua_State *L) {
  host *h = host_check(L, 1);
  if (mb_clock_jump(h->clock, to_usec(luaL_checknumber(L, 2))) < 0)
    return luaL_error(L, "jump: the scheduler runs on the real clock");
  return 0;
}

/* on_sigint (the REPL's, while it owns the terminal) may take SIGINT
 * for itself by returning true. */
static bool sigint_taken(host *h) {
  if (h->sigint_ref == LUA_NOREF) return false;
  mb_host_work_begin();
  lua_rawgeti(h->L, LUA_REGISTRYINDEX, h->sigint_ref);
  bool taken = lua_pcall(h->L, 0, 1, 0) == LUA_OK && lua_toboolean(h->L, -1);
  lua_pop(h->L, 1);
  mb_host_work_end();
  return taken;
}

/* SIGHUP asks for a rescan: the handler sched:set_hup_handler gave. */
static void on_hangup(host *h) {
  if (h->hup_ref == LUA_NOREF) {
    mb_log(MB_LOG_INFO, "SIGHUP: nothing to reload", NULL, 0);
    return;
  }
  lua_State *L = h->L;
  mb_host_work_begin();
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->hup_ref);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    mb_log_field f[] = {MB_LS("error", lua_tostring(L, -1))};
    mb_log(MB_LOG_ERROR, "SIGHUP handler failed", f, 1);
    lua_pop(L, 1);
  }
  mb_host_work_end();
}

static void on_signal(uv_signal_t *sig, int signum) {
  host *h = sig->data;
  if (signum == SIGHUP) {
    on_hangup(h);
    return;
  }
  const char *name = signum == SIGINT ? "SIGINT" : "SIGTERM";
  if (signum == SIGINT && sigint_taken(h)) return;
  if (++h->signals_received > 1) {
    /* A second signal: the operator does not want to wait. */
    mb_log_field f[] = {MB_LS("signal", name),
                        MB_LI("runs", mb_runner_active(h->runner))};
    mb_log(MB_LOG_WARN, "second signal: exiting at once", f, 2);
    _exit(1);
  }
  h->stop_signal = signum;
  begin_shutdown(h, true, h->shutdown_timeout, name);
}

/* sched:run{shutdown_timeout = seconds, on_sigint = fn} -> name of the
 * signal that stopped it, or nil when shutdown() or stop() did. Runs the
 * loop until then; SIGINT and SIGTERM shut down gracefully (unless
 * on_sigint() returns true for a SIGINT), SIGHUP calls the handler set
 * with sched:set_hup_handler. */
static int sched_run(lua_State *L) {
  host *h = host_check(L, 1);
  static bool loop_running;
  if (h->running || loop_running)
    return luaL_error(L, "run: a scheduler is already running");
  if (mb_run_current(L)) return luaL_error(L, "run: not from a job's run");
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "shutdown_timeout");
    if (lua_isnumber(L, -1)) h->shutdown_timeout = to_usec(lua_tonumber(L, -1));
    lua_pop(L, 1);
    if (lua_getfield(L, 2, "on_sigint") == LUA_TFUNCTION)
      h->sigint_ref = mb_ref(L);
    else
      lua_pop(L, 1);
  }
  static const int signums[] = {SIGINT, SIGTERM, SIGHUP};
  for (int i = 0; i < 3; i++) {
    uv_signal_init(h->loop, &h->signals[i]);
    h->signals[i].data = h;
    uv_signal_start(&h->signals[i], on_signal, signums[i]);
  }
  h->running = loop_running = true;
  h->stop_signal = 0;
  if (h->state != STOPPED) uv_run(h->loop, UV_RUN_DEFAULT);
  h->running = loop_running = false;
  mb_unref(L, h->sigint_ref);
  h->sigint_ref = LUA_NOREF;
  for (int i = 0; i < 3; i++)
    uv_close((uv_handle_t *)&h->signals[i], on_handle_closed);
  uv_run(h->loop, UV_RUN_NOWAIT);
  if (h->stop_signal == SIGINT) lua_pushliteral(L, "SIGINT");
  else if (h->stop_signal == SIGTERM) lua_pushliteral(L, "SIGTERM");
  else lua_pushnil(L);
  return 1;
}

static void on_poll_guard(uv_timer_t *t) { (void)t; }

/* sched:poll(max_seconds): wait, for real, until some I/O the loop watches
 * is ready (or max_seconds pass), and run its callbacks. Virtual time
 * stands still: specs use it to let a child process or a socket answer,
 * never to wait for a schedule. */
static int sched_poll(lua_State *L) {
  host *h = host_check(L, 1);
  double max = luaL_optnumber(L, 2, 1.0);
  if (h->running) return luaL_error(L, "poll: the scheduler is running");
  if (mb_run_current(L)) return luaL_error(L, "poll: not from a job's run");
  uv_timer_t guard;
  uv_timer_init(h->loop, &guard);
  uv_timer_start(&guard, on_poll_guard, (uint64_t)(max * 1000), 0);
  uv_run(h->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&guard, NULL);
  uv_run(h->loop, UV_RUN_NOWAIT);
  return 0;
}

static int sched_stop(lua_State *L) {
  host *h = host_check(L, 1);
  uv_stop(h->loop);
  return 0;
}

/* sched:stats() -> {jobs, runs, timers, wakeups, young_collections,
 * major_collections}: what is alive, for leak checks and the status
 * command, and what the loop's turns did. */
static int sched_stats(lua_State *L) {
  host *h = host_check(L, 1);
  lua_createtable(L, 0, 7);
  lua_pushinteger(L, (lua_Integer)mb_sched_job_count(h->sched));
  lua_setfield(L, -2, "jobs");
  lua_pushinteger(L, (lua_Integer)mb_runner_active(h->runner));
  lua_setfield(L, -2, "runs");
  lua_pushinteger(L, (lua_Integer)mb_clock_active_timers(h->clock));
  lua_setfield(L, -2, "timers");
  lua_pushinteger(L, (lua_Integer)mb_clock_wakeups(h->clock));
  lua_setfield(L, -2, "wakeups");
  lua_pushinteger(L, h->gc.young);
  lua_setfield(L, -2, "young_collections");
  lua_pushinteger(L, h->gc.major);
  lua_setfield(L, -2, "major_collections");
  lua_pushinteger(L, (lua_Integer)mb_sched_index_bytes(h->sched));
  lua_setfield(L, -2, "index_bytes");
  return 1;
}

/* sched:timezone() -> the zone triggers use when they name none. */
static int sched_timezone(lua_State *L) {
  host *h = host_check(L, 1);
  lua_pushstring(L, mb_tz_name(h->default_tz));
  return 1;
}

/* ---- watching the job directory (lua/reload.lua) ---- */

/* A watch's Lua side: the scheduler it runs on and the function its
 * batches go to. The scheduler closes the watches left open with it. */
typedef struct watch_ud {
  mb_watch *w;
  host *h;  /* NULL once closed */
  int fn_ref;
  struct watch_ud *next;
} watch_ud;

static void detach_watch(watch_ud *ud) {
  host *h = ud->h;
  if (!h) return;
  for (watch_ud **p = &h->watches; *p; p = &(*p)->next) {
    if (*p == ud) {
      *p = ud->next;
      break;
    }
  }
  mb_watch_close(ud->w);
  mb_unref(h->L, ud->fn_ref);
  ud->w = NULL;
  ud->h = NULL;
  ud->fn_ref = LUA_NOREF;
}

static void on_watch_batch(mb_watch *w, const char *const *paths, size_t n,
                           void *data) {
  (void)w;
  watch_ud *ud = data;
  lua_State *L = ud->h->L;
  mb_host_work_begin();
  lua_rawgeti(L, LUA_REGISTRYINDEX, ud->fn_ref);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, paths[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
    mb_log_field f[] = {MB_LS("error", lua_tostring(L, -1))};
    mb_log(MB_LOG_ERROR, "directory watch handler failed", f, 1);
    lua_pop(L, 1);
  }
  mb_host_work_end();
}

/* sched:watch(dir, fn) -> watch | nil, message: fn(paths) gets each
 * batch of changed paths under dir (see host/watch.h), from the loop.
 * The watch stops when closed, collected, or the scheduler closes. */
static int sched_watch(lua_State *L) {
  host *h = host_check(L, 1);
  const char *dir = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TFUNCTION);
  watch_ud *ud = lua_newuserdatauv(L, sizeof *ud, 0);
  *ud = (watch_ud){NULL, NULL, LUA_NOREF, NULL};
  luaL_setmetatable(L, WATCH_MT);
  mb_err err = {0};
  ud->w = mb_watch_new(h->loop, dir, on_watch_batch, ud, &err);
  if (!ud->w) {
    lua_pushnil(L);
    lua_pushstring(L, err.msg);
    return 2;
  }
  lua_pushvalue(L, 3);
  ud->fn_ref = mb_ref(L);
  ud->h = h;
  ud->next = h->watches;
  h->watches = ud;
  return 1;
}

static int watch_close(lua_State *L) {
  detach_watch(luaL_checkudata(L, 1, WATCH_MT));
  return 0;
}

/* watch:dirs() -> how many directories it watches (0 once closed). */
static int watch_dirs(lua_State *L) {
  watch_ud *ud = luaL_checkudata(L, 1, WATCH_MT);
  lua_pushinteger(L, ud->w ? (lua_Integer)mb_watch_dirs(ud->w) : 0);
  return 1;
}

/* sched:set_hup_handler(fn | nil): what SIGHUP does under sched:run. */
static int sched_set_hup_handler(lua_State *L) {
  set_handler(L, &host_check(L, 1)->hup_ref);
  return 0;
}

/* sched:set_job_file(job, file): a job that moved to another file. */
static int sched_set_job_file(lua_State *L) {
  host *h = host_check(L, 1);
  mb_job *job = find_job(L, h, 2);
  if (!job) return no_job(L, 2);
  mb_sched_set_file(job, luaL_optstring(L, 3, NULL));
  lua_pushboolean(L, 1);
  return 1;
}

/* core.job_files(dir) -> sorted paths relative to dir | nil, message */
static int core_job_files(lua_State *L) {
  char **paths;
  size_t n;
  mb_err err = {0};
  if (mb_watch_list(luaL_checkstring(L, 1), &paths, &n, &err) < 0) {
    lua_pushnil(L);
    lua_pushstring(L, err.msg);
    return 2;
  }
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, paths[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
    free(paths[i]);
  }
  free(paths);
  return 1;
}

/* ---- module functions ---- */

static int core_sleep(lua_State *L) {
  double secs = luaL_checknumber(L, 1);
  luaL_argcheck(L, secs >= 0, 1, "cannot sleep a negative duration");
  return mb_run_sleep(L, to_usec(secs));
}

static mb_clock *clock_for(lua_State *L) {
  mb_run *run = mb_run_current(L);
  if (run) return mb_run_clock(run);
  return current ? current->clock : NULL;
}

static int core_now(lua_State *L) {
  mb_clock *c = clock_for(L);
  struct timespec ts;
  if (c) {
    push_time(L, mb_clock_now(c));
  } else {
    clock_gettime(CLOCK_REALTIME, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
  }
  return 1;
}

static int core_monotonic(lua_State *L) {
  mb_clock *c = clock_for(L);
  struct timespec ts;
  if (c) {
    push_time(L, mb_clock_mono(c));
  } else {
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec / 1e9);
  }
  return 1;
}

static const mb_tz *check_tz(lua_State *L, int idx) {
  const mb_tz *tz = mb_tz_utc();
  mb_err err;
  if (!lua_isnoneornil(L, idx) &&
      mb_tz_get(luaL_checkstring(L, idx), &tz, &err) < 0)
    luaL_error(L, "%s", err.msg);
  return tz;
}

/* core.parse_time(text, zone) -> seconds | nil, message */
static int core_parse_time(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  const mb_tz *tz = check_tz(L, 2);
  mb_time t;
  mb_err err;
  if (mb_time_parse(s, tz, &t, &err) < 0) {
    lua_pushnil(L);
    lua_pushstring(L, err.msg);
    return 2;
  }
  push_time(L, t);
  return 1;
}

static int core_format_time(lua_State *L) {
  mb_time t = to_usec(luaL_checknumber(L, 1));
  const mb_tz *tz = check_tz(L, 2);
  char buf[64];
  lua_pushstring(L, mb_time_format(t, tz, buf, sizeof buf));
  return 1;
}

static int core_format_duration(lua_State *L) {
  char buf[64];
  lua_pushstring(L, mb_duration_format(to_usec(luaL_checknumber(L, 1)), buf,
                                       sizeof buf));
  return 1;
}

/* core.timezone_ok(name) -> true | nil, message */
static int core_timezone_ok(lua_State *L) {
  const mb_tz *tz;
  mb_err err;
  if (mb_tz_get(luaL_checkstring(L, 1), &tz, &err) < 0) {
    lua_pushnil(L);
    lua_pushstring(L, err.msg);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* core.listdir(path) -> sorted names (no . or ..) | nil, message */
static int core_listdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  DIR *d = opendir(path);
  if (!d) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, strerror(errno));
    return 2;
  }
  size_t n = 0, cap = 16;
  char **names = mb_xmalloc(cap * sizeof *names);
  for (struct dirent *e; (e = readdir(d));) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    if (n == cap) names = mb_xrealloc(names, (cap *= 2) * sizeof *names);
    names[n++] = mb_xstrdup(e->d_name);
  }
  closedir(d);
  qsort(names, n, sizeof *names, by_name);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_pushstring(L, names[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
    free(names[i]);
  }
  free(names);
  return 1;
}

static int level_arg(lua_State *L, int idx) {
  int level = mb_log_level_from_name(luaL_checkstring(L, idx));
  luaL_argcheck(L, level >= 0 && level < MB_LOG_OFF, idx,
                "expected debug, info, warn or error");
  return level;
}

/* core.log(level, msg, fields) */
static int core_log(lua_State *L) {
  int level = level_arg(L, 1);
  lua_remove(L, 1);
  mb_lua_log(L, level, NULL, 0);
  return 0;
}

/* core.configure_log{format = "text"|"json", level = "info", stream =
 * "stderr"|"stdout"|"none"} */
static int core_configure_log(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "format");
  const char *format = luaL_optstring(L, -1, "text");
  lua_getfield(L, 1, "level");
  int level = mb_log_level_from_name(luaL_optstring(L, -1, "info"));
  lua_getfield(L, 1, "stream");
  const char *stream = luaL_optstring(L, -1, "stderr");
  if (level < 0) return luaL_error(L, "unknown log level");
  FILE *out = strcmp(stream, "stdout") == 0   ? stdout
              : strcmp(stream, "none") == 0 ? NULL
                                            : stderr;
  mb_log_configure(out, strcmp(format, "json") == 0 ? MB_LOG_JSON : MB_LOG_TEXT,
                   level);
  return 0;
}

static void lua_sink(int level, const char *msg, const mb_log_field *f,
                     size_t n, void *data) {
  (void)data;
  lua_State *L = log_sink_L;
  if (!L || log_sink_ref == LUA_NOREF) return;
  mb_host_work_begin();
  lua_rawgeti(L, LUA_REGISTRYINDEX, log_sink_ref);
  lua_pushstring(L, mb_log_level_name(level));
  lua_pushstring(L, msg);
  lua_createtable(L, 0, (int)n);
  for (size_t i = 0; i < n; i++) {
    switch (f[i].type) {
    case MB_LF_STR:
      if (!f[i].s) continue;
      lua_pushstring(L, f[i].s);
      break;
    case MB_LF_INT: lua_pushinteger(L, f[i].i); break;
    case MB_LF_NUM: lua_pushnumber(L, f[i].n); break;
    case MB_LF_BOOL: lua_pushboolean(L, (int)f[i].i); break;
    case MB_LF_DUR: lua_pushnumber(L, (double)f[i].i / 1e6); break;
    }
    lua_setfield(L, -2, f[i].key);
  }
  if (lua_pcall(L, 3, 0, 0) != LUA_OK) lua_pop(L, 1);
  mb_host_work_end();
}

/* core.set_log_sink(fn | nil): fn(level, msg, fields) sees every line. */
static int core_set_log_sink(lua_State *L) {
  if (log_sink_ref != LUA_NOREF) {
    mb_unref(L, log_sink_ref);
    log_sink_ref = LUA_NOREF;
  }
  if (lua_isnoneornil(L, 1)) {
    mb_log_set_sink(NULL, NULL);
    return 0;
  }
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_settop(L, 1);
  log_sink_ref = mb_ref(L);
  lua_State *main;
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  main = lua_tothread(L, -1);
  lua_pop(L, 1);
  log_sink_L = main;
  mb_log_set_sink(lua_sink, NULL);
  return 0;
}

/* core.set_memory_limit(bytes): 0 lifts the limit. */
static int core_set_memory_limit(lua_State *L) {
  lua_Integer n = luaL_checkinteger(L, 1);
  luaL_argcheck(L, n >= 0, 1, "must be >= 0");
  lua_mem_limit = (size_t)n;
  return 0;
}

/* core.memory() -> bytes of Lua memory in use, the limit */
static int core_memory(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)lua_mem_used);
  lua_pushinteger(L, (lua_Integer)lua_mem_limit);
  return 2;
}

/* core.job_memory() -> {live, chunks, ahead, policies}: jobs alive in
 * the process, the pool chunks that hold them, those mapped ahead
 * (pool.h), and the distinct policies they hold. */
static int core_job_memory(lua_State *L) {
  /* Removed jobs whose handles are collected count as given back. */
  mb_handles_sweep(mb_handles_of(L), L);
  size_t live, chunks, ahead;
  mb_sched_job_memory(&live, &chunks, &ahead);
  lua_createtable(L, 0, 4);
  lua_pushinteger(L, (lua_Integer)live);
  lua_setfield(L, -2, "live");
  lua_pushinteger(L, (lua_Integer)chunks);
  lua_setfield(L, -2, "chunks");
  lua_pushinteger(L, (lua_Integer)ahead);
  lua_setfield(L, -2, "ahead");
  lua_pushinteger(L, (lua_Integer)mb_sched_policies_held());
  lua_setfield(L, -2, "policies");
  return 1;
}

static int core_live_refs(lua_State *L) {
  lua_pushinteger(L, mb_live_refs());
  return 1;
}

static const luaL_Reg sched_methods[] = {
  {"set_api", sched_set_api},
  {"new_trigger", sched_new_trigger},
  {"add_job", sched_add_job},
  {"add_plain", sched_add_plain},
  {"get_job", sched_get_job},
  {"get_jobs", sched_get_jobs},
  {"pause_job", sched_pause_job},
  {"resume_job", sched_resume_job},
  {"remove_job", sched_remove_job},
  {"remove_all_jobs", sched_remove_all_jobs},
  {"run_job", sched_run_job},
  {"next_fires", sched_next_fires},
  {"reschedule_job", sched_reschedule_job},
  {"set_next_run_time", sched_set_next_run_time},
  {"job_spec", sched_job_spec},
  {"rename_job", sched_rename_job},
  {"modified", sched_modified},
  {"get_runs", sched_get_runs},
  {"restore", mb_host_restore},
  {"set_state_codec", sched_set_state_codec},
  {"set_retention", sched_set_retention},
  {"store_limit_pages", sched_store_limit_pages},
  {"store_set_lag", sched_store_set_lag},
  {"set_job_spec", sched_set_job_spec},
  {"store_stats", sched_store_stats},
  {"set_policy", sched_set_policy},
  {"set_event_handler", sched_set_event_handler},
  {"shutdown", sched_shutdown},
  {"state", sched_state},
  {"now", sched_now},
  {"advance", sched_advance},
  {"jump", sched_jump},
  {"stall", sched_stall},
  {"run", sched_run},
  {"stop", sched_stop},
  {"poll", sched_poll},
  {"watch", sched_watch},
  {"set_hup_handler", sched_set_hup_handler},
  {"set_job_file", sched_set_job_file},
  {"stats", sched_stats},
  {"timezone", sched_timezone},
  {"close", sched_close},
  {NULL, NULL}
};

static const luaL_Reg core_functions[] = {
  {"new", core_new},
  {"sleep", core_sleep},
  {"now", core_now},
  {"monotonic", core_monotonic},
  {"parse_time", core_parse_time},
  {"format_time", core_format_time},
  {"format_duration", core_format_duration},
  {"timezone_ok", core_timezone_ok},
  {"listdir", core_listdir},
  {"job_files", core_job_files},
  {"log", core_log},
  {"configure_log", core_configure_log},
  {"set_log_sink", core_set_log_sink},
  {"set_job_methods", core_set_job_methods},
  {"live_refs", core_live_refs},
  {"job_memory", core_job_memory},
  {"set_memory_limit", core_set_memory_limit},
  {"memory", core_memory},
  {NULL, NULL}
};

int luaopen_moonbeat_core(lua_State *L) {
  /* Before any scheduler: finalized after them all (see handles.h). */
  mb_handles_of(L);
  luaL_newmetatable(L, SCHED_MT);       /* [mt] */
  luaL_newlib(L, sched_methods);        /* [mt, methods] */
  lua_setfield(L, -2, "__index");       /* [mt] */
  lua_pushcfunction(L, sched_gc);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);

  luaL_newmetatable(L, JOB_MT);
  lua_pushcfunction(L, job_index);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, job_eq);
  lua_setfield(L, -2, "__eq");
  lua_pushcfunction(L, job_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);

  luaL_newmetatable(L, TRIGGER_MT);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, trigger_next_fires);
  lua_setfield(L, -2, "next_fires");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, trigger_gc);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, trigger_tostring);
  lua_setfield(L, -2, "__tostring");
  lua_pop(L, 1);

  luaL_newmetatable(L, WATCH_MT);
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, watch_close);
  lua_setfield(L, -2, "close");
  lua_pushcfunction(L, watch_dirs);
  lua_setfield(L, -2, "dirs");
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, watch_close);
  lua_setfield(L, -2, "__gc");
  lua_pop(L, 1);

  luaL_newlib(L, core_functions);
  return 1;
}

/* ---- embedded modules ---- */

static int load_embedded(lua_State *L) {
  const mb_embedded *e = lua_touserdata(L, lua_upvalueindex(1));
  if (luaL_loadbufferx(L, e->data, e->size, e->chunkname, "t") != LUA_OK)
    return lua_error(L);
  lua_pushvalue(L, 1);
  lua_call(L, 1, 1);
  return 1;
}

void mb_lua_open(lua_State *L) {
  *(void **)lua_getextraspace(L) = NULL;
  /* Runs make short-lived garbage (a thread and a ctx each) beside a
   * large, long-lived heap of jobs: what the generational collector is
   * for. The incremental one walks every job for every cycle. */
  mb_gc_open(L);
  luaL_openlibs(L);
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_moonbeat_core);
  lua_setfield(L, -2, "moonbeat.core");
  lua_pushcfunction(L, mb_control_luaopen);
  lua_setfield(L, -2, "mb.control_socket");
  lua_pushcfunction(L, luaopen_moonbeat_core_exec);
  lua_setfield(L, -2, "moonbeat.core.exec");
  lua_pushcfunction(L, luaopen_moonbeat_core_fs);
  lua_setfield(L, -2, "moonbeat.core.fs");
  lua_pushcfunction(L, luaopen_moonbeat_core_log);
  lua_setfield(L, -2, "moonbeat.core.log");
  lua_pushcfunction(L, luaopen_mb_term);
  lua_setfield(L, -2, "mb.term");
  lua_pushcfunction(L, luaopen_moonbeat_core_http);
  lua_setfield(L, -2, "moonbeat.core.http");
  lua_pushcfunction(L, luaopen_moonbeat_core_sqlite);
  lua_setfield(L, -2, "moonbeat.core.sqlite");
  for (const mb_embedded *e = mb_embedded_files; e->module; e++) {
    lua_pushlightuserdata(L, (void *)e);
    lua_pushcclosure(L, load_embedded, 1);
    lua_setfield(L, -2, e->module);
  }
  lua_pop(L, 1);
}
