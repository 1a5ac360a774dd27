/* store.c: the sqlite store. WAL, synchronous=NORMAL, prepared
 * statements only, a versioned schema migrated forward, a lock file that
 * names its holder, and a write queue committed once per loop turn.
 *
 * The store commits on a writer thread with a connection of its own, so
 * that a burst of thousands of runs never holds the loop while sqlite
 * writes and syncs: the loop hands each turn's queue over and goes on.
 * Reads use the loop's connection and first wait for the writer to
 * finish what was handed to it, so they see every write made before
 * them. A ":memory:" store is a database of sqlite's memdb VFS, which two
 * connections of one process can share, so it works the same way. */
#define _GNU_SOURCE /* SCHED_BATCH */
#include "store.h"

#include <sched.h>

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif
#include <uv.h>

/* The schema this build writes; each entry migrates from the previous
 * version to the next. */
static const char *const migrations[] = {
  /* 0 -> 1 */
  "CREATE TABLE jobs ("
  "  id TEXT PRIMARY KEY, trigger TEXT, next_fire INTEGER,"
  "  last_fire INTEGER, paused INTEGER NOT NULL DEFAULT 0, pause_note TEXT,"
  "  retry_due INTEGER, retry_attempt INTEGER, retry_scheduled INTEGER,"
  "  ok INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,"
  "  timed_out INTEGER NOT NULL DEFAULT 0, missed INTEGER NOT NULL DEFAULT 0,"
  "  skipped INTEGER NOT NULL DEFAULT 0, cancelled INTEGER NOT NULL DEFAULT 0,"
  "  last_status TEXT, last_start INTEGER, last_duration INTEGER,"
  "  last_error TEXT, state TEXT);"
  "CREATE TABLE runs ("
  "  id INTEGER PRIMARY KEY, job_id TEXT NOT NULL, scheduled INTEGER,"
  "  started INTEGER, finished INTEGER, attempt INTEGER NOT NULL,"
  "  status TEXT NOT NULL, error TEXT, traceback TEXT, log_tail TEXT,"
  "  host TEXT, pid INTEGER);"
  "CREATE INDEX runs_by_job ON runs (job_id, id);"
  "CREATE INDEX runs_running ON runs (status) WHERE status = 'running';",
  /* 1 -> 2: jobs added at run time keep their definition. */
  "ALTER TABLE jobs ADD COLUMN spec TEXT;",
  /* 2 -> 3: a job's row is written lazily; it says which runs it holds
   * (checkpoint), and settled says up to which run every row holds
   * them. Rows written before held every run. */
  "ALTER TABLE jobs ADD COLUMN checkpoint INTEGER NOT NULL DEFAULT 0;"
  "CREATE TABLE store_state (id INTEGER PRIMARY KEY CHECK (id = 1),"
  "  settled INTEGER NOT NULL);"
  "INSERT INTO store_state VALUES (1, (SELECT coalesce(max(id), 0) FROM runs));"
  "UPDATE jobs SET checkpoint = (SELECT settled FROM store_state);",
};
#define SCHEMA_VERSION ((int)(sizeof migrations / sizeof migrations[0]))


#define RUN_COLUMNS \
  "SELECT id, job_id, scheduled, started, finished, attempt, status, error," \
  " traceback, log_tail, host, pid FROM runs"

enum { OP_SAVE_JOB, OP_DELETE_JOB, OP_SAVE_RUN, OP_PRUNE, OP_SETTLE };

typedef struct prune_op {
  mb_prune item;
  mb_time now;
  int max_rows;
} prune_op;

/* An op is its kind and where its record is: the records, and the
 * strings they point to, live in blocks that go with the ops from list
 * to list and are freed with them. A burst of runs then costs the loop
 * a few allocations, not one per op, the writer thread frees a few
 * blocks, not every op's strings, and growing the list of ops copies
 * 16 bytes an op, not the largest record. */
typedef struct op {
  int kind;
  union {
    mb_job_state *job;
    mb_run_record *run;
    char *job_id;
    long long settled;
    prune_op *prune;
  } u;
} op;

typedef struct block {
  struct block *next;
  size_t used, cap;
  char data[];
} block;

/* A queue's records and text live in blocks. Blocks of BLOCK_MAX the
 * writer is done with wait for the loop to fill them again, up to
 * SPARE_BLOCKS of them, and a new block is one of those when there is
 * one; else it is twice the last of the turn, from BLOCK_MIN up to
 * BLOCK_MAX (a larger record has one of its own), so that a turn of one
 * run allocates a little and a burst a few large blocks. The large ones
 * are kept because a malloc or free of that size makes glibc
 * consolidate its free lists (every small chunk Lua freed), on either
 * thread, under the arena's lock. */
enum { BLOCK_MIN = 1024, BLOCK_MAX = 64 * 1024, SPARE_BLOCKS = 32 };

typedef struct op_list {
  op *ops;
  size_t len, cap;
  block *blocks, *blocks_tail;  /* the newest, which fills, first */
} op_list;

enum {
  ST_SAVE_JOB,
  ST_DELETE_JOB,
  ST_SAVE_RUN,
  ST_LOAD_JOBS,
  ST_RUNNING,
  ST_MARK_INTERRUPTED,
  ST_PRUNE_COUNT,
  ST_PRUNE_AGE,
  ST_PRUNE_AGE_ALL,
  ST_SETTLE,
  ST_SETTLED,
  ST_RECENT_JOBS,
  ST_RUNS_SINCE,
  ST_BEGIN,
  ST_COMMIT,
  ST_ROLLBACK,
  ST_COUNT
};

