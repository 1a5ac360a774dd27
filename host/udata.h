/* udata.h: userdata known by a mark in their first bytes, for those on
 * hot paths (the scheduler, job handles, ctx). Checking one costs a few
 * instructions, where luaL_checkudata looks the metatable's name up in
 * the registry and compares metatables: a fortieth of adding a job, a
 * third of reading a field of ctx. Lua code cannot write a userdata's
 * bytes, so only the host's own carry the marks. A mark is a static that
 * is not const: constants may be merged into one address. */
#ifndef MB_UDATA_H
#define MB_UDATA_H

#include <lauxlib.h>
#include <lua.h>
#include <stddef.h>

/* The userdata at idx when it holds at least size bytes and its first
 * member is mark (a pointer); else NULL. */
static inline void *mb_udata_test(lua_State *L, int idx, const void *mark,
                                  size_t size) {
  if (lua_type(L, idx) != LUA_TUSERDATA || lua_rawlen(L, idx) < size)
    return NULL;
  const void *const *first = lua_touserdata(L, idx);
  return *first == mark ? (void *)first : NULL;
}

/* mb_udata_test, or an argument error: "tname expected". */
static inline void *mb_udata_check(lua_State *L, int idx, const void *mark,
                                   size_t size, const char *tname) {
  void *p = mb_udata_test(L, idx, mark, size);
  if (!p) luaL_typeerror(L, idx, tname);
  return p;
}

#endif
