/* control_lua.c: the control socket's server and client for Lua. A
 * server calls its Lua handler from loop callbacks, on the main thread,
 * and keeps registry refs to the handlers only while it is open. */
#include "control_lua.h"

#include <lauxlib.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#include "control.h"
#include "control_client.h"
#include "log.h"
#include "lua_api.h"
#include "run.h"

#define SERVER_MT "moonbeat.control.server"
#define CONN_MT "moonbeat.control.conn"

typedef struct server {
  mb_control *control;
  lua_State *L;           /* the main thread */
  int request_ref, gone_ref;
  int busy;               /* handlers running: free only after them */
  bool closed;
} server;

static int fail(lua_State *L, const mb_err *err) {
  lua_pushnil(L);
  lua_pushstring(L, err->msg);
  const char *name = mb_err_name(err->code);
  /* libuv names are "ENOENT"; its end of file is "EOF". */
  lua_pushstring(L, name);
  return 3;
}

/* Seconds (nil: no limit) to milliseconds (-1: no limit). */
static int opt_timeout(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return -1;
  double s = luaL_checknumber(L, idx);
  luaL_argcheck(L, s >= 0, idx, "a timeout cannot be negative");
  return s * 1000 > 2e9 ? -1 : (int)ceil(s * 1000);
}

static int traceback(lua_State *L) {
  luaL_traceback(L, L, luaL_tolstring(L, 1, NULL), 1);
  return 1;
}

static void server_free_if_idle(server *s) {
  if (s->closed && s->busy == 0) free(s);
}

/* Call the handler at ref with the client id and, when line is not
 * NULL, the line; send back what it returns. */
static void call_handler(server *s, int ref, uint64_t client,
                         const char *line, size_t len) {
  if (s->closed || ref == LUA_NOREF) return;
  lua_State *L = s->L;
  s->busy++;
  mb_host_work_begin();
  int top = lua_gettop(L);
  lua_pushcfunction(L, traceback);
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
  lua_pushinteger(L, (lua_Integer)client);
  if (line) lua_pushlstring(L, line, len);
  if (lua_pcall(L, line ? 2 : 1, 1, top + 1) != LUA_OK) {
    mb_log_field f[] = {MB_LI("client", client),
                        MB_LS("error", lua_tostring(L, -1))};
    mb_log(MB_LOG_ERROR, "control handler failed", f, 2);
    /* Without an answer the client would wait for ever. */
    if (line && !s->closed) mb_control_drop(s->control, client);
  } else if (line && lua_type(L, -1) == LUA_TSTRING && !s->closed) {
    size_t n;
    const char *reply = lua_tolstring(L, -1, &n);
    mb_control_send(s->control, client, reply, n);
  }
  lua_settop(L, top);
  mb_host_work_end();
  s->busy--;
  server_free_if_idle(s);
}

static void on_request(mb_control *c, uint64_t client, const char *line,
                       size_t len, void *data) {
  (void)c;
  server *s = data;
  call_handler(s, s->request_ref, client, line, len);
}

static void on_gone(mb_control *c, uint64_t client, void *data) {
  (void)c;
  server *s = data;
  call_handler(s, s->gone_ref, client, NULL, 0);
}

static server *check_server(lua_State *L) {
  server **sp = luaL_checkudata(L, 1, SERVER_MT);
  if (!*sp) luaL_error(L, "the control server is closed");
  return *sp;
}

static void server_close(lua_State *L, server **sp) {
  server *s = *sp;
  if (!s) return;
  *sp = NULL;
  s->closed = true;
  mb_control_close(s->control);
  s->control = NULL;
  mb_unref(L, s->request_ref);
  mb_unref(L, s->gone_ref);
  s->request_ref = s->gone_ref = LUA_NOREF;
  server_free_if_idle(s);
}

static const char *opt_string_field(lua_State *L, int idx, const char *key) {
  lua_getfield(L, idx, key);
  const char *v = luaL_optstring(L, -1, NULL);
  lua_pop(L, 1);  /* the options table keeps the string alive */
  return v;
}

static size_t opt_size_field(lua_State *L, int idx, const char *key) {
  lua_getfield(L, idx, key);
  lua_Integer v = luaL_optinteger(L, -1, 0);
  lua_pop(L, 1);
  if (v < 0) luaL_error(L, "listen: %s: expected a size >= 0", key);
  return (size_t)v;
}