static const char *const statements[ST_COUNT] = {
  [ST_SAVE_JOB] =
    "INSERT INTO jobs (id, trigger, next_fire, last_fire, paused, pause_note,"
    " retry_due, retry_attempt, retry_scheduled, ok, failed, timed_out,"
    " missed, skipped, cancelled, last_status, last_start, last_duration,"
    " last_error, state, spec, checkpoint) VALUES (?1, ?2, ?3, ?4, ?5, ?6,"
    " ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21,"
    " ?22)"
    " ON CONFLICT (id) DO UPDATE SET trigger = ?2, next_fire = ?3,"
    " last_fire = ?4, paused = ?5, pause_note = ?6, retry_due = ?7,"
    " retry_attempt = ?8, retry_scheduled = ?9, ok = ?10, failed = ?11,"
    " timed_out = ?12, missed = ?13, skipped = ?14, cancelled = ?15,"
    " last_status = ?16, last_start = ?17, last_duration = ?18,"
    " last_error = ?19, state = ?20, spec = ?21, checkpoint = ?22",
  [ST_DELETE_JOB] = "DELETE FROM jobs WHERE id = ?1",
  [ST_SAVE_RUN] =
    "INSERT INTO runs (id, job_id, scheduled, started, finished, attempt,"
    " status, error, traceback, log_tail, host, pid) VALUES (?1, ?2, ?3,"
    " ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (id) DO UPDATE SET"
    " finished = ?5, status = ?7, error = ?8, traceback = ?9,"
    " log_tail = ?10",
  [ST_LOAD_JOBS] =
    "SELECT id, trigger, next_fire, last_fire, paused, pause_note, retry_due,"
    " retry_attempt, retry_scheduled, ok, failed, timed_out, missed,"
    " skipped, cancelled, last_status, last_start, last_duration,"
    " last_error, state, spec, checkpoint FROM jobs",
  [ST_RUNNING] = RUN_COLUMNS " WHERE status = 'running'",
  [ST_MARK_INTERRUPTED] =
    "UPDATE runs SET status = 'interrupted', error = 'the process running "
    "it stopped before it finished' WHERE status = 'running'",
  [ST_PRUNE_COUNT] =
    "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE job_id = ?1"
    " AND status <> 'running' ORDER BY id DESC LIMIT ?3 OFFSET ?2)",
  /* By job: along the (job_id, id) index, oldest first. */
  [ST_PRUNE_AGE] =
    "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE job_id = ?1"
    " AND status <> 'running' AND coalesce(finished, started, scheduled)"
    " < ?2 ORDER BY id LIMIT ?3)",
  /* Every job (hourly): in id order, so the old rows come first. */
  [ST_PRUNE_AGE_ALL] =
    "DELETE FROM runs WHERE id IN (SELECT id FROM runs WHERE"
    " status <> 'running' AND coalesce(finished, started, scheduled) < ?2"
    " ORDER BY id LIMIT ?3)",
  [ST_SETTLE] = "UPDATE store_state SET settled = ?1",
  [ST_SETTLED] = "SELECT settled FROM store_state",
  [ST_RECENT_JOBS] = "SELECT DISTINCT job_id FROM runs WHERE id > ?1",
  [ST_RUNS_SINCE] = RUN_COLUMNS " WHERE job_id = ?1 AND id > ?2 ORDER BY id",
  [ST_BEGIN] = "BEGIN IMMEDIATE",
  [ST_COMMIT] = "COMMIT",
  [ST_ROLLBACK] = "ROLLBACK",
};

typedef struct conn {
  sqlite3 *db;
  sqlite3_stmt *st[ST_COUNT];
} conn;

struct mb_store {
  conn reader;      /* the loop's: opening and reads */
  conn writer;      /* the writer thread's */
  char *path;       /* as given: a file or ":memory:" */
  char *open_path;  /* what sqlite opens: path, or a memdb URI */
  int lock_fd;
  op_list queue;    /* this turn's writes, the loop's alone */
  int reading;      /* reads on the loop's connection in progress */

  /* Shared with the writer thread, under mu. */
  bool threaded;
  uv_thread_t thread;
  uv_mutex_t mu;
  uv_cond_t work, idle, taken;
  op_list handed;   /* handed over, not yet committed */
  block *spare;     /* blocks to fill again (see BLOCK_MAX) */
  size_t nspare;
  uint64_t handed_batches, tried_batches;
  bool stopping, writing;
  bool resting;     /* the writer waits for work, not gathering it */
  int waiting;      /* threads in wait_tried: commit at once */
  size_t lag_ops;   /* writes waiting that make the loop wait (0: LAG_OPS) */
  uint64_t committed_at;  /* the latest commit's start, uv_hrtime */
  int last_rc;      /* the latest commit: 0 or MB_ESTORE */
  char last_error[512];
  mb_store_counts counts;
};

/* ---- errors ---- */

static int db_error(mb_store *s, mb_err *err, const char *what) {
  return mb_err_set(err, MB_ESTORE, "%s: %s: %s", s->path, what,
                    sqlite3_errmsg(s->reader.db));
}

/* ---- the lock ---- */

/* One scheduler per database: an fcntl lock on PATH.lock, which the
 * kernel drops when the holder dies, so a crash never leaves it stale. */
static int take_lock(mb_store *s, mb_err *err) {
  char lock_path[4096];
  snprintf(lock_path, sizeof lock_path, "%s.lock", s->path);
  int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return mb_err_set(err, -errno, "%s: cannot open the lock file: %s",
                      lock_path, strerror(errno));
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  if (fcntl(fd, F_SETLK, &fl) < 0) {
    int e = errno;
    struct flock who = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    bool known = (e == EAGAIN || e == EACCES) &&
                 fcntl(fd, F_GETLK, &who) == 0 && who.l_type != F_UNLCK;
    close(fd);
    if (known)
      return mb_err_set(err, MB_EBUSY, "%s is in use by process %ld; only "
                        "one scheduler may use a database at a time",
                        s->path, (long)who.l_pid);
    return mb_err_set(err, MB_EBUSY, "%s: cannot lock it: %s", s->path,
                      strerror(e));
  }
  char pid[32];
  int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) == 0 && write(fd, pid, (size_t)n) < 0) {
    /* The pid in the file is for people; the lock is what counts. */
  }
  s->lock_fd = fd;
  return 0;
}

