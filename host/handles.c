/* handles.c: which jobs Lua can still reach through a handle. */
#include "handles.h"

#include <lauxlib.h>
#include <limits.h>
#include <stdlib.h>

#include "common.h"
#include "lua_api.h"

/* A sweep walks the table of live handles (kept near their number, see
 * alive_added): it waits until the removed jobs are this many, twice as
 * many as the last sweep kept, and as many as the handles it walked, so
 * its cost stays in proportion to the removals. */
#define SWEEP_MIN 64

struct mb_handles {
  mb_job **removed;          /* removed jobs still held for a handle */
  size_t n, cap, sweep_at;
  /* Handles put in alive since it was made: what its slots may have
   * grown to hold. Lua shrinks a table only when an insertion finds it
   * full, and a sweep walks every slot, live or not. */
  size_t alive_added;
  unsigned short sweep;      /* the current sweep's mark; never 0 */
  bool sweeping;             /* a sweep is under way (its renewal may run
                                finalizers that make handles) */
  bool closing;              /* lua_close: nothing is held any more */
  /* The two weak tables (below), by their registry indexes: reached by
   * integer, as every handle made is put in both. */
  int by_job_ref, alive_ref;
};

/* The state's mb_handles, by the address of this key in the registry.
 * Its tables: by_job, job -> its handle, weak values, to give out the
 * same handle again; alive, handle -> job, weak keys. Only alive says
 * whether a handle is left: Lua drops an object from weak values as
 * soon as only finalizers can reach it, but keeps it as a weak key until
 * it is really gone, and a finalizer may read a handle, or keep it. */
static char handles_key;  /* not const: see udata.h */

static void let_go(mb_job *job) {
  job->rec.has_handle = false;
  mb_job_unref(job);
}

static int handles_gc(lua_State *L) {
  mb_handles *r = lua_touserdata(L, 1);
  for (size_t i = 0; i < r->n; i++) let_go(r->removed[i]);
  free(r->removed);
  r->removed = NULL;
  r->n = r->cap = 0;
  r->closing = true;
  return 0;
}

/* Its registry index: held for the state's life. */
static int new_weak_table(lua_State *L, const char *mode) {
  lua_createtable(L, 0, 0);
  lua_createtable(L, 0, 1);
  lua_pushstring(L, mode);
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  return luaL_ref(L, LUA_REGISTRYINDEX);
}

mb_handles *mb_handles_of(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &handles_key) == LUA_TUSERDATA) {
    mb_handles *r = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return r;
  }
  lua_pop(L, 1);
  int by_job_ref = new_weak_table(L, "v");
  int alive_ref = new_weak_table(L, "k");
  mb_handles *r = lua_newuserdatauv(L, sizeof *r, 0);
  *r = (mb_handles){.sweep_at = SWEEP_MIN, .sweep = 1,
                    .by_job_ref = by_job_ref, .alive_ref = alive_ref};
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, handles_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &handles_key);
  return r;
}

bool mb_handles_push(mb_handles *r, lua_State *L, mb_job *job) {
  if (!job->rec.has_handle) return false;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->by_job_ref);
  if (lua_rawgetp(L, -1, job) == LUA_TUSERDATA) {
    lua_remove(L, -2);
    return true;
  }
  lua_pop(L, 2);
  return false;
}

/* A new alive table with the entries of the one at 1 (its live size at
 * 2, the mb_handles at 3), put in its place; a protected call. The
 * allocation may run finalizers that make handles: until the new table
 * is in the registry they go to the old one, which is copied after.
 * Copying into a table made large enough allocates nothing more, and so
 * runs nothing. */
static int renew_alive(lua_State *L) {
  lua_Integer handles = lua_tointeger(L, 2);
  const mb_handles *r = lua_touserdata(L, 3);
  lua_settop(L, 1);
  lua_createtable(L, 0, handles > INT_MAX ? INT_MAX : (int)handles);
  lua_getmetatable(L, 1);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_rawseti(L, LUA_REGISTRYINDEX, r->alive_ref);
  lua_pushnil(L);
  while (lua_next(L, 1)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  return 0;
}

void mb_handles_sweep(mb_handles *r, lua_State *L) {
  /* From a removal hook the stack may be short: the next sweep will do.
   * One that a finalizer starts during a sweep leaves it to that one. */
  if (r->n == 0 || r->sweeping || !lua_checkstack(L, 8)) return;
  r->sweeping = true;
  /* Mark the job of every handle left; a mark from 65,536 sweeps ago
   * can only keep a job one sweep too long. */
  if (++r->sweep == 0) r->sweep = 1;
  size_t handles = 0;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->alive_ref);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    mb_job *job = lua_touserdata(L, -1);
    job->rec.handle_seen = r->sweep;
    handles++;
    lua_pop(L, 1);
  }
  /* Mostly empty slots (a listing of every job, dropped): walked by
   * every sweep until the table is made anew at its live size. */
  if (r->alive_added > 4 * handles + 4 * SWEEP_MIN) {
    /* Out of memory, it keeps the old table, and the sweep goes on. */
    mb_host_work_begin();
    lua_pushcfunction(L, renew_alive);
    lua_insert(L, -2);
    lua_pushinteger(L, (lua_Integer)handles);
    lua_pushlightuserdata(L, r);
    if (lua_pcall(L, 3, 0, 0) == LUA_OK)
      r->alive_added = handles;
    else
      lua_pop(L, 1);
    mb_host_work_end();
  } else {
    lua_pop(L, 1);
  }
  size_t kept = 0;
  for (size_t i = 0; i < r->n; i++) {
    mb_job *job = r->removed[i];
    if (job->rec.handle_seen == r->sweep)
      r->removed[kept++] = job;
    else
      let_go(job);
  }
  r->n = kept;
  r->sweep_at = SWEEP_MIN;
  if (r->sweep_at < 2 * kept) r->sweep_at = 2 * kept;
  if (r->sweep_at < handles) r->sweep_at = handles;
  r->sweeping = false;
}

void mb_handles_removed(mb_handles *r, lua_State *L, mb_job *job) {
  if (r->closing) {
    let_go(job);
    return;
  }
  if (r->n == r->cap) {
    r->cap = r->cap ? 2 * r->cap : SWEEP_MIN;
    r->removed = mb_xrealloc(r->removed, r->cap * sizeof *r->removed);
  }
  r->removed[r->n++] = job;
  if (r->n >= r->sweep_at) mb_handles_sweep(r, L);
}

void mb_handles_add(mb_handles *r, lua_State *L, mb_job *job) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->alive_ref);
  lua_pushvalue(L, -2);
  lua_pushlightuserdata(L, job);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  r->alive_added++;
  /* Made by a finalizer while a sweep renews alive: that sweep walked
   * the table already. */
  if (r->sweeping) job->rec.handle_seen = r->sweep;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->by_job_ref);
  lua_pushvalue(L, -2);
  lua_rawsetp(L, -2, job);
  lua_pop(L, 1);
  if (job->rec.has_handle) return;
  job->rec.has_handle = true;
  mb_job_ref(job);
  /* Made for a job already removed (one a run still holds, say): no
   * removal is left to come for it. */
  if (job->removed) mb_handles_removed(r, L, job);
}
