/* handles.h: which jobs Lua can still reach through a handle. A job
 * handle (the userdata scheduler.get_job and add_job return) has no
 * finalizer: a finalizer call for every handle collected was a fifth of
 * the cost of adding a job. Instead a state keeps its jobs' handles in
 * two weak tables: one per job, to hand out the same one again, and
 * every handle that is alive, with its job. A job that has had a handle
 * holds one reference for all of them (has_handle); once it is removed,
 * a sweep lets go of it when no handle of it is left. So a handle still
 * reads the job it names after the job is gone. */
#ifndef MB_HANDLES_H
#define MB_HANDLES_H

#include <lua.h>
#include <stdbool.h>

#include "sched.h"

typedef struct mb_handles mb_handles;

/* The state's handles, made on first use and kept in its registry.
 * Made before any scheduler, it is finalized after them all at
 * lua_close, and lets go of every job it still holds then. */
mb_handles *mb_handles_of(lua_State *L);
/* Push job's handle and return true when the one it was given is still
 * alive; else push nothing and return false. */
bool mb_handles_push(mb_handles *r, lua_State *L, mb_job *job);
/* Make the userdata on top of the stack a handle of job, which is held
 * until it is removed and no handle of it is left. Allocates: the
 * caller holds the job, and does host work (lua_api.h). */
void mb_handles_add(mb_handles *r, lua_State *L, mb_job *job);
/* A job with has_handle was removed from its scheduler: let go of it
 * once no handle of it is left. Sweeps now and then. */
void mb_handles_removed(mb_handles *r, lua_State *L, mb_job *job);
/* Let go of every removed job no handle of which is left. */
void mb_handles_sweep(mb_handles *r, lua_State *L);

#endif