/* ---- opening ---- */

static int exec_sql(mb_store *s, const char *sql, mb_err *err) {
  char *msg = NULL;
  if (sqlite3_exec(s->reader.db, sql, NULL, NULL, &msg) != SQLITE_OK) {
    mb_err_set(err, MB_ESTORE, "%s: %s", s->path,
               msg ? msg : sqlite3_errmsg(s->reader.db));
    sqlite3_free(msg);
    return MB_ESTORE;
  }
  return 0;
}

static int schema_version(mb_store *s, int *version, mb_err *err) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->reader.db, "PRAGMA user_version", -1, &st, NULL) !=
      SQLITE_OK)
    return db_error(s, err, "cannot read the schema version");
  int rc = sqlite3_step(st);
  *version = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW) return db_error(s, err, "cannot read the schema version");
  return 0;
}

static int migrate(mb_store *s, mb_err *err) {
  int version;
  int rc = schema_version(s, &version, err);
  if (rc < 0) return rc;
  if (version > SCHEMA_VERSION)
    return mb_err_set(err, MB_ESTORE, "%s was written by a newer moonbeat "
                      "(schema version %d; this one knows up to %d)",
                      s->path, version, SCHEMA_VERSION);
  for (; version < SCHEMA_VERSION; version++) {
    char bump[64];
    snprintf(bump, sizeof bump, "PRAGMA user_version = %d", version + 1);
    if ((rc = exec_sql(s, "BEGIN IMMEDIATE", err)) < 0) return rc;
    if ((rc = exec_sql(s, migrations[version], err)) < 0 ||
        (rc = exec_sql(s, bump, err)) < 0) {
      sqlite3_exec(s->reader.db, "ROLLBACK", NULL, NULL, NULL);
      return rc;
    }
    if ((rc = exec_sql(s, "COMMIT", err)) < 0) return rc;
  }
  return 0;
}

static void writer_main(void *arg);

/* Open path on c with the settings every connection needs. */
static int open_conn(mb_store *s, conn *c, bool memory, mb_err *err) {
  if (sqlite3_open_v2(s->open_path, &c->db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                          SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI,
                      NULL) != SQLITE_OK)
    return mb_err_set(err, MB_ESTORE, "%s: cannot open it: %s", s->path,
                      sqlite3_errmsg(c->db));
  /* sqlite falls back to reading only when the file is write-protected;
   * a scheduler that cannot record must not start. */
  if (sqlite3_db_readonly(c->db, "main") == 1)
    return mb_err_set(err, MB_ESTORE, "%s is read-only; the scheduler must "
                      "be able to write its state", s->path);
  sqlite3_busy_timeout(c->db, 2000);
  sqlite3_extended_result_codes(c->db, 1);
  /* synchronous is per connection; WAL lets readers (the CLI, backups)
   * go on while the scheduler writes. */
  const char *pragmas = memory ? "PRAGMA synchronous = OFF"
                               : "PRAGMA journal_mode = WAL;"
                                 "PRAGMA synchronous = NORMAL;"
                                 "PRAGMA cache_size = -65536";
  char *msg = NULL;
  if (sqlite3_exec(c->db, pragmas, NULL, NULL, &msg) != SQLITE_OK) {
    int rc = mb_err_set(err, MB_ESTORE, "%s: %s", s->path,
                        msg ? msg : sqlite3_errmsg(c->db));
    sqlite3_free(msg);
    return rc;
  }
  return 0;
}

static int prepare_conn(mb_store *s, conn *c, mb_err *err) {
  for (int i = 0; i < ST_COUNT; i++) {
    if (sqlite3_prepare_v3(c->db, statements[i], -1,
                           SQLITE_PREPARE_PERSISTENT, &c->st[i],
                           NULL) != SQLITE_OK)
      return mb_err_set(err, MB_ESTORE, "%s: cannot prepare a statement: %s",
                        s->path, sqlite3_errmsg(c->db));
  }
  return 0;
}

static void close_conn(conn *c) {
  if (!c->db) return;
  for (int i = 0; i < ST_COUNT; i++) sqlite3_finalize(c->st[i]);
  sqlite3_close(c->db);
  c->db = NULL;
}

int mb_store_open(const char *path, mb_store **out, mb_err *err) {
  mb_store *s = mb_xcalloc(1, sizeof *s);
  s->path = mb_xstrdup(path);
  s->lock_fd = -1;
  bool memory = strcmp(path, ":memory:") == 0;
  if (memory) {
    /* A name of its own per store: memdb shares a database between the
     * connections that open the same name. */
    static unsigned long stores;
    char uri[96];
    snprintf(uri, sizeof uri, "file:/moonbeat-%ld-%lu?vfs=memdb",
             (long)getpid(), ++stores);
    s->open_path = mb_xstrdup(uri);
  } else {
    s->open_path = mb_xstrdup(path);
  }
  int rc;
  if (!memory && (rc = take_lock(s, err)) < 0) goto fail;
  if ((rc = open_conn(s, &s->reader, memory, err)) < 0) goto fail;
  if ((rc = migrate(s, err)) < 0) goto fail;
  if ((rc = prepare_conn(s, &s->reader, err)) < 0) goto fail;
  if ((rc = open_conn(s, &s->writer, memory, err)) < 0 ||
      (rc = prepare_conn(s, &s->writer, err)) < 0)
    goto fail;
  uv_mutex_init(&s->mu);
  uv_cond_init(&s->work);
  uv_cond_init(&s->idle);
  uv_cond_init(&s->taken);
  if (uv_thread_create(&s->thread, writer_main, s) != 0) {
    uv_cond_destroy(&s->taken);
    uv_cond_destroy(&s->idle);
    uv_cond_destroy(&s->work);
    uv_mutex_destroy(&s->mu);
    rc = mb_err_set(err, MB_ESTORE, "%s: cannot start the writer thread",
                    path);
    goto fail;
  }
  s->threaded = true;
  *out = s;
  return 0;
fail:
  mb_store_close(s);
  return rc;
}

