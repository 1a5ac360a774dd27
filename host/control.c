/* control.c: the control socket's server: line framing, size bounds and
 * client lifetimes on the loop. Clients are found by id, so the Lua side
 * never holds a pointer to one that has gone. */
#include "control.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

/* Bytes read from a client at a time. */
#define READ_CHUNK 16384
/* Responses a client has not read yet: past this, the server stops
 * reading its requests until it catches up. */
#define MAX_UNWRITTEN ((size_t)4 << 20)
#define BACKLOG 64

typedef struct client {
  uv_pipe_t pipe;
  mb_control *server;
  uint64_t id;
  char *partial;          /* the start of a request whose end is to come */
  size_t len, cap;
  size_t writes;          /* writes in flight */
  bool dropping;          /* hang up once the writes are done */
  bool closing;
  bool paused;            /* not reading: too much unwritten */
  struct client *next, **prevp;
  char chunk[READ_CHUNK];
} client;

struct mb_control {
  uv_loop_t *loop;
  uv_pipe_t listener;
  char *path;
  dev_t dev;
  ino_t ino;
  size_t max_request, max_clients;
  char *too_long_reply, *too_many_reply;
  mb_control_request_cb on_request;
  mb_control_gone_cb on_gone;
  void *data;
  client *clients;
  size_t nclients;
  uint64_t last_id;
  size_t open_handles;    /* the listener and every client not yet closed */
  bool closing;
};

typedef struct write_req {
  uv_write_t req;
  client *cl;
  char text[];
} write_req;

/* ---- the socket's path ---- */

static int split_dir(const char *path, char *dir, size_t n) {
  const char *slash = strrchr(path, '/');
  if (!slash) return snprintf(dir, n, ".");
  if (slash == path) return snprintf(dir, n, "/");
  return snprintf(dir, n, "%.*s", (int)(slash - path), path);
}

/* The directory must keep everyone else away from the socket: a socket's
 * own mode is not honoured everywhere, a directory's is. */
static int check_dir(const char *dir, mb_err *err) {
  struct stat st;
  if (lstat(dir, &st) < 0) {
    if (errno != ENOENT)
      return mb_err_set(err, -errno, "socket directory %s: %s", dir,
                        strerror(errno));
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
      return mb_err_set(err, -errno, "cannot make the socket directory %s: %s",
                        dir, strerror(errno));
    if (lstat(dir, &st) < 0)
      return mb_err_set(err, -errno, "socket directory %s: %s", dir,
                        strerror(errno));
    if (st.st_uid == geteuid() && (st.st_mode & 0777) != 0700 &&
        chmod(dir, 0700) == 0)
      st.st_mode = (st.st_mode & ~(mode_t)0777) | 0700;
  }
  if (S_ISLNK(st.st_mode))
    return mb_err_set(err, MB_EINVAL,
                      "socket directory %s is a symbolic link; give the "
                      "directory itself", dir);
  if (!S_ISDIR(st.st_mode))
    return mb_err_set(err, MB_EINVAL, "socket directory %s is not a directory",
                      dir);
  if (st.st_uid != geteuid())
    return mb_err_set(err, MB_EINVAL,
                      "socket directory %s belongs to uid %ld, not to this "
                      "user (uid %ld); use a directory of your own",
                      dir, (long)st.st_uid, (long)geteuid());
  if (st.st_mode & 077)
    return mb_err_set(err, MB_EINVAL,
                      "socket directory %s is open to group or others "
                      "(mode %04o); it must be 0700 (chmod 700 %s)",
                      dir, (unsigned)(st.st_mode & 07777), dir);
  return 0;
}

