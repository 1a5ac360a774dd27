/* sqlite.c: statements on libuv's thread pool. Each connection keeps a
 * queue of statements and runs one at a time in a worker; parameters
 * go in and rows come out as C values, so workers never touch Lua. A
 * transaction belongs to the run that began it: other runs' statements
 * wait until it ends, so they never land inside it. */
#include "sqlite.h"

#include <lauxlib.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "run.h"

#define DB_MT "moonbeat.sqlite.db"

/* A busy database is retried this often (ms) until busy_timeout. */
#define BUSY_STEP_MS 5

enum { JOB_EXEC, JOB_QUERY, JOB_BEGIN, JOB_ROLLBACK };

typedef struct value {
  int type;  /* SQLITE_INTEGER, _FLOAT, _TEXT, _BLOB or _NULL */
  union {
    sqlite3_int64 i;
    double d;
    struct {
      char *p;
      size_t n;
    } s;
  } v;
} value;

typedef struct named {
  char *name;  /* without its ':', '@' or '$' */
  value val;
} named;

typedef struct conn conn;
typedef struct job job;

struct job {
  uv_work_t req;
  conn *c;
  uv_loop_t *loop;
  mb_run *run;          /* waits for the result; NULL: nobody does */
  const void *owner;    /* the run that asked: compared, never followed */
  lua_State *co;
  int kind;
  char *sql;
  size_t sql_len;
  value *pos;
  int npos;
  named *names;
  int nnames;
  /* Results, filled by the worker. */
  int rc;
  bool misuse;          /* the caller's mistake, not the database's */
  char *errmsg;
  int ncols;
  char **cols;
  value *cells;
  size_t ncells, cells_cap;
  sqlite3_int64 changes, rowid;
  job *next;
};

struct conn {
  sqlite3 *db;          /* NULL once closed */
  job *queue;           /* waiting for the worker, in order */
  job *held;            /* other runs' statements during a transaction */
  job *active;          /* in a worker now */
  /* The run whose transaction is open, or the conn itself while that
   * transaction's rollback is on its way. */
  const void *tx_owner;
  uv_loop_t *tx_loop;
  atomic_bool interrupted;
  int busy_timeout_ms;
  struct timespec busy_since;  /* the worker's */
  bool closing;         /* closed from Lua: closes once idle */
  bool lua_gone;        /* its userdata is collected */
  conn *next, **prevp;
};

static conn *conns;
static int live_jobs;

/* ---- lists ---- */

static void push_back(job **head, job *j) {
  while (*head) head = &(*head)->next;
  j->next = NULL;
  *head = j;
}

static job *pop_front(job **head) {
  job *j = *head;
  if (j) *head = j->next;
  return j;
}

static bool unlink_job(job **head, job *j) {
  for (; *head; head = &(*head)->next) {
    if (*head == j) {
      *head = j->next;
      return true;
    }
  }
  return false;
}

/* ---- values and jobs ---- */

static void value_free(value *v) {
  if (v->type == SQLITE_TEXT || v->type == SQLITE_BLOB) free(v->v.s.p);
}

static void value_copy_bytes(value *v, int type, const void *p, size_t n) {
  v->type = type;
  v->v.s.p = mb_xmalloc(n + 1);
  if (n) memcpy(v->v.s.p, p, n);
  v->v.s.p[n] = '\0';
  v->v.s.n = n;
}

static job *job_new(conn *c, int kind, const char *sql, size_t len) {
  job *j = mb_xcalloc(1, sizeof *j);
  j->c = c;
  j->kind = kind;
  j->sql = mb_xmalloc(len + 1);
  memcpy(j->sql, sql, len);
  j->sql[len] = '\0';
  j->sql_len = len;
  j->req.data = j;
  live_jobs++;
  return j;
}

