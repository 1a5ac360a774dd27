/* exec.c: one child per waiting call. A child owns a process handle and
 * its pipes (stdout, stderr, and stdin when there is input); it is freed
 * after the last of them closes, which may be after the run that
 * started it has ended: a killed child is still reaped. */
#include "exec.h"

#include <lauxlib.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "loop.h"
#include "run.h"

extern char **environ;

typedef struct output {
  char *data;
  size_t len, cap;
  bool truncated;
} output;

typedef struct child {
  uv_process_t proc;
  uv_pipe_t out_pipe, err_pipe, in_pipe;
  bool has_in;
  uv_write_t in_write;
  char *in_data;
  int handles;               /* initialised and not yet closed */
  mb_run *run;               /* the run waiting for it; NULL once none */
  lua_State *co;             /* that run's thread */
  mb_clock *clock;           /* its timers' clock, while run is set */
  mb_timer timeout_timer, grace_timer;
  int pgid;                  /* 0 once its group was killed for good */
  bool exited, out_done, err_done, timed_out;
  int64_t exit_status;
  int term_signal;
  size_t max_output;
  output out, err;
} child;

static size_t live;

size_t mb_exec_live(void) { return live; }

/* libuv asks for a read buffer right before each read and hands it back
 * right after, so one buffer serves every pipe. */
static char scratch[64 * 1024];

static void on_closed(uv_handle_t *handle) {
  child *c = handle->data;
  if (--c->handles > 0) return;
  free(c->out.data);
  free(c->err.data);
  free(c->in_data);
  free(c);
  live--;
}

static void close_handle(child *c, void *handle) {
  uv_handle_t *h = handle;
  h->data = c;
  if (!uv_is_closing(h)) uv_close(h, on_closed);
}

static void close_pipes(child *c) {
  close_handle(c, &c->out_pipe);
  close_handle(c, &c->err_pipe);
  if (c->has_in) close_handle(c, &c->in_pipe);
}

static void kill_group(child *c, int sig) {
  /* ESRCH (nothing left in the group) is the usual, harmless answer. */
  if (c->pgid > 0) kill(-c->pgid, sig);
}

static void stop_timers(child *c) {
  mb_timer_stop(c->clock, &c->timeout_timer);
  mb_timer_stop(c->clock, &c->grace_timer);
}

static void push_result(lua_State *co, child *c) {
  lua_createtable(co, 0, 6);
  if (c->term_signal) {
    lua_pushinteger(co, c->term_signal);
    lua_setfield(co, -2, "signal");
  } else {
    lua_pushinteger(co, (lua_Integer)c->exit_status);
    lua_setfield(co, -2, "code");
  }
  lua_pushlstring(co, c->out.data ? c->out.data : "", c->out.len);
  lua_setfield(co, -2, "stdout");
  lua_pushlstring(co, c->err.data ? c->err.data : "", c->err.len);
  lua_setfield(co, -2, "stderr");
  if (c->timed_out) {
    lua_pushboolean(co, 1);
    lua_setfield(co, -2, "timed_out");
  }
  if (c->out.truncated || c->err.truncated) {
    lua_pushboolean(co, 1);
    lua_setfield(co, -2, "truncated");
  }
}

/* The run gets its result; the handles close behind it. */
static void deliver(child *c) {
  mb_run *run = c->run;
  lua_State *co = c->co;
  c->run = NULL;
  c->co = NULL;
  stop_timers(c);
  push_result(co, c);
  close_pipes(c);
  mb_run_wake(run, 1);
}

static void maybe_done(child *c) {
  if (c->run && c->exited && c->out_done && c->err_done) deliver(c);
}

static void on_child_exit(uv_process_t *proc, int64_t status,
                          int term_signal) {
  child *c = proc->data;
  c->exited = true;
  c->exit_status = status;
  c->term_signal = term_signal;
  /* Whatever it started in the background goes with it: a run never
   * leaves processes behind, and their end closes the pipes. */
  kill_group(c, SIGKILL);
  c->pgid = 0;
  if (c->run) mb_timer_stop(c->clock, &c->grace_timer);
  close_handle(c, &c->proc);
  if (c->has_in) close_handle(c, &c->in_pipe);
  maybe_done(c);
}

static void on_alloc(uv_handle_t *handle, size_t hint, uv_buf_t *buf) {
  (void)handle;
  (void)hint;
  *buf = uv_buf_init(scratch, sizeof scratch);
}