static int fill_address(const char *path, struct sockaddr_un *addr,
                        mb_err *err) {
  memset(addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  size_t n = strlen(path);
  if (n == 0) return mb_err_set(err, MB_EINVAL, "the socket path is empty");
  if (n >= sizeof addr->sun_path)
    return mb_err_set(err, MB_EINVAL,
                      "socket path %s is too long (%zu bytes; at most %zu)",
                      path, n, sizeof addr->sun_path - 1);
  memcpy(addr->sun_path, path, n);
  return 0;
}

int mb_control_prepare(const char *path, mb_err *err) {
  struct sockaddr_un addr;
  int rc = fill_address(path, &addr, err);
  if (rc < 0) return rc;
  char dir[sizeof addr.sun_path];
  split_dir(path, dir, sizeof dir);
  if ((rc = check_dir(dir, err)) < 0) return rc;
  struct stat st;
  if (lstat(path, &st) < 0) {
    if (errno == ENOENT) return 0;
    return mb_err_set(err, -errno, "%s: %s", path, strerror(errno));
  }
  if (!S_ISSOCK(st.st_mode))
    return mb_err_set(err, MB_EEXIST,
                      "%s exists and is not a socket; remove it or choose "
                      "another --socket", path);
  /* A socket file outlives a process that was killed: one that nobody
   * answers on is stale, and is replaced. */
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return mb_err_set(err, -errno, "socket: %s", strerror(errno));
  int connected = connect(fd, (struct sockaddr *)&addr, sizeof addr);
  int connect_errno = errno;
  close(fd);
  if (connected == 0 || connect_errno == EAGAIN)
    return mb_err_set(err, MB_EBUSY,
                      "a scheduler is already listening on %s; stop it, or "
                      "give this one another --socket", path);
  if (connect_errno != ECONNREFUSED)
    return mb_err_set(err, -connect_errno, "%s: %s", path,
                      strerror(connect_errno));
  if (unlink(path) < 0 && errno != ENOENT)
    return mb_err_set(err, -errno, "cannot remove the stale socket %s: %s",
                      path, strerror(errno));
  mb_log_field f[] = {MB_LS("path", path)};
  mb_log(MB_LOG_INFO, "stale control socket removed", f, 1);
  return 0;
}

/* ---- clients ---- */

static void release(mb_control *c) {
  if (--c->open_handles > 0 || !c->closing) return;
  free(c->path);
  free(c->too_long_reply);
  free(c->too_many_reply);
  free(c);
}

static void on_client_closed(uv_handle_t *h) {
  client *cl = h->data;
  mb_control *c = cl->server;
  if (!c->closing && c->on_gone) c->on_gone(c, cl->id, c->data);
  free(cl->partial);
  free(cl);
  release(c);
}

static void hang_up(client *cl) {
  if (cl->closing) return;
  cl->closing = true;
  *cl->prevp = cl->next;
  if (cl->next) cl->next->prevp = cl->prevp;
  cl->server->nclients--;
  uv_close((uv_handle_t *)&cl->pipe, on_client_closed);
}

static client *find_client(mb_control *c, uint64_t id) {
  for (client *cl = c->clients; cl; cl = cl->next)
    if (cl->id == id) return cl;
  return NULL;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  (void)suggested;
  client *cl = h->data;
  *buf = uv_buf_init(cl->chunk, sizeof cl->chunk);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_written(uv_write_t *req, int status) {
  write_req *w = (write_req *)req;
  client *cl = w->cl;
  free(w);
  cl->writes--;
  if (cl->closing) return;
  if (status < 0) {
    /* It hung up before reading its answer. */
    hang_up(cl);
  } else if (cl->dropping) {
    if (cl->writes == 0) hang_up(cl);
  } else if (cl->paused && cl->pipe.write_queue_size <= MAX_UNWRITTEN / 2) {
    cl->paused = false;
    uv_read_start((uv_stream_t *)&cl->pipe, on_alloc, on_read);
  }
}

static int queue_line(client *cl, const char *text, size_t len) {
  write_req *w = mb_xmalloc(sizeof *w + len + 1);
  memcpy(w->text, text, len);
  w->text[len] = '\n';
  w->cl = cl;
  uv_buf_t b = uv_buf_init(w->text, (unsigned)(len + 1));
  int rc = uv_write(&w->req, (uv_stream_t *)&cl->pipe, &b, 1, on_written);
  if (rc < 0) {
    free(w);
    hang_up(cl);
    return rc;
  }
  cl->writes++;
  if (!cl->paused && !cl->dropping &&
      cl->pipe.write_queue_size > MAX_UNWRITTEN) {
    cl->paused = true;
    uv_read_stop((uv_stream_t *)&cl->pipe);
  }
  return 0;
}

/* Say why (when there is a reply), then hang up; nothing more is read. */
static void drop(client *cl, const char *reply) {
  if (cl->closing || cl->dropping) return;
  cl->dropping = true;
  uv_read_stop((uv_stream_t *)&cl->pipe);
  if (reply) queue_line(cl, reply, strlen(reply));
  if (!cl->closing && cl->writes == 0) hang_up(cl);
}

static void append(client *cl, const char *p, size_t n) {
  if (cl->len + n > cl->cap) {
    size_t cap = cl->cap ? cl->cap : 256;
    while (cap < cl->len + n) cap *= 2;
    cl->partial = mb_xrealloc(cl->partial, cap);
    cl->cap = cap;
  }
  memcpy(cl->partial + cl->len, p, n);
  cl->len += n;
}

static void deliver(client *cl, const char *line, size_t len) {
  if (len > 0 && line[len - 1] == '\r') len--;
  mb_control *c = cl->server;
  c->on_request(c, cl->id, line, len, c->data);
}

/* Whether the client still takes requests: the callback may have
 * dropped it, or closed the whole server. */
static bool listening_to(const client *cl) {
  return !cl->closing && !cl->dropping && !cl->server->closing;
}

static void take(client *cl, const char *p, size_t n) {
  size_t max = cl->server->max_request;
  const char *end = p + n;
  while (p < end && listening_to(cl)) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t part = (size_t)((nl ? nl : end) - p);
    if (cl->len + part > max) {
      mb_log_field f[] = {MB_LI("client", cl->id), MB_LI("max_bytes", max)};
      mb_log(MB_LOG_WARN, "control request too long; client dropped", f, 2);
      drop(cl, cl->server->too_long_reply);
      return;
    }
    if (!nl) {
      append(cl, p, part);
      return;
    }
    if (cl->len) {
      append(cl, p, part);
      size_t whole = cl->len;
      cl->len = 0;
      deliver(cl, cl->partial, whole);
      /* One long request need not hold its buffer for the client's life. */
      if (cl->cap > READ_CHUNK && !cl->closing) {
        free(cl->partial);
        cl->partial = NULL;
        cl->cap = 0;
      }
    } else {
      deliver(cl, p, part);
    }
    p = nl + 1;
  }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  client *cl = s->data;
  if (nread < 0) {
    /* A request cut off by a hang-up is dropped with the client. */
    hang_up(cl);
    return;
  }
  take(cl, buf->base, (size_t)nread);
}

static void on_connection(uv_stream_t *listener, int status) {
  mb_control *c = listener->data;
  if (status < 0 || c->closing) return;
  client *cl = mb_xcalloc(1, sizeof *cl);
  cl->server = c;
  uv_pipe_init(c->loop, &cl->pipe, 0);
  cl->pipe.data = cl;
  c->open_handles++;
  cl->id = ++c->last_id;
  cl->next = c->clients;
  if (cl->next) cl->next->prevp = &cl->next;
  cl->prevp = &c->clients;
  c->clients = cl;
  c->nclients++;
  if (uv_accept(listener, (uv_stream_t *)&cl->pipe) < 0) {
    hang_up(cl);
    return;
  }
  if (c->nclients > c->max_clients) {
    mb_log_field f[] = {MB_LI("max_clients", c->max_clients)};
    mb_log(MB_LOG_WARN, "too many control clients; one turned away", f, 1);
    drop(cl, c->too_many_reply);
    return;
  }
  uv_read_start((uv_stream_t *)&cl->pipe, on_alloc, on_read);
}

/* ---- the server ---- */

static void on_listener_closed(uv_handle_t *h) { release(h->data); }

mb_control *mb_control_listen(uv_loop_t *loop, const char *path,
                              const mb_control_opts *opts, mb_err *err) {
  struct sockaddr_un addr;
  if (mb_control_prepare(path, err) < 0 || fill_address(path, &addr, err) < 0)
    return NULL;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    mb_err_set(err, -errno, "socket: %s", strerror(errno));
    return NULL;
  }
  struct stat st;
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    mb_err_set(err, -errno, "cannot listen on %s: %s", path, strerror(errno));
    close(fd);
    return NULL;
  }
  /* The directory already keeps others out; the mode says so too. */
  if (chmod(path, 0600) < 0 || stat(path, &st) < 0 ||
      listen(fd, BACKLOG) < 0) {
    mb_err_set(err, -errno, "cannot listen on %s: %s", path, strerror(errno));
    close(fd);
    unlink(path);
    return NULL;
  }
  mb_control *c = mb_xcalloc(1, sizeof *c);
  c->loop = loop;
  c->path = mb_xstrdup(path);
  c->dev = st.st_dev;
  c->ino = st.st_ino;
  c->max_request = opts->max_request ? opts->max_request
                                     : MB_CONTROL_MAX_REQUEST;
  c->max_clients = opts->max_clients ? opts->max_clients
                                     : MB_CONTROL_MAX_CLIENTS;
  if (opts->too_long_reply) c->too_long_reply = mb_xstrdup(opts->too_long_reply);
  if (opts->too_many_reply) c->too_many_reply = mb_xstrdup(opts->too_many_reply);
  c->on_request = opts->on_request;
  c->on_gone = opts->on_gone;
  c->data = opts->data;
  uv_pipe_init(loop, &c->listener, 0);
  c->listener.data = c;
  c->open_handles = 1;
  int rc = uv_pipe_open(&c->listener, fd);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&c->listener, BACKLOG, on_connection);
  if (rc < 0) {
    mb_err_set(err, rc, "cannot listen on %s: %s", path, uv_strerror(rc));
    mb_control_close(c);
    return NULL;
  }
  return c;
}