static void job_free(job *j) {
  for (int i = 0; i < j->npos; i++) value_free(&j->pos[i]);
  free(j->pos);
  for (int i = 0; i < j->nnames; i++) {
    free(j->names[i].name);
    value_free(&j->names[i].val);
  }
  free(j->names);
  for (int i = 0; i < j->ncols; i++) free(j->cols[i]);
  free(j->cols);
  for (size_t i = 0; i < j->ncells; i++) value_free(&j->cells[i]);
  free(j->cells);
  free(j->errmsg);
  free(j->sql);
  free(j);
  live_jobs--;
}

/* ---- in the worker: no Lua here ---- */

static void fail_db(job *j, sqlite3 *db, int rc) {
  j->rc = rc;
  j->errmsg = mb_xstrdup(sqlite3_errmsg(db));
}

static void fail_misuse(job *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void fail_misuse(job *j, const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  j->rc = SQLITE_MISUSE;
  j->misuse = true;
  j->errmsg = mb_xstrdup(buf);
}

static int bind_value(sqlite3_stmt *st, int i, const value *v) {
  switch (v->type) {
  case SQLITE_INTEGER: return sqlite3_bind_int64(st, i, v->v.i);
  case SQLITE_FLOAT: return sqlite3_bind_double(st, i, v->v.d);
  case SQLITE_TEXT:
    return sqlite3_bind_text64(st, i, v->v.s.p, v->v.s.n, SQLITE_STATIC,
                               SQLITE_UTF8);
  default: return sqlite3_bind_null(st, i);
  }
}

static bool bind_all(job *j, sqlite3 *db, sqlite3_stmt *st) {
  int n = sqlite3_bind_parameter_count(st);
  int positional = 0;
  for (int i = 1; i <= n; i++) {
    const char *name = sqlite3_bind_parameter_name(st, i);
    const value *v = NULL;
    if (!name || name[0] == '?') {
      positional++;
      if (i > j->npos) {
        fail_misuse(j, "parameter %d has no value (%d given)", i, j->npos);
        return false;
      }
      v = &j->pos[i - 1];
    } else {
      for (int k = 0; k < j->nnames && !v; k++)
        if (strcmp(j->names[k].name, name + 1) == 0) v = &j->names[k].val;
      if (!v) {
        fail_misuse(j, "no value for parameter %s", name);
        return false;
      }
    }
    int rc = bind_value(st, i, v);
    if (rc != SQLITE_OK) {
      fail_db(j, db, rc);
      return false;
    }
  }
  if (j->npos > positional) {
    fail_misuse(j, "%d values given for %d positional parameters", j->npos,
                positional);
    return false;
  }
  return true;
}

static void keep_row(job *j, sqlite3_stmt *st) {
  if (j->ncells + (size_t)j->ncols > j->cells_cap) {
    j->cells_cap = j->cells_cap ? 2 * j->cells_cap : 64;
    while (j->cells_cap < j->ncells + (size_t)j->ncols) j->cells_cap *= 2;
    j->cells = mb_xrealloc(j->cells, j->cells_cap * sizeof *j->cells);
  }
  for (int i = 0; i < j->ncols; i++) {
    value *v = &j->cells[j->ncells++];
    int type = sqlite3_column_type(st, i);
    v->type = type;
    if (type == SQLITE_INTEGER) {
      v->v.i = sqlite3_column_int64(st, i);
    } else if (type == SQLITE_FLOAT) {
      v->v.d = sqlite3_column_double(st, i);
    } else if (type == SQLITE_TEXT || type == SQLITE_BLOB) {
      const void *p = type == SQLITE_TEXT
                          ? (const void *)sqlite3_column_text(st, i)
                          : sqlite3_column_blob(st, i);
      value_copy_bytes(v, type, p, (size_t)sqlite3_column_bytes(st, i));
    }
  }
}

/* Is there another statement after tail? */
static bool more_statements(sqlite3 *db, const char *tail, const char *end) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db, tail, (int)(end - tail), &st, NULL);
  sqlite3_finalize(st);
  return rc != SQLITE_OK || st != NULL;
}

