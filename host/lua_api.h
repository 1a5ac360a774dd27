/* lua_api.h: moonbeat as seen from Lua. `moonbeat.core` is the C module
 * that the Lua half (lua/) builds the scheduler API on: schedulers on a
 * real or virtual clock, jobs, triggers, time parsing, logging, sleep.
 * The Lua sources of lua/ and stdlib/ are compiled into the binary and
 * served from package.preload. */
#ifndef MB_LUA_API_H
#define MB_LUA_API_H

#include <lua.h>
#include <stddef.h>
#include <uv.h>

/* Open the standard libraries and install the preloaders for
 * moonbeat.core, the embedded lua/ modules (as "mb.<name>") and the
 * stdlib (as "moonbeat.<name>"). */
void mb_lua_open(lua_State *L);

int luaopen_moonbeat_core(lua_State *L);

/* The loop of the scheduler at idx (raises when it is not an open one):
 * for modules that put their own handles beside the scheduler's. */
uv_loop_t *mb_lua_check_loop(lua_State *L, int idx);

/* A Lua state whose allocator refuses job code more than the memory
 * limit (core.set_memory_limit; 1 GiB by default). */
lua_State *mb_lua_newstate(void);
/* Bracket host code that calls into Lua (events, listeners, retry_on):
 * the memory limit does not apply, and no scheduler may close. */
void mb_host_work_begin(void);
void mb_host_work_end(void);

/* Turn a lean job's ref (its run function alone) into a whole spec
 * table; nothing for a job that is not lean. A finalizer run by the
 * allocations may remove the job: callers hold it, and check
 * job->lua_ref after. */
struct mb_job;
void mb_host_whole_spec(lua_State *L, struct mb_job *job);

/* The error a run gets when it hits the limit. */
void mb_lua_memory_message(char *buf, size_t n);

#endif