static void keep(output *o, const char *data, size_t n, size_t max) {
  size_t room = o->len < max ? max - o->len : 0;
  if (n > room) {
    o->truncated = true;
    n = room;
  }
  if (n == 0) return;
  if (o->len + n > o->cap) {
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + n) cap *= 2;
    if (cap > max) cap = max;
    o->data = mb_xrealloc(o->data, cap);
    o->cap = cap;
  }
  memcpy(o->data + o->len, data, n);
  o->len += n;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  child *c = stream->data;
  bool is_out = stream == (uv_stream_t *)&c->out_pipe;
  if (nread > 0) {
    keep(is_out ? &c->out : &c->err, buf->base, (size_t)nread, c->max_output);
    return;
  }
  if (nread == 0) return;
  /* End of file, or a read error: either way nothing more comes. */
  uv_read_stop(stream);
  if (is_out)
    c->out_done = true;
  else
    c->err_done = true;
  maybe_done(c);
}

static void on_in_written(uv_write_t *req, int status) {
  (void)status;  /* a child that did not read it all is its own business */
  child *c = req->data;
  if (c->has_in) close_handle(c, &c->in_pipe);
}

static void on_timeout(mb_timer *t) {
  child *c = t->data;
  c->timed_out = true;
  if (c->exited) {
    /* Only something outside its group still holds its pipes open. */
    deliver(c);
    return;
  }
  kill_group(c, SIGTERM);
  mb_timer_start(c->clock, &c->grace_timer, MB_EXEC_KILL_GRACE);
}

static void on_grace(mb_timer *t) { kill_group(t->data, SIGKILL); }

/* The run ended first (timeout, cancellation): kill the group at once;
 * the process handle stays open until the child is reaped. */
static void cancel_child(mb_run *run, void *wait) {
  (void)run;
  child *c = wait;
  c->run = NULL;
  c->co = NULL;
  stop_timers(c);
  kill_group(c, SIGKILL);
  close_pipes(c);
}

/* The environment for the child: ours with the table's entries
 * replacing (a string) or removing (false) variables. */
static char **child_env(lua_State *L, int idx) {
  size_t n = 0, extra = 0;
  while (environ[n]) n++;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    extra++;
    lua_pop(L, 1);
  }
  char **env = mb_xmalloc((n + extra + 1) * sizeof *env);
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    const char *eq = strchr(environ[i], '=');
    if (!eq) continue;
    lua_pushlstring(L, environ[i], (size_t)(eq - environ[i]));
    int t = lua_rawget(L, idx);
    lua_pop(L, 1);
    if (t == LUA_TNIL) env[k++] = mb_xstrdup(environ[i]);
  }
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -1) == LUA_TSTRING) {
      size_t klen, vlen;
      const char *key = lua_tolstring(L, -2, &klen);
      const char *value = lua_tolstring(L, -1, &vlen);
      char *entry = mb_xmalloc(klen + vlen + 2);
      memcpy(entry, key, klen);
      entry[klen] = '=';
      memcpy(entry + klen + 1, value, vlen + 1);
      env[k++] = entry;
    }
    lua_pop(L, 1);
  }
  env[k] = NULL;
  return env;
}

static void free_env(char **env) {
  if (!env) return;
  for (char **e = env; *e; e++) free(*e);
  free(env);
}

static void init_pipe(child *c, uv_loop_t *loop, uv_pipe_t *p) {
  uv_pipe_init(loop, p, 0);
  p->data = c;
  c->handles++;
}

/* spawn(name, argv, opts) -> result | nil, message, code. name is the
 * caller's, for messages ("exec.run"); argv a list of strings; opts may
 * hold env (table), cwd, stdin (strings) and timeout (seconds), and
 * holds max_output (bytes kept of each stream). stdlib/exec.lua has
 * checked them. */
