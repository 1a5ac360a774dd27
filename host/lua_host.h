/* lua_host.h: the scheduler userdata's state and the helpers the Lua
 * binding's files share (lua_api.c, restore.c). Private to them: the rest
 * of the host sees moonbeat.core through lua_api.h. Loop thread only. */
#ifndef MB_LUA_HOST_H
#define MB_LUA_HOST_H

#include <lua.h>
#include <stdbool.h>
#include <uv.h>

#include "gc.h"
#include "loop.h"
#include "run.h"
#include "sched.h"
#include "share.h"
#include "store.h"
#include "trigger.h"
#include "tz.h"

struct watch_ud;

typedef struct host {
  lua_State *L;
  uv_loop_t *loop;
  bool own_loop;
  mb_clock *clock;
  mb_sched *sched;
  mb_runner *runner;
  struct mb_handles *handles;  /* the state's job handles (handles.h) */
  mb_share_table lean_runs;  /* run functions lean jobs share, by address */
  bool closed;
  bool running;              /* inside sched:run() */
  enum { RUNNING, STOPPING, STOPPED } state;
  const mb_tz *default_tz;   /* for triggers that name no zone */
  int event_ref;             /* Lua function handed every event */
  mb_timer shutdown_timer;
  mb_time shutdown_timeout;
  uv_signal_t signals[3];
  int stop_signal;
  int hup_ref;               /* Lua function SIGHUP calls (a rescan) */
  struct watch_ud *watches;  /* open directory watches, closed with it */
  int signals_received;
  int sigint_ref;            /* sched:run's on_sigint, while it runs */
  /* The store, when there is one. */
  mb_store *store;
  /* The end of each loop turn on the real clock, just before the loop
   * waits: what anything did since the last wait, in any phase of the
   * turn or before the loop started, goes to the writer then, not after
   * the next wake-up (which may be a minute away, or the instant a burst
   * is due); and young Lua garbage is collected while it is small (see
   * gc.h). */
  uv_prepare_t turn_prepare;
  bool turn_prepare_open;
  mb_gc gc;
  mb_job **dirty;            /* jobs whose state changed this turn */
  size_t ndirty, dirty_cap;
  mb_job **stale;            /* rows behind their history (see sweep) */
  size_t nstale, stale_cap;
  mb_time last_sweep;        /* monotonic */
  long long settled;         /* the run id the latest sweep settled */
  long long settle_cap;      /* rows restore kept but could not fold
                                hold runs only up to this id */
  bool sweeping;             /* a sweep is under way, from sweep_from */
  long long sweep_from;
  long long closed_last_id;  /* the runner's last id, once it is freed */
  bool final_flush;          /* closing: every row brought up to date */
  mb_retention retention;
  mb_time last_age_prune;
  char last_store_error[256];
  int state_ref;             /* Lua function serialising ctx.state */
  const char *restoring_id;  /* the job sched:restore is putting back */
  char hostname[256];
  long long pid;             /* ours, for run records (getpid is a
                                system call per run) */
  struct host *prev_current;
} host;

/* The Lua side several jobs share, one registry ref for them all:
 * - the checked spec of jobs restored from stored specs that differ only
 *   in their id, until a job needs one of its own: to run (ctx.state
 *   lives in it), or to be read or changed whole (sched:job_spec). A
 *   store of a million such jobs then starts with one table, not a
 *   million;
 * - the run function of lean jobs (mb_job_lua) given the same function,
 *   until one is read or changed whole. A million jobs added with one
 *   function then hold one ref, not a registry a million long. */
struct mb_shared_spec {
  mb_share_node node;  /* in *in, by the function's address */
  mb_share_table *in;  /* a run function's: its host's lean_runs; else NULL */
  const void *fn;      /* that function */
  int ref;
  unsigned users;  /* jobs, and the restore while it adds more */
};

/* The scheduler userdata at idx; raises when it is not one, or closed. */
host *host_check(lua_State *L, int idx);

/* What the next flush writes for job: its outcomes (host_touch), or its
 * whole row (host_mark_dirty, or host_touch with must_save). */
void host_touch(host *h, mb_job *job, bool must_save);
void host_mark_dirty(host *h, mb_job *job);
/* Hand this turn's writes to the store's writer thread. */
void host_flush(host *h);

/* *slot = a copy of v (NULL: none), the old one freed. */
void host_set_string(char **slot, const char *v);
/* A run status as one of the few fixed names a job keeps. */
const char *host_status_static(const char *text);
/* The text a stored row keeps of job's trigger. */
const char *host_trigger_identity(mb_job *job);

/* Shared spec tables and run functions (see struct mb_shared_spec). */
void host_release_shared(lua_State *L, struct mb_shared_spec *spec);
void host_push_copy(lua_State *L, int idx, int nrec);
void host_own_spec(host *h, mb_job *job);

/* The trigger userdata at idx, taken over (the userdata is left empty). */
mb_trigger *host_take_trigger(lua_State *L, int idx);
/* The policy table lua/validate.lua makes, at idx, to C. */
void host_read_policy(lua_State *L, int idx, mb_job_policy *p);

/* sched:restore (restore.c). */
int mb_host_restore(lua_State *L);

#endif
