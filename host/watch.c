/* watch.c: a directory tree watched with one libuv fs event per
 * directory, and changes handed over in debounced batches. */
#include "watch.h"

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"

/* Deeper than any job tree; it stops a loop of symbolic links. */
#define MAX_DEPTH 32

typedef struct dir_watch {
  uv_fs_event_t event;
  mb_watch *watch;
  char *rel;  /* "" for the root, else "a/b" */
  dev_t dev;
  ino_t ino;
} dir_watch;

struct mb_watch {
  uv_loop_t *loop;
  char *root;
  mb_watch_cb cb;
  void *data;
  dir_watch **dirs;
  size_t ndirs, dirs_cap;
  /* Paths changed since the last batch, and when the first came. */
  char **pending;
  size_t npending, pending_cap;
  uint64_t first_pending;
  uv_timer_t quiet;
  int open_handles;  /* memory goes when the last one has closed */
  bool closing;
};

/* ---- paths ---- */

static char *join(const char *a, const char *b, const char *tail) {
  size_t na = strlen(a), nb = strlen(b), nt = strlen(tail);
  bool slash = na > 0 && nb > 0 && a[na - 1] != '/';
  char *p = mb_xmalloc(na + slash + nb + nt + 1);
  memcpy(p, a, na);
  if (slash) p[na] = '/';
  memcpy(p + na + slash, b, nb);
  memcpy(p + na + slash + nb, tail, nt + 1);
  return p;
}

/* Left out of the watch: hidden names. */
static bool hidden(const char *name) { return name[0] == '.'; }

/* Left out of the job files: hidden names, and lib/ at the top. */
static bool not_jobs(const char *parent_rel, const char *name) {
  return hidden(name) ||
         (parent_rel[0] == '\0' && strcmp(name, "lib") == 0);
}

static bool is_job_name(const char *name) {
  size_t n = strlen(name);
  return n > 4 && strcmp(name + n - 4, ".lua") == 0;
}

static int depth_of(const char *rel) {
  if (!rel[0]) return 0;
  int d = 1;
  for (const char *p = rel; *p; p++) d += *p == '/';
  return d;
}

static bool is_dir(const char *path, struct stat *st) {
  return stat(path, st) == 0 && S_ISDIR(st->st_mode);
}

/* ---- handles ---- */

static void free_watch(mb_watch *w) {
  free(w->root);
  free(w->dirs);
  for (size_t i = 0; i < w->npending; i++) free(w->pending[i]);
  free(w->pending);
  free(w);
}

static void handle_closed(mb_watch *w) {
  if (--w->open_handles == 0 && w->closing) free_watch(w);
}

static void on_dir_closed(uv_handle_t *h) {
  dir_watch *dw = h->data;
  mb_watch *w = dw->watch;
  free(dw->rel);
  free(dw);
  handle_closed(w);
}

static void on_timer_closed(uv_handle_t *h) { handle_closed(h->data); }

static dir_watch *find_dir(const mb_watch *w, const char *rel) {
  for (size_t i = 0; i < w->ndirs; i++)
    if (strcmp(w->dirs[i]->rel, rel) == 0) return w->dirs[i];
  return NULL;
}

static bool watched_inode(const mb_watch *w, const struct stat *st) {
  for (size_t i = 0; i < w->ndirs; i++)
    if (w->dirs[i]->dev == st->st_dev && w->dirs[i]->ino == st->st_ino)
      return true;
  return false;
}

/* Drop the watches of rel and every directory below it. */
static void drop_tree(mb_watch *w, const char *rel) {
  size_t n = strlen(rel), kept = 0;
  for (size_t i = 0; i < w->ndirs; i++) {
    dir_watch *dw = w->dirs[i];
    bool inside = n == 0 || (strncmp(dw->rel, rel, n) == 0 &&
                             (dw->rel[n] == '\0' || dw->rel[n] == '/'));
    if (inside)
      uv_close((uv_handle_t *)&dw->event, on_dir_closed);
    else
      w->dirs[kept++] = dw;
  }
  w->ndirs = kept;
}

static void on_event(uv_fs_event_t *h, const char *name, int events,
                     int status);

/* Watch the directory rel (if it is one and not watched yet) and those
 * below it. Returns the libuv error for rel itself, or 0. */