static void work(uv_work_t *req) {
  job *j = req->data;
  conn *c = j->c;
  sqlite3 *db = c->db;
  const char *sql = j->sql, *end = j->sql + j->sql_len;
  bool single = j->kind == JOB_QUERY || j->npos > 0 || j->nnames > 0;
  bool first = true;
  while (sql < end) {
    if (atomic_load(&c->interrupted)) {
      j->rc = SQLITE_INTERRUPT;
      j->errmsg = mb_xstrdup(sqlite3_errstr(SQLITE_INTERRUPT));
      return;
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    int rc = sqlite3_prepare_v2(db, sql, (int)(end - sql), &st, &tail);
    if (rc != SQLITE_OK) {
      fail_db(j, db, rc);
      return;
    }
    if (!st) break;  /* only comments and spaces were left */
    if (first && single && more_statements(db, tail, end)) {
      sqlite3_finalize(st);
      fail_misuse(j, "one statement only when it has parameters or returns "
                  "rows; exec a script of several without parameters");
      return;
    }
    if (first && !bind_all(j, db, st)) {
      sqlite3_finalize(st);
      return;
    }
    if (j->kind == JOB_QUERY && first) {
      j->ncols = sqlite3_column_count(st);
      j->cols = mb_xcalloc((size_t)j->ncols + 1, sizeof *j->cols);
      for (int i = 0; i < j->ncols; i++)
        j->cols[i] = mb_xstrdup(sqlite3_column_name(st, i));
    }
    sqlite3_int64 total = sqlite3_total_changes64(db);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
      if (j->kind == JOB_QUERY) keep_row(j, st);
    if (rc != SQLITE_DONE) {
      fail_db(j, db, rc);
      sqlite3_finalize(st);
      return;
    }
    /* sqlite3_changes keeps the count of the last INSERT, UPDATE or
     * DELETE: a statement that changed nothing must not report it. */
    j->changes = sqlite3_total_changes64(db) == total ? 0
                                                      : sqlite3_changes64(db);
    sqlite3_finalize(st);
    first = false;
    sql = tail;
  }
  j->rc = SQLITE_OK;
  j->rowid = sqlite3_last_insert_rowid(db);
}

/* sqlite's own busy handler cannot be interrupted; this one stops
 * waiting as soon as the run it works for has ended. */
static int on_busy(void *data, int count) {
  conn *c = data;
  if (atomic_load(&c->interrupted)) return 0;
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  if (count == 0) c->busy_since = now;
  long waited = (now.tv_sec - c->busy_since.tv_sec) * 1000 +
                (now.tv_nsec - c->busy_since.tv_nsec) / 1000000;
  if (waited >= c->busy_timeout_ms) return 0;
  struct timespec step = {0, BUSY_STEP_MS * 1000000L};
  nanosleep(&step, NULL);
  return 1;
}

/* sqlite3_interrupt alone can be lost: a statement that starts while no
 * other is active clears the flag it sets. The worker looks at ours
 * every PROGRESS_STEPS virtual machine steps instead. */
#define PROGRESS_STEPS 1000

static int on_progress(void *data) {
  conn *c = data;
  return atomic_load(&c->interrupted) ? 1 : 0;
}

/* ---- on the loop ---- */

static const char *code_name(int rc) {
  switch (rc & 0xff) {
  case SQLITE_CONSTRAINT: return "constraint";
  case SQLITE_BUSY: return "busy";
  case SQLITE_LOCKED: return "locked";
  case SQLITE_READONLY: return "readonly";
  case SQLITE_CANTOPEN: return "cantopen";
  case SQLITE_FULL: return "full";
  case SQLITE_IOERR: return "ioerr";
  case SQLITE_CORRUPT: return "corrupt";
  case SQLITE_NOTADB: return "notadb";
  case SQLITE_INTERRUPT: return "interrupt";
  case SQLITE_TOOBIG: return "toobig";
  case SQLITE_MISMATCH: return "mismatch";
  case SQLITE_RANGE: return "range";
  case SQLITE_PERM: return "perm";
  case SQLITE_AUTH: return "auth";
  case SQLITE_NOMEM: return "nomem";
  case SQLITE_MISUSE: return "misuse";
  default: return "error";
  }
}

static void push_value(lua_State *co, const value *v) {
  switch (v->type) {
  case SQLITE_INTEGER: lua_pushinteger(co, (lua_Integer)v->v.i); break;
  case SQLITE_FLOAT: lua_pushnumber(co, v->v.d); break;
  case SQLITE_TEXT:
  case SQLITE_BLOB: lua_pushlstring(co, v->v.s.p, v->v.s.n); break;
  default: lua_pushnil(co);
  }
}

/* Results on the run's thread: rows (query), or changes and the last
 * rowid (exec), or nil, message, code. */
static int push_results(job *j) {
  lua_State *co = j->co;
  /* A yielded thread has the room a C function is given (20 slots);
   * no more is needed. */
  if (j->rc != SQLITE_OK) {
    lua_pushnil(co);
    lua_pushstring(co, j->errmsg ? j->errmsg : sqlite3_errstr(j->rc));
    lua_pushstring(co, j->misuse ? "misuse" : code_name(j->rc));
    return 3;
  }
  if (j->kind != JOB_QUERY) {
    lua_pushinteger(co, (lua_Integer)j->changes);
    lua_pushinteger(co, (lua_Integer)j->rowid);
    return 2;
  }
  size_t nrows = j->ncols ? j->ncells / (size_t)j->ncols : 0;
  lua_createtable(co, nrows < INT32_MAX ? (int)nrows : 0, 0);
  for (size_t r = 0; r < nrows; r++) {
    lua_createtable(co, 0, j->ncols);
    for (int i = 0; i < j->ncols; i++) {
      const value *v = &j->cells[r * (size_t)j->ncols + (size_t)i];
      if (v->type == SQLITE_NULL) continue;
      push_value(co, v);
      lua_setfield(co, -2, j->cols[i]);
    }
    lua_rawseti(co, -2, (lua_Integer)r + 1);
  }
  return 1;
}

static void after_work(uv_work_t *req, int status);

static void release_tx(conn *c) {
  c->tx_owner = NULL;
  /* The statements that waited for it go first, in their order. */
  job **tail = &c->held;
  while (*tail) tail = &(*tail)->next;
  *tail = c->queue;
  c->queue = c->held;
  c->held = NULL;
}

static void pump(conn *c) {
  while (!c->active && c->queue) {
    job *j = pop_front(&c->queue);
    if (c->tx_owner && j->owner != c->tx_owner && j->kind != JOB_ROLLBACK) {
      push_back(&c->held, j);
      continue;
    }
    if (j->kind == JOB_BEGIN) {
      c->tx_owner = j->owner;
      c->tx_loop = j->loop;
    }
    atomic_store(&c->interrupted, false);
    c->active = j;
    uv_queue_work(j->loop, &j->req, work, after_work);
  }
}

static void conn_free(conn *c) {
  *c->prevp = c->next;
  if (c->next) c->next->prevp = c->prevp;
  free(c);
}

static bool idle(const conn *c) {
  return !c->active && !c->queue && !c->held;
}

/* Close the database once nothing queued needs it; free the conn once
 * Lua has let go of it too. Returns true when c is freed. */
static bool close_if_done(conn *c) {
  if (!c->closing || !idle(c)) return false;
  if (c->db) {
    sqlite3_close_v2(c->db);
    c->db = NULL;
  }
  if (!c->lua_gone) return false;
  conn_free(c);
  return true;
}

static void after_work(uv_work_t *req, int status) {
  (void)status;
  job *j = req->data;
  conn *c = j->c;
  c->active = NULL;
  if (j->kind == JOB_ROLLBACK ||
      (j->kind == JOB_BEGIN && j->rc != SQLITE_OK && c->tx_owner == j->owner))
    release_tx(c);
  mb_run *run = j->run;
  int n = run ? push_results(j) : 0;
  job_free(j);
  pump(c);
  close_if_done(c);
  if (run) mb_run_wake(run, n);
}

static void cancel_job(mb_run *run, void *wait) {
  (void)run;
  job *j = wait;
  conn *c = j->c;
  if (c->active == j) {
    /* The worker has it: stop it there; after_work frees it. */
    j->run = NULL;
    atomic_store(&c->interrupted, true);
    sqlite3_interrupt(c->db);
    return;
  }
  if (unlink_job(&c->queue, j) || unlink_job(&c->held, j)) job_free(j);
  close_if_done(c);
}

void mb_sqlite_loop_drain(uv_loop_t *loop) {
  for (;;) {
    bool busy = false;
    for (conn *c = conns; c && !busy; c = c->next)
      busy = c->active && c->active->loop == loop;
    if (!busy) return;
    uv_run(loop, UV_RUN_ONCE);
  }
}

/* ---- from Lua ---- */

static conn *check_conn(lua_State *L) {
  conn **cp = luaL_checkudata(L, 1, DB_MT);
  if (!*cp || (*cp)->closing)
    luaL_error(L, "sqlite: the database is closed");
  return *cp;
}

static mb_run *check_run(lua_State *L) {
  mb_run *run = mb_run_current(L);
  if (!run)
    luaL_error(L, "sqlite: only a job's run can run statements (this code "
               "is not running as a job's run function)");
  return run;
}

static int value_type(lua_State *L, int idx) {
  switch (lua_type(L, idx)) {
  case LUA_TNIL: return SQLITE_NULL;
  case LUA_TBOOLEAN: return SQLITE_INTEGER;
  case LUA_TNUMBER: return lua_isinteger(L, idx) ? SQLITE_INTEGER
                                                 : SQLITE_FLOAT;
  case LUA_TSTRING: return SQLITE_TEXT;
  case LUA_TLIGHTUSERDATA:  /* json.null */
    return lua_touserdata(L, idx) == NULL ? SQLITE_NULL : -1;
  default: return -1;
  }
}

static void to_value(lua_State *L, int idx, value *v) {
  v->type = value_type(L, idx);
  if (lua_type(L, idx) == LUA_TBOOLEAN) {
    v->v.i = lua_toboolean(L, idx);
  } else if (v->type == SQLITE_INTEGER) {
    v->v.i = lua_tointeger(L, idx);
  } else if (v->type == SQLITE_FLOAT) {
    v->v.d = lua_tonumber(L, idx);
  } else if (v->type == SQLITE_TEXT) {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    value_copy_bytes(v, SQLITE_TEXT, s, n);
  }
}

/* Check the parameters at idx (a table) before anything is allocated,
 * so that a bad one raises without leaking. npos < 0: the table's own
 * length and string keys; otherwise exactly npos positional values. */
static void check_params(lua_State *L, int idx, lua_Integer npos) {
  if (npos >= 0) {
    for (lua_Integer i = 1; i <= npos; i++) {
      lua_rawgeti(L, idx, i);
      if (value_type(L, -1) < 0)
        luaL_error(L, "sqlite: parameter %d: cannot bind a %s", (int)i,
                   luaL_typename(L, -1));
      lua_pop(L, 1);
    }
    return;
  }
  lua_Integer len = (lua_Integer)lua_rawlen(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) == LUA_TSTRING) {
      const char *k = lua_tostring(L, -2);
      if (!*k || ((*k == ':' || *k == '@' || *k == '$') && !k[1]))
        luaL_error(L, "sqlite: parameter names cannot be empty");
    } else if (!lua_isinteger(L, -2) || lua_tointeger(L, -2) < 1 ||
               lua_tointeger(L, -2) > len) {
      luaL_error(L, "sqlite: parameters: a key must be a name or a list "
                 "index, got %s", luaL_typename(L, -2));
    }
    if (value_type(L, -1) < 0) {
      if (lua_type(L, -2) == LUA_TSTRING)
        luaL_error(L, "sqlite: parameter %s: cannot bind a %s",
                   lua_tostring(L, -2), luaL_typename(L, -1));
      luaL_error(L, "sqlite: parameter %d: cannot bind a %s",
                 (int)lua_tointeger(L, -2), luaL_typename(L, -1));
    }
    lua_pop(L, 1);
  }
}