static int exec_spawn(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  luaL_checktype(L, 3, LUA_TTABLE);
  lua_settop(L, 3);
  mb_run *run = mb_run_current(L);
  if (!run) {
    /* Level 2: the job's line that called exec.run, not exec.lua's. */
    luaL_where(L, 2);
    lua_pushfstring(L, "%s: only a job's run can wait for a command (this "
                    "code is not running as a job's run function)", name);
    lua_concat(L, 2);
    return lua_error(L);
  }
  lua_getfield(L, 3, "env");
  lua_getfield(L, 3, "cwd");
  lua_getfield(L, 3, "stdin");
  lua_getfield(L, 3, "timeout");
  lua_getfield(L, 3, "max_output");
  const char *cwd = lua_tostring(L, 5);
  size_t in_len = 0;
  const char *in = lua_tolstring(L, 6, &in_len);
  double timeout = lua_isnumber(L, 7) ? lua_tonumber(L, 7) : 0;
  lua_Integer max_output = luaL_checkinteger(L, 8);

  /* The strings stay in the argv table, which stays on the stack. */
  size_t argc = lua_rawlen(L, 2);
  luaL_argcheck(L, argc > 0, 2, "no command");
  const char **argv = mb_xmalloc((argc + 1) * sizeof *argv);
  for (size_t i = 0; i < argc; i++) {
    /* Strings only: a number converted here would live on the stack
     * alone, and be collected once popped. */
    bool is_string = lua_rawgeti(L, 2, (lua_Integer)i + 1) == LUA_TSTRING;
    argv[i] = is_string ? lua_tostring(L, -1) : NULL;
    lua_pop(L, 1);
    if (!argv[i]) {
      free(argv);
      return luaL_error(L, "%s: argument %d is not a string", name,
                        (int)i + 1);
    }
  }
  argv[argc] = NULL;
  const char *command = argv[0];
  if (in_len > UINT_MAX) {
    free(argv);
    return luaL_error(L, "%s: stdin is too long", name);
  }
  char **env = lua_istable(L, 4) ? child_env(L, 4) : NULL;

  mb_clock *clock = mb_run_clock(run);
  uv_loop_t *loop = mb_clock_loop(clock);
  child *c = mb_xcalloc(1, sizeof *c);
  live++;
  c->clock = clock;
  c->max_output = max_output > 0 ? (size_t)max_output : 0;
  mb_timer_init(&c->timeout_timer, on_timeout, c);
  mb_timer_init(&c->grace_timer, on_grace, c);
  init_pipe(c, loop, &c->out_pipe);
  init_pipe(c, loop, &c->err_pipe);
  uv_stdio_container_t stdio[3];
  if (in) {
    c->has_in = true;
    init_pipe(c, loop, &c->in_pipe);
    stdio[0].flags = UV_CREATE_PIPE | UV_READABLE_PIPE;
    stdio[0].data.stream = (uv_stream_t *)&c->in_pipe;
  } else {
    /* libuv gives an ignored stdin /dev/null: never the terminal. */
    stdio[0].flags = UV_IGNORE;
  }
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&c->out_pipe;
  stdio[2].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[2].data.stream = (uv_stream_t *)&c->err_pipe;
  uv_process_options_t opts = {
    .exit_cb = on_child_exit,
    .file = argv[0],
    .args = (char **)argv,
    .env = env,
    .cwd = cwd,
    /* setsid(): a session, so a process group, of its own. */
    .flags = UV_PROCESS_DETACHED,
    .stdio_count = 3,
    .stdio = stdio,
  };
  int rc = uv_spawn(loop, &c->proc, &opts);
  /* The handle is initialised even when the spawn fails. */
  c->proc.data = c;
  c->handles++;
  free(argv);
  free_env(env);
  if (rc < 0) {
    close_handle(c, &c->proc);
    close_pipes(c);
    lua_pushnil(L);
    if (cwd)
      lua_pushfstring(L, "cannot run %s in %s: %s", command, cwd,
                      uv_strerror(rc));
    else
      lua_pushfstring(L, "cannot run %s: %s", command, uv_strerror(rc));
    lua_pushstring(L, uv_err_name(rc));
    return 3;
  }
  c->pgid = c->proc.pid;
  uv_read_start((uv_stream_t *)&c->out_pipe, on_alloc, on_read);
  uv_read_start((uv_stream_t *)&c->err_pipe, on_alloc, on_read);
  if (in_len > 0) {
    c->in_data = mb_xmalloc(in_len);
    memcpy(c->in_data, in, in_len);
    uv_buf_t b = uv_buf_init(c->in_data, (unsigned)in_len);
    c->in_write.data = c;
    if (uv_write(&c->in_write, (uv_stream_t *)&c->in_pipe, &b, 1,
                 on_in_written) < 0)
      close_handle(c, &c->in_pipe);
  } else if (in) {
    close_handle(c, &c->in_pipe);
  }
  if (timeout > 0)
    mb_timer_start(clock, &c->timeout_timer, (mb_time)(timeout * 1e6));
  c->run = run;
  c->co = L;
  return mb_run_wait(run, cancel_child, c);
}

static int exec_live(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)live);
  return 1;
}

int luaopen_moonbeat_core_exec(lua_State *L) {
  static const luaL_Reg functions[] = {
    {"spawn", exec_spawn},
    {"live", exec_live},
    {NULL, NULL}
  };
  luaL_newlib(L, functions);
  return 1;
}