/* ---- the write queue ---- */

/* A block for n bytes: a spare one, or a new one of cap bytes. */
static block *new_block(mb_store *s, size_t n, size_t cap) {
  block *b = NULL;
  if (n <= BLOCK_MAX && s->threaded) {
    uv_mutex_lock(&s->mu);
    if ((b = s->spare)) {
      s->spare = b->next;
      s->nspare--;
    }
    uv_mutex_unlock(&s->mu);
  }
  if (!b) {
    if (cap < n) cap = n;
    b = mb_xmalloc(sizeof *b + cap);
    b->cap = cap;
  }
  b->used = 0;
  return b;
}

/* n bytes aligned to align (a power of two, at most 8: a block's data
 * is 8-aligned) in the queue's newest block, or in a new one. */
static void *block_alloc(mb_store *s, size_t n, size_t align) {
  op_list *q = &s->queue;
  block *b = q->blocks;
  size_t at = b ? (b->used + align - 1) & ~(align - 1) : 0;
  if (!b || at > b->cap || b->cap - at < n) {
    size_t cap = b ? 2 * b->cap : BLOCK_MIN;
    b = new_block(s, n, cap < BLOCK_MAX ? cap : BLOCK_MAX);
    b->next = q->blocks;
    if (!q->blocks) q->blocks_tail = b;
    q->blocks = b;
    at = 0;
  }
  b->used = at + n;
  return b->data + at;
}

#define NEW_RECORD(s, type) ((type *)block_alloc(s, sizeof(type), _Alignof(type)))

/* Copy the strings the slots point to into the queue's blocks and point
 * the slots at the copies. */
static void pack_strings(mb_store *s, const char **slots[], size_t n) {
  size_t len[8], total = 0;
  for (size_t i = 0; i < n; i++) {
    len[i] = *slots[i] ? strlen(*slots[i]) + 1 : 0;
    total += len[i];
  }
  if (total == 0) return;
  char *p = block_alloc(s, total, 1);
  for (size_t i = 0; i < n; i++) {
    if (!len[i]) continue;
    memcpy(p, *slots[i], len[i]);
    *slots[i] = p;
    p += len[i];
  }
}

static char *copy_text(mb_store *s, const char *text) {
  const char *copy = text;
  const char **slots[] = {&copy};
  pack_strings(s, slots, 1);
  return (char *)copy;
}

static op *push(op_list *q, int kind) {
  if (q->len == q->cap) {
    q->cap = q->cap ? 2 * q->cap : 64;
    q->ops = mb_xrealloc(q->ops, q->cap * sizeof *q->ops);
  }
  op *o = &q->ops[q->len++];
  o->kind = kind;
  return o;
}

static void free_blocks(block *b) {
  while (b) {
    block *next = b->next;
    free(b);
    b = next;
  }
}

static void free_ops(op_list *q) {
  q->len = 0;
  free_blocks(q->blocks);
  q->blocks = q->blocks_tail = NULL;
}

/* Empty q, once written: its blocks of BLOCK_MAX go back to the spare
 * ones, as many as are wanted there, and the rest are freed. */
static void release_ops(mb_store *s, op_list *q) {
  block *b = q->blocks, *rest = NULL;
  uv_mutex_lock(&s->mu);
  while (b) {
    block *next = b->next;
    if (b->cap == BLOCK_MAX && s->nspare < SPARE_BLOCKS) {
      b->next = s->spare;
      s->spare = b;
      s->nspare++;
    } else {
      b->next = rest;
      rest = b;
    }
    b = next;
  }
  uv_mutex_unlock(&s->mu);
  q->blocks = rest;
  free_ops(q);
}

/* Move every op of from, and the text it points to, to the end of to
 * (from is left empty). */
static void append_ops(op_list *to, op_list *from) {
  if (from->blocks) {
    /* Behind to's blocks: to's newest stays first. */
    if (to->blocks)
      to->blocks_tail->next = from->blocks;
    else
      to->blocks = from->blocks;
    to->blocks_tail = from->blocks_tail;
    from->blocks = from->blocks_tail = NULL;
  }
  if (to->len == 0) {
    op *ops = to->ops;
    size_t cap = to->cap;
    to->ops = from->ops;
    to->cap = from->cap;
    to->len = from->len;
    from->ops = ops;
    from->cap = cap;
    from->len = 0;
    return;
  }
  if (to->len + from->len > to->cap) {
    to->cap = to->len + from->len;
    to->ops = mb_xrealloc(to->ops, to->cap * sizeof *to->ops);
  }
  memcpy(to->ops + to->len, from->ops, from->len * sizeof *from->ops);
  to->len += from->len;
  from->len = 0;
}

void mb_store_save_job(mb_store *s, const mb_job_state *st) {
  mb_job_state *j = NEW_RECORD(s, mb_job_state);
  push(&s->queue, OP_SAVE_JOB)->u.job = j;
  *j = *st;
  const char **slots[] = {&j->job_id, &j->trigger, &j->pause_note,
                          &j->last_status, &j->last_error, &j->state,
                          &j->spec};
  pack_strings(s, slots, sizeof slots / sizeof slots[0]);
}

void mb_store_delete_job(mb_store *s, const char *job_id) {
  op *o = push(&s->queue, OP_DELETE_JOB);
  o->u.job_id = copy_text(s, job_id);
}