static void take_params(lua_State *L, int idx, lua_Integer npos, job *j) {
  lua_Integer n = npos >= 0 ? npos : (lua_Integer)lua_rawlen(L, idx);
  if (n > 0) {
    j->pos = mb_xcalloc((size_t)n, sizeof *j->pos);
    for (lua_Integer i = 1; i <= n; i++) {
      lua_rawgeti(L, idx, i);
      to_value(L, -1, &j->pos[i - 1]);
      lua_pop(L, 1);
    }
    j->npos = (int)n;
  }
  if (npos >= 0) return;
  int cap = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) == LUA_TSTRING) {
      if (j->nnames == cap) {
        cap = cap ? 2 * cap : 4;
        j->names = mb_xrealloc(j->names, (size_t)cap * sizeof *j->names);
      }
      const char *k = lua_tostring(L, -2);
      if (*k == ':' || *k == '@' || *k == '$') k++;
      named *nm = &j->names[j->nnames++];
      nm->name = mb_xstrdup(k);
      to_value(L, -1, &nm->val);
    }
    lua_pop(L, 1);
  }
}

/* db:_run(kind, sql, params, npos): kind "exec", "query" or "begin";
 * params a table or nil; npos the number of positional values when
 * they came as separate arguments (nil: the table's own). Yields the
 * run until the worker is done. */