static int add_tree(mb_watch *w, const char *rel) {
  char *full = join(w->root, rel, "");
  struct stat st;
  int rc = 0;
  if (!is_dir(full, &st) || watched_inode(w, &st) ||
      depth_of(rel) > MAX_DEPTH)
    goto out;
  dir_watch *dw = mb_xcalloc(1, sizeof *dw);
  dw->watch = w;
  dw->rel = mb_xstrdup(rel);
  dw->dev = st.st_dev;
  dw->ino = st.st_ino;
  uv_fs_event_init(w->loop, &dw->event);
  dw->event.data = dw;
  w->open_handles++;
  rc = uv_fs_event_start(&dw->event, on_event, full, 0);
  if (rc < 0) {
    mb_log_field f[] = {MB_LS("dir", full), MB_LS("error", uv_strerror(rc))};
    mb_log(MB_LOG_WARN, "cannot watch a directory; its changes go unseen "
           "until a rescan (SIGHUP)", f, 2);
    uv_close((uv_handle_t *)&dw->event, on_dir_closed);
    goto out;
  }
  if (w->ndirs == w->dirs_cap) {
    w->dirs_cap = w->dirs_cap ? 2 * w->dirs_cap : 8;
    w->dirs = mb_xrealloc(w->dirs, w->dirs_cap * sizeof *w->dirs);
  }
  w->dirs[w->ndirs++] = dw;
  DIR *d = opendir(full);
  if (!d) goto out;
  for (struct dirent *e; (e = readdir(d));) {
    if (strcmp(e->d_name, "..") == 0 || hidden(e->d_name)) continue;
    if (e->d_type != DT_DIR && e->d_type != DT_LNK &&
        e->d_type != DT_UNKNOWN)
      continue;
    char *sub = join(rel, e->d_name, "");
    add_tree(w, sub);
    free(sub);
  }
  closedir(d);
out:
  free(full);
  return rc;
}

/* ---- batches ---- */

