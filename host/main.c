/* main.c: the moonbeat binary. It makes the Lua state and hands the
 * command line to lua/main.lua, which owns the subcommands. */
#include <lauxlib.h>
#include <lualib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "lua_api.h"

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = luaL_tolstring(L, 1, NULL);
  luaL_traceback(L, L, msg, 1);
  return 1;
}

static int start(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = lua_touserdata(L, 2);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "mb.main");
  lua_call(L, 1, 1);
  lua_createtable(L, argc, 0);
  for (int i = 1; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_call(L, 1, 1);
  return 1;
}

int main(int argc, char **argv) {
  /* A write to a peer that is gone (a control client that hung up, a
   * child that exits without reading its stdin, a closed HTTP socket)
   * must fail with EPIPE, not kill the scheduler. Children get the
   * default back: libuv resets signals when it spawns. */
  signal(SIGPIPE, SIG_IGN);
  /* SIGHUP asks a running scheduler to rescan its directory; one that
   * comes while it is still starting, before its handler is in place,
   * must not end it. */
  signal(SIGHUP, SIG_IGN);
#ifdef __GLIBC__
  /* A burst of runs allocates megabytes that the collector frees soon
   * after. glibc hands the top of its heap back to the kernel once 128
   * KiB of it is free (the writer thread's frees did it every turn), and
   * the next burst faulted every page in again: a tenth of each run.
   * Freed memory up to 64 MiB is kept for reuse instead; a block of more
   * than 4 MiB still gets a mapping of its own, returned when freed. */
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
#endif
  lua_State *L = mb_lua_newstate();
  if (!L) {
    fprintf(stderr, "moonbeat: cannot create the Lua state\n");
    return 1;
  }
  mb_lua_open(L);
  lua_pushcfunction(L, traceback);
  lua_pushcfunction(L, start);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  int code;
  if (lua_pcall(L, 2, 1, 1) != LUA_OK) {
    fprintf(stderr, "moonbeat: %s\n", lua_tostring(L, -1));
    code = 1;
  } else {
    code = (int)luaL_optinteger(L, -1, 0);
  }
  lua_close(L);
  uv_loop_close(uv_default_loop());
  return code;
}