static int db_run(lua_State *L) {
  conn *c = check_conn(L);
  static const char *const kinds[] = {"exec", "query", "begin", NULL};
  static const int kind_of[] = {JOB_EXEC, JOB_QUERY, JOB_BEGIN};
  int kind = kind_of[luaL_checkoption(L, 2, NULL, kinds)];
  size_t len;
  const char *sql = luaL_checklstring(L, 3, &len);
  bool has_params = !lua_isnoneornil(L, 4);
  if (has_params) luaL_checktype(L, 4, LUA_TTABLE);
  lua_Integer npos = luaL_optinteger(L, 5, -1);
  mb_run *run = check_run(L);
  if (has_params) check_params(L, 4, npos);
  job *j = job_new(c, kind, sql, len);
  if (has_params) take_params(L, 4, npos, j);
  j->loop = mb_clock_loop(mb_run_clock(run));
  j->run = run;
  j->owner = run;
  j->co = L;
  push_back(&c->queue, j);
  pump(c);
  return mb_run_wait(run, cancel_job, j);
}

/* db:_token() -> the calling run, as a light userdata that stands for
 * it (never followed): what a transaction's guard releases with. */
static int db_token(lua_State *L) {
  check_conn(L);
  lua_pushlightuserdata(L, check_run(L));
  return 1;
}

