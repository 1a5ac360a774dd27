/* fs.c: an operation is a chain of steps, each handling the result of
 * one libuv fs request and making the next. Every chain ends in
 * wind_up, which closes what is open, removes the temporary file that
 * was not renamed, and then hands the results to the caller (or to no
 * one, when the run abandoned it). */
#include "fs.h"

#include <fcntl.h>
#include <lauxlib.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "loop.h"
#include "run.h"

/* Bytes asked for by each read of a file of unknown length. */
#define READ_CHUNK (64 * 1024)
/* The most one read or write request asks for. */
#define MAX_IO ((size_t)1 << 30)
/* Names tried for a temporary file before giving up. */
#define TMP_TRIES 16

enum { OP_READ, OP_WRITE, OP_APPEND, OP_LIST, OP_STAT, OP_REMOVE, OP_MKDIR };

typedef struct fs_op fs_op;
typedef void (*fs_step)(fs_op *op);

struct fs_op {
  uv_fs_t req;               /* first: a request is its op */
  uv_loop_t *loop;
  bool async;
  mb_run *run;               /* async: the run waiting; NULL: abandoned */
  lua_State *L;              /* where results go while someone waits */
  fs_step step;              /* handles the result of the request */
  ssize_t result;            /* of the request just done */
  bool ready;                /* result is in, step not yet run */
  bool winding_up;           /* its requests are not to be cancelled */
  bool finished;
  int nresults;
  int kind;
  char *path;
  char *tmp;                 /* write: the temporary file */
  bool tmp_exists;
  char *prefix;              /* mkdir: the directory being made */
  size_t prefix_end;
  int tries;
  uv_file fd;                /* -1: none open */
  char *buf;                 /* read: what came; write, append: to go */
  size_t len, cap, off;
  int mode;
  bool keep_mode;            /* write: the file exists; keep its mode */
  fs_step after_write;
  int err;                   /* the failure, or 0 */
  char *err_path;            /* the path it concerns, when not path */
  uv_stat_t st;
  char **names;
  size_t nnames;
};

static size_t live;

size_t mb_fs_live(void) { return live; }

static void op_free(fs_op *op) {
  free(op->path);
  free(op->tmp);
  free(op->prefix);
  free(op->buf);
  free(op->err_path);
  for (size_t i = 0; i < op->nnames; i++) free(op->names[i]);
  free(op->names);
  free(op);
  live--;
}

static bool abandoned(const fs_op *op) { return op->async && !op->run; }

/* Take in the result of the request just done, keeping what the steps
 * need, before the request is cleaned up. */
static void complete(fs_op *op) {
  uv_fs_t *req = &op->req;
  op->result = req->result;
  if (req->result >= 0) {
    switch (req->fs_type) {
    case UV_FS_OPEN:
      op->fd = (uv_file)req->result;
      break;
    case UV_FS_STAT:
      op->st = req->statbuf;
      break;
    case UV_FS_SCANDIR: {
      size_t cap = (size_t)req->result + 1;
      op->names = mb_xmalloc(cap * sizeof *op->names);
      /* On to UV_EOF: libuv frees the last entry only there. */
      uv_dirent_t ent;
      while (uv_fs_scandir_next(req, &ent) != UV_EOF) {
        if (op->nnames == cap)
          op->names = mb_xrealloc(op->names, (cap *= 2) * sizeof *op->names);
        op->names[op->nnames++] = mb_xstrdup(ent.name);
      }
      break;
    }
    default:
      break;
    }
  }
  uv_fs_req_cleanup(req);
  op->ready = true;
}

static void on_fs(uv_fs_t *req);

/* Make a request whose result goes to next. Synchronous ops have the
 * result at once; so does an async request libuv refused to start. */