void mb_store_save_run(mb_store *s, const mb_run_record *run) {
  /* A run that ended in the turn it started is written once: its end
   * takes the place of its start, still queued right behind it, and
   * keeps the copy of its job's id. */
  op_list *q = &s->queue;
  mb_run_record *r;
  const char *job_id;
  if (q->len && q->ops[q->len - 1].kind == OP_SAVE_RUN &&
      q->ops[q->len - 1].u.run->run_id == run->run_id) {
    r = q->ops[q->len - 1].u.run;
    job_id = r->job_id;
  } else {
    r = NEW_RECORD(s, mb_run_record);
    push(q, OP_SAVE_RUN)->u.run = r;
    job_id = NULL;
  }
  *r = *run;
  /* status and host are not copied (see mb_store_save_run). */
  const char **slots[] = {&r->job_id, &r->error, &r->traceback,
                          &r->log_tail};
  if (job_id) {
    r->job_id = job_id;
    pack_strings(s, slots + 1, 3);
  } else {
    pack_strings(s, slots, 4);
  }
}

void mb_store_settle(mb_store *s, long long run_id) {
  push(&s->queue, OP_SETTLE)->u.settled = run_id;
}

void mb_store_prune(mb_store *s, const mb_prune *items, size_t n, mb_time now,
                    int max_rows) {
  for (size_t i = 0; i < n; i++) {
    prune_op *p = NEW_RECORD(s, prune_op);
    push(&s->queue, OP_PRUNE)->u.prune = p;
    p->item = items[i];
    if (items[i].job_id) p->item.job_id = copy_text(s, items[i].job_id);
    p->now = now;
    p->max_rows = max_rows;
  }
}


bool mb_store_pending(const mb_store *s) { return s && s->queue.len > 0; }

static void bind_time(sqlite3_stmt *st, int i, mb_time t) {
  if (t == MB_TIME_NONE)
    sqlite3_bind_null(st, i);
  else
    sqlite3_bind_int64(st, i, t);
}

static void bind_text(sqlite3_stmt *st, int i, const char *v) {
  if (v)
    sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, i);
}

static int step_reset(sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc == SQLITE_DONE ? 0 : rc;
}

/* History beyond retention, at most max_rows a step. */
static int prune_one(conn *c, const mb_prune *p, mb_time now, int max_rows) {
  int deleted = 0;
  sqlite3_stmt *st;
  if (p->job_id && p->retention.keep_runs > 0) {
    st = c->st[ST_PRUNE_COUNT];
    bind_text(st, 1, p->job_id);
    sqlite3_bind_int(st, 2, p->retention.keep_runs);
    sqlite3_bind_int(st, 3, max_rows);
    if (step_reset(st) != 0) return -1;
    deleted += sqlite3_changes(c->db);
  }
  if (p->retention.max_age > 0) {
    st = c->st[p->job_id ? ST_PRUNE_AGE : ST_PRUNE_AGE_ALL];
    if (p->job_id) bind_text(st, 1, p->job_id);
    sqlite3_bind_int64(st, 2, now - p->retention.max_age);
    sqlite3_bind_int(st, 3, max_rows);
    if (step_reset(st) != 0) return -1;
    deleted += sqlite3_changes(c->db);
  }
  return deleted;
}

static int run_op(conn *c, const op *o) {
  sqlite3_stmt *st;
  if (o->kind == OP_SAVE_JOB) {
    const mb_job_state *j = o->u.job;
    st = c->st[ST_SAVE_JOB];
    bind_text(st, 1, j->job_id);
    bind_text(st, 2, j->trigger);
    bind_time(st, 3, j->next_fire);
    bind_time(st, 4, j->last_fire);
    sqlite3_bind_int(st, 5, j->paused);
    bind_text(st, 6, j->pause_note);
    bind_time(st, 7, j->retry_due);
    sqlite3_bind_int(st, 8, j->retry_attempt);
    bind_time(st, 9, j->retry_scheduled);
    sqlite3_bind_int64(st, 10, j->ok);
    sqlite3_bind_int64(st, 11, j->failed);
    sqlite3_bind_int64(st, 12, j->timed_out);
    sqlite3_bind_int64(st, 13, j->missed);
    sqlite3_bind_int64(st, 14, j->skipped);
    sqlite3_bind_int64(st, 15, j->cancelled);
    bind_text(st, 16, j->last_status);
    bind_time(st, 17, j->last_start);
    bind_time(st, 18, j->last_duration);
    bind_text(st, 19, j->last_error);
    bind_text(st, 20, j->state);
    bind_text(st, 21, j->spec);
    sqlite3_bind_int64(st, 22, j->checkpoint);
  } else if (o->kind == OP_SETTLE) {
    st = c->st[ST_SETTLE];
    sqlite3_bind_int64(st, 1, o->u.settled);
  } else if (o->kind == OP_DELETE_JOB) {
    st = c->st[ST_DELETE_JOB];
    bind_text(st, 1, o->u.job_id);
  } else if (o->kind == OP_PRUNE) {
    return prune_one(c, &o->u.prune->item, o->u.prune->now,
                     o->u.prune->max_rows) < 0;
  } else {
    const mb_run_record *r = o->u.run;
    st = c->st[ST_SAVE_RUN];
    sqlite3_bind_int64(st, 1, r->run_id);
    bind_text(st, 2, r->job_id);
    bind_time(st, 3, r->scheduled);
    bind_time(st, 4, r->started);
    bind_time(st, 5, r->finished);
    sqlite3_bind_int(st, 6, r->attempt);
    bind_text(st, 7, r->status);
    bind_text(st, 8, r->error);
    bind_text(st, 9, r->traceback);
    bind_text(st, 10, r->log_tail);
    bind_text(st, 11, r->host);
    sqlite3_bind_int64(st, 12, r->pid);
  }
  return step_reset(st);
}