/* db:_in_transaction() -> whether the calling run has one open. */
static int db_in_transaction(lua_State *L) {
  conn *c = check_conn(L);
  lua_pushboolean(L, c->tx_owner && c->tx_owner == mb_run_current(L));
  return 1;
}

/* db:_release(rollback, token): the transaction of token's run is over;
 * with rollback, roll it back first (without waiting: this is called
 * from a to-be-closed handler of a run that is ending). */
static int db_release(lua_State *L) {
  conn **cp = luaL_checkudata(L, 1, DB_MT);
  conn *c = *cp;
  bool rollback = lua_toboolean(L, 2);
  const void *token = lua_touserdata(L, 3);
  if (!c || !token || c->tx_owner != token) return 0;
  if (rollback && c->db) {
    static const char text[] = "ROLLBACK";
    job *j = job_new(c, JOB_ROLLBACK, text, sizeof text - 1);
    j->loop = c->tx_loop;
    j->next = c->queue;
    c->queue = j;
    c->tx_owner = c;
  } else {
    release_tx(c);
  }
  pump(c);
  return 0;
}

static void close_conn(conn *c) {
  if (!c) return;
  c->closing = true;
  close_if_done(c);
}

/* db:close(): statements already queued still run; then it closes. */
static int db_close(lua_State *L) {
  conn **cp = luaL_checkudata(L, 1, DB_MT);
  close_conn(*cp);
  return 0;
}