#define REQUEST(op, next, fn, ...)                                       \
  do {                                                                   \
    (op)->step = (next);                                                 \
    int rc_ = fn((op)->loop, &(op)->req, __VA_ARGS__,                    \
                 (op)->async ? on_fs : NULL);                            \
    if (!(op)->async || rc_ < 0) {                                       \
      if (rc_ < 0) (op)->req.result = rc_;                               \
      complete(op);                                                      \
    }                                                                    \
  } while (0)

static void drive(fs_op *op) {
  while (op->ready) {
    op->ready = false;
    fs_step step = op->step;
    op->step = NULL;
    step(op);
  }
}

static void on_fs(uv_fs_t *req) {
  fs_op *op = (fs_op *)req;
  complete(op);
  drive(op);
  if (!op->finished) return;
  mb_run *run = op->run;
  int n = op->nresults;
  op_free(op);
  if (run) mb_run_wake(run, n);
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void push_stat(lua_State *L, const uv_stat_t *st) {
  lua_createtable(L, 0, 6);
  mode_t m = (mode_t)st->st_mode;
  const char *type = S_ISREG(m)    ? "file"
                     : S_ISDIR(m)  ? "directory"
                     : S_ISFIFO(m) ? "fifo"
                     : S_ISSOCK(m) ? "socket"
                     : S_ISCHR(m)  ? "char"
                     : S_ISBLK(m)  ? "block"
                                   : "other";
  lua_pushstring(L, type);
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)st->st_size);
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, (lua_Integer)(st->st_mode & 07777));
  lua_setfield(L, -2, "mode");
  const uv_timespec_t *times[] = {&st->st_mtim, &st->st_atim, &st->st_ctim};
  const char *names[] = {"mtime", "atime", "ctime"};
  for (int i = 0; i < 3; i++) {
    lua_pushnumber(L, (double)times[i]->tv_sec + times[i]->tv_nsec / 1e9);
    lua_setfield(L, -2, names[i]);
  }
}