/* Write ops in one transaction on c. Returns 0, or MB_ESTORE with what
 * went wrong in error (the ops are then still to be written). */
static int write_ops(conn *c, const op_list *q, char *error, size_t n) {
  const char *what = "cannot begin a transaction";
  if (step_reset(c->st[ST_BEGIN]) != 0) goto fail;
  what = "cannot write";
  for (size_t i = 0; i < q->len; i++)
    if (run_op(c, &q->ops[i]) != 0) goto rollback;
  what = "cannot commit";
  if (step_reset(c->st[ST_COMMIT]) == 0) return 0;
rollback:
  snprintf(error, n, "%s: %s", what, sqlite3_errmsg(c->db));
  step_reset(c->st[ST_ROLLBACK]);
  return MB_ESTORE;
fail:
  snprintf(error, n, "%s: %s", what, sqlite3_errmsg(c->db));
  return MB_ESTORE;
}

static size_t rows_of(const op_list *q) {
  size_t rows = 0;
  for (size_t i = 0; i < q->len; i++)
    rows += q->ops[i].kind != OP_PRUNE && q->ops[i].kind != OP_SETTLE;
  return rows;
}

/* The writer commits at most every GATHER_NS, unless GATHER_OPS writes
 * wait or someone waits for it: a loop turn per fire (ten thousand a
 * second) then costs a hundred transactions, not ten thousand. A crash
 * loses what is not yet committed either way, a run's record and the job
 * state that says it is done together. */
enum { GATHER_OPS = 8192 };
#define GATHER_NS 10000000ULL

/* The writer is a batch thread (SCHED_BATCH): its wake-ups do not
 * preempt the thread running. As a normal thread the kernel often woke
 * it on the loop's core ahead of the loop, and each commit then held
 * fires back by up to a millisecond, every GATHER_NS: most of the
 * lateness at the 99th percentile with ten thousand fires a second. Not
 * idle priority (SCHED_IDLE): the loop waits for the writer before each
 * read, and an idle thread sharing a core with any busy process gets
 * next to no time, so the loop waited seconds. On a machine with every
 * core busy it may fall behind; once LAG_OPS writes wait for it, the loop
 * waits until it takes them. The bound is high: a start on a million
 * stored jobs queues that many writes, and the first fire need not wait
 * for them (a bound of 65,536 made that start 20% slower). */
enum { LAG_OPS = 1 << 20 };

/* Named, so that top -H, perf and /proc tell it from the loop. */
static void name_thread(void) {
#ifdef __linux__
  prctl(PR_SET_NAME, "moonbeat-writer", 0, 0, 0);
#endif
}

static void lower_priority(void) {
  /* Only Linux has SCHED_BATCH; elsewhere, or if refused, the writer
   * keeps the priority it has. */
#ifdef SCHED_BATCH
  sched_setscheduler(0, SCHED_BATCH, &(struct sched_param){0});
#endif
}

/* The writer thread: commit what the loop hands over, batch by batch. A
 * batch that fails (a full disk) stays first in line and is tried again
 * with the next hand-over, or after a second when none comes. */
static void writer_main(void *arg) {
  mb_store *s = arg;
  op_list batch = {0};
  name_thread();
  lower_priority();
  uv_mutex_lock(&s->mu);
  for (;;) {
    s->resting = true;
    while (s->handed.len == 0 && !s->stopping) uv_cond_wait(&s->work, &s->mu);
    s->resting = false;
    if (s->handed.len == 0) break;
    for (;;) {
      uint64_t since = uv_hrtime() - s->committed_at;
      if (s->waiting || s->stopping || s->handed.len >= GATHER_OPS ||
          since >= GATHER_NS)
        break;
      uv_cond_timedwait(&s->work, &s->mu, GATHER_NS - since);
    }
    s->committed_at = uv_hrtime();
    append_ops(&batch, &s->handed);
    uv_cond_broadcast(&s->taken);
    uint64_t tried = s->handed_batches;
    s->writing = true;
    uv_mutex_unlock(&s->mu);

    char error[sizeof s->last_error];
    int rc = write_ops(&s->writer, &batch, error, sizeof error);
    size_t rows = rc == 0 ? rows_of(&batch) : 0;
    if (rc == 0) release_ops(s, &batch);

    uv_mutex_lock(&s->mu);
    s->writing = false;
    s->last_rc = rc;
    if (rc == 0) {
      s->counts.commits++;
      s->counts.rows += (long long)rows;
    } else {
      s->counts.failures++;
      snprintf(s->last_error, sizeof s->last_error, "%s", error);
      /* Older writes go first: put the batch back before what came in. */
      append_ops(&batch, &s->handed);
      append_ops(&s->handed, &batch);
    }
    s->tried_batches = tried;
    uv_cond_broadcast(&s->idle);
    /* A loop waiting for the writer to catch up stops waiting on a
     * failure (see mb_store_flush), not a second later at the retry. */
    if (rc != 0) uv_cond_broadcast(&s->taken);
    if (rc != 0 && !s->stopping)
      uv_cond_timedwait(&s->work, &s->mu, 1000000000ULL);
    if (rc != 0 && s->stopping) break;
  }
  uv_mutex_unlock(&s->mu);
  free_ops(&batch);
  free(batch.ops);
}

/* Wait, with mu held, until the writer has tried every batch handed to
 * it so far. */
static void wait_tried(mb_store *s) {
  s->waiting++;
  uv_cond_signal(&s->work);
  while (s->writing || s->tried_batches < s->handed_batches)
    uv_cond_wait(&s->idle, &s->mu);
  s->waiting--;
}

/* Commit the queue on the loop's own connection: for a read inside
 * another read's callbacks. The outer read holds its connection's read
 * lock, and a ":memory:" (memdb) database lets no other connection
 * commit meanwhile; nothing was handed to the writer since the outer
 * read began, so the order of writes is kept. */