static int db_gc(lua_State *L) {
  conn **cp = luaL_checkudata(L, 1, DB_MT);
  conn *c = *cp;
  *cp = NULL;
  if (!c) return 0;
  c->lua_gone = true;
  c->closing = true;
  close_if_done(c);
  return 0;
}

static int db_is_open(lua_State *L) {
  conn **cp = luaL_checkudata(L, 1, DB_MT);
  lua_pushboolean(L, *cp && !(*cp)->closing);
  return 1;
}

/* open(path, readonly, create, busy_timeout_ms) -> db, or nil, message,
 * code. Opening reads nothing yet, so it is done here, on the loop. */
static int sqlite_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  bool readonly = lua_toboolean(L, 2);
  bool create = lua_toboolean(L, 3);
  lua_Integer busy_ms = luaL_checkinteger(L, 4);
  luaL_argcheck(L, busy_ms >= 0 && busy_ms <= INT32_MAX, 4, "out of range");
  int flags = readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
  if (create && !readonly) flags |= SQLITE_OPEN_CREATE;
  conn **cp = lua_newuserdatauv(L, sizeof *cp, 0);
  *cp = NULL;
  luaL_setmetatable(L, DB_MT);
  sqlite3 *db = NULL;
  int rc = sqlite3_open_v2(path, &db, flags, NULL);
  if (rc != SQLITE_OK) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path,
                    db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    lua_pushstring(L, code_name(rc));
    sqlite3_close(db);
    return 3;
  }
  conn *c = mb_xcalloc(1, sizeof *c);
  c->db = db;
  c->busy_timeout_ms = (int)busy_ms;
  atomic_init(&c->interrupted, false);
  sqlite3_busy_handler(db, on_busy, c);
  sqlite3_progress_handler(db, PROGRESS_STEPS, on_progress, c);
  c->next = conns;
  c->prevp = &conns;
  if (conns) conns->prevp = &c->next;
  conns = c;
  *cp = c;
  return 1;
}

/* stats() -> {connections, statements}: open connections and statements
 * queued or running, for the specs' leak checks. */
static int sqlite_stats(lua_State *L) {
  int n = 0;
  for (conn *c = conns; c; c = c->next) n += c->db != NULL;
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, n);
  lua_setfield(L, -2, "connections");
  lua_pushinteger(L, live_jobs);
  lua_setfield(L, -2, "statements");
  return 1;
}

static const luaL_Reg db_methods[] = {
  {"_run", db_run},
  {"_token", db_token},
  {"_in_transaction", db_in_transaction},
  {"_release", db_release},
  {"close", db_close},
  {"is_open", db_is_open},
  {NULL, NULL}
};

static const luaL_Reg sqlite_functions[] = {
  {"open", sqlite_open},
  {"stats", sqlite_stats},
  {NULL, NULL}
};

/* The module table has `methods`, the db's method table, so that
 * stdlib/sqlite.lua can add the methods it writes in Lua. */
int luaopen_moonbeat_core_sqlite(lua_State *L) {
  if (luaL_newmetatable(L, DB_MT)) {
    luaL_newlib(L, db_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, db_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, db_close);
    lua_setfield(L, -2, "__close");
  }
  luaL_newlib(L, sqlite_functions);
  lua_getfield(L, -2, "__index");
  lua_setfield(L, -2, "methods");
  lua_remove(L, -2);
  return 1;
}