/* sock.listen(sched, path, opts) -> server | nil, message, code */
static int sock_listen(lua_State *L) {
  uv_loop_t *loop = mb_lua_check_loop(L, 1);
  const char *path = luaL_checkstring(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  if (mb_run_current(L)) return luaL_error(L, "listen: not from a job's run");
  mb_control_opts opts = {
    .max_request = opt_size_field(L, 3, "max_request"),
    .max_clients = opt_size_field(L, 3, "max_clients"),
    .too_long_reply = opt_string_field(L, 3, "too_long_reply"),
    .too_many_reply = opt_string_field(L, 3, "too_many_reply"),
    .on_request = on_request,
    .on_gone = on_gone,
  };
  lua_getfield(L, 3, "on_request");
  luaL_checktype(L, -1, LUA_TFUNCTION);
  lua_getfield(L, 3, "on_gone");
  if (!lua_isnil(L, -1)) luaL_checktype(L, -1, LUA_TFUNCTION);
  server **sp = lua_newuserdatauv(L, sizeof *sp, 0);
  *sp = NULL;
  luaL_setmetatable(L, SERVER_MT);
  server *s = mb_xcalloc(1, sizeof *s);
  opts.data = s;
  mb_err err = {0};
  s->control = mb_control_listen(loop, path, &opts, &err);
  if (!s->control) {
    free(s);
    return fail(L, &err);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
  s->L = lua_tothread(L, -1);
  lua_pop(L, 1);
  lua_pushvalue(L, -3);
  s->request_ref = mb_ref(L);
  s->gone_ref = LUA_NOREF;
  if (!lua_isnil(L, -2)) {
    lua_pushvalue(L, -2);
    s->gone_ref = mb_ref(L);
  }
  *sp = s;
  return 1;
}

static int server_send(lua_State *L) {
  server *s = check_server(L);
  lua_Integer client = luaL_checkinteger(L, 2);
  size_t n;
  const char *text = luaL_checklstring(L, 3, &n);
  if (mb_control_send(s->control, (uint64_t)client, text, n) < 0) {
    lua_pushnil(L);
    lua_pushliteral(L, "the client has gone");
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int server_drop(lua_State *L) {
  server *s = check_server(L);
  lua_pushboolean(L,
                  mb_control_drop(s->control,
                                  (uint64_t)luaL_checkinteger(L, 2)) == 0);
  return 1;
}

static int server_clients(lua_State *L) {
  server *s = check_server(L);
  lua_pushinteger(L, (lua_Integer)mb_control_clients(s->control));
  return 1;
}

static int server_handles(lua_State *L) {
  server *s = check_server(L);
  lua_pushinteger(L, (lua_Integer)mb_control_loop_handles(s->control));
  return 1;
}

static int server_close_method(lua_State *L) {
  server **sp = luaL_checkudata(L, 1, SERVER_MT);
  server_close(L, sp);
  return 0;
}

/* sock.prepare(path) -> true | nil, message, code */
static int sock_prepare(lua_State *L) {
  mb_err err = {0};
  if (mb_control_prepare(luaL_checkstring(L, 1), &err) < 0)
    return fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- the client ---- */

static mb_control_conn **check_conn(lua_State *L) {
  mb_control_conn **cp = luaL_checkudata(L, 1, CONN_MT);
  if (!*cp) luaL_error(L, "the connection is closed");
  return cp;
}

/* sock.dial(path, timeout) -> conn | nil, message, code */
static int sock_dial(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int timeout = opt_timeout(L, 2);
  if (mb_run_current(L))
    return luaL_error(L, "dial: blocks, so not from a job's run");
  mb_control_conn **cp = lua_newuserdatauv(L, sizeof *cp, 0);
  *cp = NULL;
  luaL_setmetatable(L, CONN_MT);
  mb_err err = {0};
  *cp = mb_control_dial(path, timeout, &err);
  if (!*cp) return fail(L, &err);
  return 1;
}

static int conn_write(lua_State *L) {
  mb_control_conn **cp = check_conn(L);
  size_t n;
  const char *data = luaL_checklstring(L, 2, &n);
  mb_err err = {0};
  if (mb_control_write(*cp, data, n, opt_timeout(L, 3), &err) < 0)
    return fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

static int conn_read_line(lua_State *L) {
  mb_control_conn **cp = check_conn(L);
  const char *line;
  size_t n;
  mb_err err = {0};
  if (mb_control_read_line(*cp, opt_timeout(L, 2), &line, &n, &err) < 0)
    return fail(L, &err);
  lua_pushlstring(L, line, n);
  return 1;
}

static int conn_close(lua_State *L) {
  mb_control_conn **cp = luaL_checkudata(L, 1, CONN_MT);
  mb_control_hangup(*cp);
  *cp = NULL;
  return 0;
}

static int sock_uid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)geteuid());
  return 1;
}

static int sock_pid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

static const luaL_Reg server_methods[] = {
  {"send", server_send},
  {"drop", server_drop},
  {"clients", server_clients},
  {"handles", server_handles},
  {"close", server_close_method},
  {NULL, NULL}
};

static const luaL_Reg conn_methods[] = {
  {"write", conn_write},
  {"read_line", conn_read_line},
  {"close", conn_close},
  {NULL, NULL}
};

static const luaL_Reg sock_functions[] = {
  {"prepare", sock_prepare},
  {"listen", sock_listen},
  {"dial", sock_dial},
  {"uid", sock_uid},
  {"pid", sock_pid},
  {NULL, NULL}
};

int mb_control_luaopen(lua_State *L) {
  luaL_newmetatable(L, SERVER_MT);      /* [mt] */
  luaL_newlib(L, server_methods);       /* [mt, methods] */
  lua_setfield(L, -2, "__index");       /* [mt] */
  lua_pushcfunction(L, server_close_method);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, server_close_method);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);

  luaL_newmetatable(L, CONN_MT);
  luaL_newlib(L, conn_methods);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, conn_close);
  lua_setfield(L, -2, "__gc");
  lua_pushcfunction(L, conn_close);
  lua_setfield(L, -2, "__close");
  lua_pop(L, 1);

  luaL_newlib(L, sock_functions);
  return 1;
}