static int by_path(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static void on_quiet(uv_timer_t *t) {
  mb_watch *w = t->data;
  char **paths = w->pending;
  size_t n = w->npending;
  w->pending = NULL;
  w->npending = w->pending_cap = 0;
  if (n) qsort(paths, n, sizeof *paths, by_path);
  if (!w->closing) w->cb(w, (const char *const *)paths, n, w->data);
  for (size_t i = 0; i < n; i++) free(paths[i]);
  free(paths);
}

/* Note path (owned: taken over) for the next batch, and wait for quiet. */
static void queue(mb_watch *w, char *path) {
  uint64_t now = uv_now(w->loop);
  if (w->npending == 0) w->first_pending = now;
  bool seen = false;
  for (size_t i = 0; i < w->npending && !seen; i++)
    seen = strcmp(w->pending[i], path) == 0;
  if (seen) {
    free(path);
  } else {
    if (w->npending == w->pending_cap) {
      w->pending_cap = w->pending_cap ? 2 * w->pending_cap : 8;
      w->pending = mb_xrealloc(w->pending, w->pending_cap * sizeof *w->pending);
    }
    w->pending[w->npending++] = path;
  }
  /* Quiet for a moment, but a tree that never settles still gets its
   * batch after the longest wait. */
  uint64_t waited = now - w->first_pending;
  uint64_t delay = MB_WATCH_QUIET_MS;
  if (waited + delay > MB_WATCH_MAX_WAIT_MS)
    delay = waited < MB_WATCH_MAX_WAIT_MS ? MB_WATCH_MAX_WAIT_MS - waited : 0;
  uv_timer_start(&w->quiet, on_quiet, delay, 0);
}

static void on_event(uv_fs_event_t *h, const char *name, int events,
                     int status) {
  (void)events;
  dir_watch *dw = h->data;
  mb_watch *w = dw->watch;
  if (w->closing || status < 0 || !name || !name[0]) return;
  if (hidden(name)) return;
  char *rel = join(dw->rel, name, "");
  char *full = join(w->root, rel, "");
  struct stat st;
  bool now_dir = is_dir(full, &st);
  dir_watch *known = find_dir(w, rel);
  bool same = known && now_dir && known->dev == st.st_dev &&
              known->ino == st.st_ino;
  if (!same) {
    /* A directory came, went, or another took its place: its files
     * are for the reader to look at again. */
    if (known) drop_tree(w, rel);
    if (now_dir) add_tree(w, rel);
    if (known || now_dir) queue(w, join(rel, "", "/"));
  }
  if (!now_dir && is_job_name(name)) queue(w, mb_xstrdup(rel));
  free(full);
  free(rel);
}

/* ---- the public face ---- */

mb_watch *mb_watch_new(uv_loop_t *loop, const char *root, mb_watch_cb cb,
                       void *data, mb_err *err) {
  struct stat st;
  if (stat(root, &st) < 0) {
    mb_err_set(err, -errno, "%s: %s", root, strerror(errno));
    return NULL;
  }
  if (!S_ISDIR(st.st_mode)) {
    mb_err_set(err, MB_EINVAL, "%s: not a directory", root);
    return NULL;
  }
  mb_watch *w = mb_xcalloc(1, sizeof *w);
  w->loop = loop;
  w->root = mb_xstrdup(root);
  for (size_t n = strlen(w->root); n > 1 && w->root[n - 1] == '/'; n--)
    w->root[n - 1] = '\0';
  w->cb = cb;
  w->data = data;
  uv_timer_init(loop, &w->quiet);
  w->quiet.data = w;
  w->open_handles = 1;
  int rc = add_tree(w, "");
  if (rc < 0 || w->ndirs == 0) {
    mb_err_set(err, rc < 0 ? rc : MB_EINVAL, "%s: cannot watch: %s", root,
               rc < 0 ? uv_strerror(rc) : "not a directory");
    mb_watch_close(w);
    return NULL;
  }
  return w;
}

void mb_watch_close(mb_watch *w) {
  if (!w || w->closing) return;
  w->closing = true;
  uv_close((uv_handle_t *)&w->quiet, on_timer_closed);
  drop_tree(w, "");
}

size_t mb_watch_dirs(const mb_watch *w) { return w->ndirs; }

/* ---- listing ---- */

typedef struct listing {
  char **paths;
  size_t n, cap;
  struct stat *seen;  /* directories read, against link loops */
  size_t nseen, seen_cap;
} listing;

static void list_dir(listing *l, const char *root, const char *rel) {
  char *full = join(root, rel, "");
  struct stat st;
  if (!is_dir(full, &st) || depth_of(rel) > MAX_DEPTH) goto out;
  for (size_t i = 0; i < l->nseen; i++)
    if (l->seen[i].st_dev == st.st_dev && l->seen[i].st_ino == st.st_ino)
      goto out;
  if (l->nseen == l->seen_cap) {
    l->seen_cap = l->seen_cap ? 2 * l->seen_cap : 8;
    l->seen = mb_xrealloc(l->seen, l->seen_cap * sizeof *l->seen);
  }
  l->seen[l->nseen++] = st;
  DIR *d = opendir(full);
  if (!d) goto out;
  for (struct dirent *e; (e = readdir(d));) {
    if (strcmp(e->d_name, "..") == 0 || not_jobs(rel, e->d_name)) continue;
    char *sub = join(rel, e->d_name, "");
    char *path = join(root, sub, "");
    struct stat est;
    if (stat(path, &est) == 0) {
      if (S_ISDIR(est.st_mode)) {
        list_dir(l, root, sub);
      } else if (S_ISREG(est.st_mode) && is_job_name(e->d_name)) {
        if (l->n == l->cap) {
          l->cap = l->cap ? 2 * l->cap : 16;
          l->paths = mb_xrealloc(l->paths, l->cap * sizeof *l->paths);
        }
        l->paths[l->n++] = sub;
        sub = NULL;
      }
    }
    free(path);
    free(sub);
  }
  closedir(d);
out:
  free(full);
}

int mb_watch_list(const char *root, char ***paths, size_t *n, mb_err *err) {
  DIR *d = opendir(root);
  if (!d) {
    int code = -errno;
    return mb_err_set(err, code, "%s: %s", root, strerror(-code));
  }
  closedir(d);
  listing l = {0};
  list_dir(&l, root, "");
  free(l.seen);
  if (l.n) qsort(l.paths, l.n, sizeof *l.paths, by_path);
  *paths = l.paths;
  *n = l.n;
  return 0;
}