static void commit_here(mb_store *s) {
  if (!s->queue.len) return;
  char error[sizeof s->last_error];
  int rc = write_ops(&s->reader, &s->queue, error, sizeof error);
  uv_mutex_lock(&s->mu);
  s->last_rc = rc;
  if (rc == 0) {
    s->counts.commits++;
    s->counts.rows += (long long)rows_of(&s->queue);
  } else {
    s->counts.failures++;
    snprintf(s->last_error, sizeof s->last_error, "%s", error);
  }
  uv_mutex_unlock(&s->mu);
  if (rc == 0) release_ops(s, &s->queue);
}

/* Let the writer finish what it was handed (reads call this first). */
static void sync_writer(mb_store *s) {
  if (!s->threaded) return;
  if (s->reading) {
    commit_here(s);
    return;
  }
  uv_mutex_lock(&s->mu);
  wait_tried(s);
  uv_mutex_unlock(&s->mu);
}

int mb_store_flush(mb_store *s, bool wait, mb_err *err) {
  if (!s) return 0;
  /* Only a store that failed to open has no writer: nothing to flush. */
  if (!s->threaded) return 0;
  /* Inside a read's callbacks the writer could not commit (see
   * commit_here): the queue waits for the read to end, unless the
   * caller waits for it. */
  if (s->reading && wait) commit_here(s);
  uv_mutex_lock(&s->mu);
  if (s->queue.len && !s->reading) {
    append_ops(&s->handed, &s->queue);
    s->handed_batches++;
    /* A writer gathering wakes by itself when its time is up. */
    if (s->resting || s->handed.len >= GATHER_OPS) uv_cond_signal(&s->work);
    /* A writer that fails is not behind: it tries again by itself, and
     * waiting for it would stop the loop until the disk has room. */
    size_t lag = s->lag_ops ? s->lag_ops : LAG_OPS;
    if (s->handed.len >= lag && s->last_rc == 0 && !wait) {
      s->counts.catch_ups++;
      while (s->handed.len >= lag && s->last_rc == 0)
        uv_cond_wait(&s->taken, &s->mu);
    }
  }
  if (wait) wait_tried(s);
  int rc = s->last_rc;
  if (rc < 0) mb_err_set(err, MB_ESTORE, "%s: %s", s->path, s->last_error);
  uv_mutex_unlock(&s->mu);
  return rc;
}

/* ---- reading ---- */

static mb_time col_time(sqlite3_stmt *st, int i) {
  return sqlite3_column_type(st, i) == SQLITE_NULL ? MB_TIME_NONE
                                                   : sqlite3_column_int64(st, i);
}

static const char *col_text(sqlite3_stmt *st, int i) {
  return (const char *)sqlite3_column_text(st, i);
}

int mb_store_load_jobs(mb_store *s,
                       void (*cb)(const mb_job_state *st, void *data),
                       void *data, mb_err *err) {
  sync_writer(s);
  sqlite3_stmt *st = s->reader.st[ST_LOAD_JOBS];
  int rc;
  s->reading++;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    mb_job_state j = {
      .job_id = col_text(st, 0),
      .trigger = col_text(st, 1),
      .next_fire = col_time(st, 2),
      .last_fire = col_time(st, 3),
      .paused = sqlite3_column_int(st, 4) != 0,
      .pause_note = col_text(st, 5),
      .retry_due = col_time(st, 6),
      .retry_attempt = sqlite3_column_int(st, 7),
      .retry_scheduled = col_time(st, 8),
      .ok = sqlite3_column_int64(st, 9),
      .failed = sqlite3_column_int64(st, 10),
      .timed_out = sqlite3_column_int64(st, 11),
      .missed = sqlite3_column_int64(st, 12),
      .skipped = sqlite3_column_int64(st, 13),
      .cancelled = sqlite3_column_int64(st, 14),
      .last_status = col_text(st, 15),
      .last_start = col_time(st, 16),
      .last_duration = col_time(st, 17),
      .last_error = col_text(st, 18),
      .state = col_text(st, 19),
      .spec = col_text(st, 20),
      .checkpoint = sqlite3_column_int64(st, 21),
    };
    cb(&j, data);
  }
  sqlite3_reset(st);
  s->reading--;
  return rc == SQLITE_DONE ? 0 : db_error(s, err, "cannot read jobs");
}

static void read_run(sqlite3_stmt *st, mb_run_record *r) {
  *r = (mb_run_record){
    .run_id = sqlite3_column_int64(st, 0),
    .job_id = col_text(st, 1),
    .scheduled = col_time(st, 2),
    .started = col_time(st, 3),
    .finished = col_time(st, 4),
    .attempt = sqlite3_column_int(st, 5),
    .status = col_text(st, 6),
    .error = col_text(st, 7),
    .traceback = col_text(st, 8),
    .log_tail = col_text(st, 9),
    .host = col_text(st, 10),
    .pid = sqlite3_column_int64(st, 11),
  };
}

/* Step st (bound), calling cb for each run; reset and cleared after. */
static int each_run(mb_store *s, sqlite3_stmt *st,
                    void (*cb)(const mb_run_record *run, void *data),
                    void *data, mb_err *err) {
  int rc;
  s->reading++;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    mb_run_record r;
    read_run(st, &r);
    cb(&r, data);
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  s->reading--;
  return rc == SQLITE_DONE ? 0 : db_error(s, err, "cannot read runs");
}

int mb_store_interrupted(mb_store *s,
                         void (*cb)(const mb_run_record *run, void *data),
                         void *data, mb_err *err) {
  sync_writer(s);
  int rc = each_run(s, s->reader.st[ST_RUNNING], cb, data, err);
  if (rc < 0) return rc;
  if (step_reset(s->reader.st[ST_MARK_INTERRUPTED]) != 0)
    return db_error(s, err, "cannot mark interrupted runs");
  return 0;
}