void mb_control_close(mb_control *c) {
  if (!c || c->closing) return;
  c->closing = true;
  /* Only our own socket: never a file someone put there since. */
  struct stat st;
  if (stat(c->path, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
    unlink(c->path);
  while (c->clients) hang_up(c->clients);
  uv_close((uv_handle_t *)&c->listener, on_listener_closed);
}

int mb_control_send(mb_control *c, uint64_t id, const char *text,
                    size_t len) {
  client *cl = c && !c->closing ? find_client(c, id) : NULL;
  if (!cl || cl->dropping) return MB_ENOTFOUND;
  return queue_line(cl, text, len) < 0 ? MB_ENOTFOUND : 0;
}

int mb_control_drop(mb_control *c, uint64_t id) {
  client *cl = c && !c->closing ? find_client(c, id) : NULL;
  if (!cl || cl->dropping) return MB_ENOTFOUND;
  drop(cl, NULL);
  return 0;
}

size_t mb_control_clients(const mb_control *c) { return c->nclients; }

static void count_handle(uv_handle_t *h, void *arg) {
  if (!uv_is_closing(h)) ++*(size_t *)arg;
}

size_t mb_control_loop_handles(const mb_control *c) {
  size_t n = 0;
  uv_walk(c->loop, count_handle, &n);
  return n;
}