/* The op is over: push its results where someone waits for them. */
static void conclude(fs_op *op) {
  op->finished = true;
  if (abandoned(op)) return;
  lua_State *L = op->L;
  if (op->err) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", op->err_path ? op->err_path : op->path,
                    uv_strerror(op->err));
    lua_pushstring(L, uv_err_name(op->err));
    op->nresults = 3;
    return;
  }
  switch (op->kind) {
  case OP_READ:
    lua_pushlstring(L, op->buf ? op->buf : "", op->len);
    break;
  case OP_LIST:
    qsort(op->names, op->nnames, sizeof *op->names, by_name);
    lua_createtable(L, (int)op->nnames, 0);
    for (size_t i = 0; i < op->nnames; i++) {
      lua_pushstring(L, op->names[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    break;
  case OP_STAT:
    push_stat(L, &op->st);
    break;
  default:
    lua_pushboolean(L, 1);
  }
  op->nresults = 1;
}

/* Close what is open and remove the temporary file left, then conclude.
 * These requests are never cancelled. */
static void wind_up(fs_op *op) {
  op->winding_up = true;
  if (op->fd >= 0) {
    uv_file fd = op->fd;
    op->fd = -1;
    REQUEST(op, wind_up, uv_fs_close, fd);
    return;
  }
  if (op->tmp_exists) {
    op->tmp_exists = false;
    REQUEST(op, wind_up, uv_fs_unlink, op->tmp);
    return;
  }
  conclude(op);
}

static void fail(fs_op *op, ssize_t err, const char *path) {
  if (!op->err) {
    op->err = (int)err;
    if (path) op->err_path = mb_xstrdup(path);
  }
  wind_up(op);
}

/* For the steps: stop here when the run has gone. */
#define UNLESS_ABANDONED(op)                                             \
  do {                                                                   \
    if (abandoned(op)) {                                                 \
      wind_up(op);                                                       \
      return;                                                            \
    }                                                                    \
  } while (0)

/* ---- writing out op->buf (write, append) ---- */

static void write_more(fs_op *op);

static void wrote(fs_op *op) {
  if (op->result < 0) {
    fail(op, op->result, NULL);
    return;
  }
  op->off += (size_t)op->result;
  write_more(op);
}

static void write_more(fs_op *op) {
  UNLESS_ABANDONED(op);
  if (op->off == op->len) {
    op->after_write(op);
    return;
  }
  size_t left = op->len - op->off;
  uv_buf_t b = uv_buf_init(op->buf + op->off,
                           (unsigned)(left > MAX_IO ? MAX_IO : left));
  REQUEST(op, wrote, uv_fs_write, op->fd, &b, 1, -1);
}

/* ---- read ---- */

static void read_more(fs_op *op);

static void read_got(fs_op *op) {
  if (op->result < 0) {
    fail(op, op->result, NULL);
    return;
  }
  if (op->result == 0) {
    wind_up(op);
    return;
  }
  op->len += (size_t)op->result;
  read_more(op);
}

static void read_more(fs_op *op) {
  UNLESS_ABANDONED(op);
  if (op->cap - op->len < READ_CHUNK) {
    op->cap = op->cap ? op->cap * 2 : READ_CHUNK;
    if (op->cap - op->len < READ_CHUNK) op->cap = op->len + READ_CHUNK;
    op->buf = mb_xrealloc(op->buf, op->cap);
  }
  /* A buffer's length is an unsigned int: ask for no more at a time. */
  size_t room = op->cap - op->len;
  if (room > MAX_IO) room = MAX_IO;
  uv_buf_t b = uv_buf_init(op->buf + op->len, (unsigned)room);
  REQUEST(op, read_got, uv_fs_read, op->fd, &b, 1, -1);
}

static void read_opened(fs_op *op) {
  if (op->result < 0) {
    fail(op, op->result, NULL);
    return;
  }
  read_more(op);
}

static void read_start(fs_op *op) {
  REQUEST(op, read_opened, uv_fs_open, op->path, O_RDONLY | O_CLOEXEC, 0);
}

/* ---- write: a temporary file beside the target, fsync, rename ---- */

static void write_renamed(fs_op *op) {
  if (op->result < 0) {
    fail(op, op->result, NULL);
    return;
  }
  op->tmp_exists = false;
  wind_up(op);
}

static void write_closed(fs_op *op) {
  if (op->result < 0) {
    fail(op, op->result, NULL);
    return;
  }
  UNLESS_ABANDONED(op);
  REQUEST(op, write_renamed, uv_fs_rename, op->tmp, op->path);
}

static void write_synced(fs_op *op) {
  if (op->result < 0) {
    fail(op, op->result, NULL);
    return;
  }
  UNLESS_ABANDONED(op);
  uv_file fd = op->fd;
  op->fd = -1;
  REQUEST(op, write_closed, uv_fs_close, fd);
}

static void write_all_out(fs_op *op) {
  REQUEST(op, write_synced, uv_fs_fsync, op->fd);
}

static void write_chmodded(fs_op *op) {
  if (op->result < 0) {
    fail(op, op->result, NULL);
    return;
  }
  write_more(op);
}

static void write_open_tmp(fs_op *op);

static void write_tmp_opened(fs_op *op) {
  if (op->result == UV_EEXIST && ++op->tries < TMP_TRIES) {
    write_open_tmp(op);
    return;
  }
  if (op->result < 0) {
    fail(op, op->result, NULL);
    return;
  }
  op->tmp_exists = true;
  UNLESS_ABANDONED(op);
  /* open() applies the umask; a file being replaced keeps its mode. */
  if (op->keep_mode)
    REQUEST(op, write_chmodded, uv_fs_fchmod, op->fd, op->mode);
  else
    write_more(op);
}

static void write_open_tmp(fs_op *op) {
  UNLESS_ABANDONED(op);
  static unsigned counter;
  const char *slash = strrchr(op->path, '/');
  int dir_len = slash ? (int)(slash - op->path + 1) : 0;
  const char *base = op->path + dir_len;
  size_t n = strlen(op->path) + 64;
  free(op->tmp);
  op->tmp = mb_xmalloc(n);
  snprintf(op->tmp, n, "%.*s.%s.tmp-%ld-%u", dir_len, op->path, base,
           (long)getpid(), counter++);
  REQUEST(op, write_tmp_opened, uv_fs_open, op->tmp,
          O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, op->mode);
}

static void write_statted(fs_op *op) {
  if (op->result == 0) {
    op->keep_mode = true;
    op->mode = (int)(op->st.st_mode & 07777);
  } else if (op->result == UV_ENOENT) {
    op->mode = 0666;
  } else {
    fail(op, op->result, NULL);
    return;
  }
  write_open_tmp(op);
}

static void write_start(fs_op *op) {
  op->after_write = write_all_out;
  REQUEST(op, write_statted, uv_fs_stat, op->path);
}

/* ---- append ---- */

static void append_closed(fs_op *op) {
  if (op->result < 0) {
    fail(op, op->result, NULL);
    return;
  }
  wind_up(op);
}

static void append_all_out(fs_op *op) {
  uv_file fd = op->fd;
  op->fd = -1;
  REQUEST(op, append_closed, uv_fs_close, fd);
}

static void append_opened(fs_op *op) {
  if (op->result < 0) {
    fail(op, op->result, NULL);
    return;
  }
  write_more(op);
}

static void append_start(fs_op *op) {
  op->after_write = append_all_out;
  REQUEST(op, append_opened, uv_fs_open, op->path,
          O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
}

/* ---- list, stat ---- */

static void done_unless_failed(fs_op *op) {
  if (op->result < 0) {
    fail(op, op->result, NULL);
    return;
  }
  wind_up(op);
}

static void list_start(fs_op *op) {
  REQUEST(op, done_unless_failed, uv_fs_scandir, op->path, 0);
}

static void stat_start(fs_op *op) {
  REQUEST(op, done_unless_failed, uv_fs_stat, op->path);
}

/* ---- remove: a file, or an empty directory ---- */

static void remove_unlinked(fs_op *op) {
  if (op->result == UV_EISDIR) {
    UNLESS_ABANDONED(op);
    REQUEST(op, done_unless_failed, uv_fs_rmdir, op->path);
    return;
  }
  done_unless_failed(op);
}

static void remove_start(fs_op *op) {
  REQUEST(op, remove_unlinked, uv_fs_unlink, op->path);
}

/* ---- mkdir, with the parents that are missing ---- */

static void mkdir_next(fs_op *op);

static void mkdir_checked(fs_op *op) {
  if (op->result < 0) {
    fail(op, op->result, NULL);
    return;
  }
  if (!S_ISDIR(op->st.st_mode)) {
    fail(op, UV_EEXIST, NULL);
    return;
  }
  wind_up(op);
}

static void mkdir_made(fs_op *op) {
  if (op->result < 0 && op->result != UV_EEXIST) {
    fail(op, op->result, op->prefix);
    return;
  }
  if (op->path[op->prefix_end] == '\0') {
    /* Made by someone else meanwhile, or not a directory at all. */
    if (op->result == UV_EEXIST) {
      UNLESS_ABANDONED(op);
      REQUEST(op, mkdir_checked, uv_fs_stat, op->path);
      return;
    }
    wind_up(op);
    return;
  }
  mkdir_next(op);
}

static void mkdir_next(fs_op *op) {
  UNLESS_ABANDONED(op);
  size_t end = op->prefix_end;
  while (op->path[end] == '/') end++;
  while (op->path[end] && op->path[end] != '/') end++;
  op->prefix_end = end;
  free(op->prefix);
  op->prefix = mb_xmalloc(end + 1);
  memcpy(op->prefix, op->path, end);
  op->prefix[end] = '\0';
  REQUEST(op, mkdir_made, uv_fs_mkdir, op->prefix, 0777);
}

static void mkdir_statted(fs_op *op) {
  if (op->result == 0) {
    if (!S_ISDIR(op->st.st_mode)) {
      fail(op, UV_EEXIST, NULL);
      return;
    }
    wind_up(op);
    return;
  }
  if (op->result != UV_ENOENT) {
    fail(op, op->result, NULL);
    return;
  }
  mkdir_next(op);
}

static void mkdir_start(fs_op *op) {
  /* "a/b/" is "a/b"; "/" stays itself. */
  size_t n = strlen(op->path);
  while (n > 1 && op->path[n - 1] == '/') op->path[--n] = '\0';
  REQUEST(op, mkdir_statted, uv_fs_stat, op->path);
}

/* ---- from Lua ---- */

static void cancel_op(mb_run *run, void *wait) {
  (void)run;
  fs_op *op = wait;
  op->run = NULL;
  /* A queued request ends with UV_ECANCELED; one already running in the
   * pool cannot be stopped, and its callback finds the op abandoned. A
   * close is never cancelled: its descriptor would stay open. */
  if (!op->winding_up && op->req.fs_type != UV_FS_CLOSE)
    uv_cancel((uv_req_t *)&op->req);
}

static bool main_thread(lua_State *L) {
  bool is_main = lua_pushthread(L) == 1;
  lua_pop(L, 1);
  return is_main;
}

/* Start op on L, waiting on the loop when L is a run's thread. */
static int start(lua_State *L, const char *name, int kind, fs_step first,
                 int data_idx) {
  const char *path = luaL_checkstring(L, 1);
  size_t len = 0;
  const char *data = data_idx ? luaL_checklstring(L, data_idx, &len) : NULL;
  mb_run *run = mb_run_current(L);
  if (!run && mb_run_executing() && !main_thread(L)) {
    /* Level 2: the job's line that called fs.X, not fs.lua's. */
    luaL_where(L, 2);
    lua_pushfstring(L, "%s: a coroutine a job made cannot wait on the "
                    "loop; call it from the run's own code", name);
    lua_concat(L, 2);
    return lua_error(L);
  }
  fs_op *op = mb_xcalloc(1, sizeof *op);
  live++;
  op->kind = kind;
  op->path = mb_xstrdup(path);
  op->fd = -1;
  if (data) {
    op->buf = mb_xmalloc(len ? len : 1);
    memcpy(op->buf, data, len);
    op->len = len;
  }
  op->L = L;
  op->async = run != NULL;
  op->run = run;
  op->loop = run ? mb_clock_loop(mb_run_clock(run)) : uv_default_loop();
  first(op);
  drive(op);
  if (op->finished) {
    int n = op->nresults;
    op_free(op);
    return n;
  }
  return mb_run_wait(run, cancel_op, op);
}

static int fs_read(lua_State *L) {
  return start(L, "fs.read", OP_READ, read_start, 0);
}
static int fs_write(lua_State *L) {
  return start(L, "fs.write", OP_WRITE, write_start, 2);
}
static int fs_append(lua_State *L) {
  return start(L, "fs.append", OP_APPEND, append_start, 2);
}
static int fs_list(lua_State *L) {
  return start(L, "fs.list", OP_LIST, list_start, 0);
}
static int fs_stat(lua_State *L) {
  return start(L, "fs.stat", OP_STAT, stat_start, 0);
}
static int fs_remove(lua_State *L) {
  return start(L, "fs.remove", OP_REMOVE, remove_start, 0);
}
static int fs_mkdir(lua_State *L) {
  return start(L, "fs.mkdir", OP_MKDIR, mkdir_start, 0);
}

static int fs_live(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)live);
  return 1;
}

int luaopen_moonbeat_core_fs(lua_State *L) {
  static const luaL_Reg functions[] = {
    {"read", fs_read},
    {"write", fs_write},
    {"append", fs_append},
    {"list", fs_list},
    {"stat", fs_stat},
    {"remove", fs_remove},
    {"mkdir", fs_mkdir},
    {"live", fs_live},
    {NULL, NULL}
  };
  luaL_newlib(L, functions);
  return 1;
}