long long mb_store_settled(mb_store *s) {
  sync_writer(s);
  sqlite3_stmt *st = s->reader.st[ST_SETTLED];
  long long settled = 0;
  if (sqlite3_step(st) == SQLITE_ROW) settled = sqlite3_column_int64(st, 0);
  sqlite3_reset(st);
  return settled;
}

int mb_store_recent_jobs(mb_store *s, long long after,
                         void (*cb)(const char *job_id, void *data),
                         void *data, mb_err *err) {
  sync_writer(s);
  sqlite3_stmt *st = s->reader.st[ST_RECENT_JOBS];
  sqlite3_bind_int64(st, 1, after);
  int rc;
  s->reading++;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) cb(col_text(st, 0), data);
  sqlite3_reset(st);
  s->reading--;
  return rc == SQLITE_DONE ? 0 : db_error(s, err, "cannot read runs");
}

int mb_store_runs_since(mb_store *s, const char *job_id, long long after,
                        void (*cb)(const mb_run_record *run, void *data),
                        void *data, mb_err *err) {
  sync_writer(s);
  sqlite3_stmt *st = s->reader.st[ST_RUNS_SINCE];
  bind_text(st, 1, job_id);
  sqlite3_bind_int64(st, 2, after);
  return each_run(s, st, cb, data, err);
}

long long mb_store_last_run_id(mb_store *s) {
  sync_writer(s);
  sqlite3_stmt *st;
  long long id = 0;
  if (sqlite3_prepare_v2(s->reader.db, "SELECT max(id) FROM runs", -1, &st, NULL) ==
      SQLITE_OK) {
    if (sqlite3_step(st) == SQLITE_ROW) id = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  return id;
}

int mb_store_query_runs(mb_store *s, const mb_run_filter *f,
                        void (*cb)(const mb_run_record *run, void *data),
                        void *data, mb_err *err) {
  sync_writer(s);
  /* The filters are fixed clauses with bound values: no SQL is built
   * from what the caller passed. */
  sqlite3_stmt *st;
  const char *sql =
    RUN_COLUMNS " WHERE (?1 IS NULL OR job_id = ?1)"
    " AND (?2 IS NULL OR status = ?2)"
    " AND (?3 IS NULL OR coalesce(started, scheduled) >= ?3)"
    " ORDER BY id DESC LIMIT ?4";
  if (sqlite3_prepare_v2(s->reader.db, sql, -1, &st, NULL) != SQLITE_OK)
    return db_error(s, err, "cannot query runs");
  bind_text(st, 1, f->job_id);
  bind_text(st, 2, f->status);
  bind_time(st, 3, f->since);
  sqlite3_bind_int(st, 4, f->limit > 0 ? f->limit : 100);
  int rc;
  s->reading++;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    mb_run_record r;
    read_run(st, &r);
    cb(&r, data);
  }
  sqlite3_finalize(st);
  s->reading--;
  return rc == SQLITE_DONE ? 0 : db_error(s, err, "cannot query runs");
}

void mb_store_close(mb_store *s) {
  if (!s) return;
  if (s->threaded) {
    mb_store_flush(s, true, NULL);
    uv_mutex_lock(&s->mu);
    s->stopping = true;
    uv_cond_signal(&s->work);
    uv_mutex_unlock(&s->mu);
    uv_thread_join(&s->thread);
    /* What a full disk kept from being written is lost with the process;
     * it was reported when it failed. */
    free_ops(&s->handed);
    free(s->handed.ops);
    free_blocks(s->spare);
    uv_cond_destroy(&s->taken);
    uv_cond_destroy(&s->idle);
    uv_cond_destroy(&s->work);
    uv_mutex_destroy(&s->mu);
  }
  close_conn(&s->writer);
  close_conn(&s->reader);
  free_ops(&s->queue);
  free(s->queue.ops);
  if (s->lock_fd >= 0) close(s->lock_fd);
  free(s->path);
  free(s->open_path);
  free(s);
}

void mb_store_get_counts(mb_store *s, mb_store_counts *out) {
  sync_writer(s);
  if (s->threaded) uv_mutex_lock(&s->mu);
  *out = s->counts;
  if (s->threaded) uv_mutex_unlock(&s->mu);
}

char *mb_store_check(mb_store *s) {
  sync_writer(s);
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(s->reader.db, "PRAGMA integrity_check", -1, &st, NULL) !=
      SQLITE_OK)
    return mb_xstrdup(sqlite3_errmsg(s->reader.db));
  char *result = NULL;
  if (sqlite3_step(st) == SQLITE_ROW)
    result = mb_xstrdup((const char *)sqlite3_column_text(st, 0));
  else
    result = mb_xstrdup(sqlite3_errmsg(s->reader.db));
  sqlite3_finalize(st);
  return result;
}

void mb_store_set_lag(mb_store *s, size_t ops) {
  uv_mutex_lock(&s->mu);
  s->lag_ops = ops;
  uv_mutex_unlock(&s->mu);
}

int mb_store_limit_pages(mb_store *s, long long pages, mb_err *err) {
  char sql[64];
  snprintf(sql, sizeof sql, "PRAGMA max_page_count = %lld",
           pages > 0 ? pages : 1073741823LL);
  /* The limit is the writing connection's: set it while the writer
   * waits, holding it off until done. */
  if (s->threaded) {
    uv_mutex_lock(&s->mu);
    wait_tried(s);
  }
  char *msg = NULL;
  int rc = 0;
  if (sqlite3_exec(s->writer.db, sql, NULL, NULL, &msg) != SQLITE_OK)
    rc = mb_err_set(err, MB_ESTORE, "%s: %s", s->path,
                    msg ? msg : sqlite3_errmsg(s->writer.db));
  sqlite3_free(msg);
  if (s->threaded) uv_mutex_unlock(&s->mu);
  return rc;
}
