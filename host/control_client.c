/* control_client.c: a blocking client of the control socket. Every wait
 * goes through poll() against one deadline, so a scheduler that stops
 * answering costs the caller its time limit, never a hang. */
#include "control_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

/* An answer larger than this is not one the server would send. */
#define MAX_LINE ((size_t)1 << 30)

struct mb_control_conn {
  int fd;
  char *buf;
  size_t start, len, cap;  /* unread bytes are buf[start, start + len) */
  size_t line_end;         /* the line handed out last, to skip next */
};

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for events on conn; timeout_ms < 0 waits for ever. */
static int wait_for(mb_control_conn *conn, short events, long long deadline,
                    mb_err *err) {
  for (;;) {
    int left = -1;
    if (deadline >= 0) {
      long long ms = deadline - now_ms();
      if (ms <= 0)
        return mb_err_set(err, -ETIMEDOUT,
                          "the scheduler did not answer in time");
      left = ms > 1000000 ? 1000000 : (int)ms;
    }
    struct pollfd p = {.fd = conn->fd, .events = events};
    int n = poll(&p, 1, left);
    if (n > 0) return 0;
    if (n < 0 && errno != EINTR)
      return mb_err_set(err, -errno, "poll: %s", strerror(errno));
  }
}

static long long deadline_of(int timeout_ms) {
  return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

mb_control_conn *mb_control_dial(const char *path, int timeout_ms,
                                 mb_err *err) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) {
    mb_err_set(err, -ENAMETOOLONG, "socket path %s is too long", path);
    return NULL;
  }
  memcpy(addr.sun_path, path, strlen(path));
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    mb_err_set(err, -errno, "socket: %s", strerror(errno));
    return NULL;
  }
  /* A Unix socket's connect waits only while the server's backlog is
   * full; the send timeout bounds that wait. */
  if (timeout_ms >= 0) {
    struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  }
  if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int e = errno == EAGAIN || errno == EINPROGRESS ? ETIMEDOUT : errno;
    mb_err_set(err, -e, "%s: %s", path, strerror(e));
    close(fd);
    return NULL;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  mb_control_conn *conn = mb_xcalloc(1, sizeof *conn);
  conn->fd = fd;
  return conn;
}

int mb_control_write(mb_control_conn *conn, const char *data, size_t len,
                     int timeout_ms, mb_err *err) {
  long long deadline = deadline_of(timeout_ms);
  while (len > 0) {
    /* MSG_NOSIGNAL: a server that hung up is an error here, not a
     * SIGPIPE that kills the command. */
    ssize_t n = send(conn->fd, data, len, MSG_NOSIGNAL);
    if (n >= 0) {
      data += n;
      len -= (size_t)n;
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int rc = wait_for(conn, POLLOUT, deadline, err);
      if (rc < 0) return rc;
    } else if (errno != EINTR) {
      return mb_err_set(err, -errno, "writing to the scheduler: %s",
                        strerror(errno));
    }
  }
  return 0;
}

int mb_control_read_line(mb_control_conn *conn, int timeout_ms,
                         const char **line, size_t *len, mb_err *err) {
  long long deadline = deadline_of(timeout_ms);
  conn->start += conn->line_end;
  conn->len -= conn->line_end;
  conn->line_end = 0;
  size_t scanned = 0;
  for (;;) {
    char *base = conn->buf + conn->start;
    char *nl = conn->len ? memchr(base + scanned, '\n', conn->len - scanned)
                         : NULL;
    if (nl) {
      *line = base;
      *len = (size_t)(nl - base);
      conn->line_end = *len + 1;
      return 0;
    }
    scanned = conn->len;
    if (conn->len > MAX_LINE)
      return mb_err_set(err, MB_EINVAL, "the scheduler's answer is too long");
    /* Room to read: move what is left to the front, then grow. */
    if (conn->start > 0) {
      memmove(conn->buf, conn->buf + conn->start, conn->len);
      conn->start = 0;
    }
    if (conn->cap - conn->len < 4096) {
      conn->cap = conn->cap ? conn->cap * 2 : 65536;
      conn->buf = mb_xrealloc(conn->buf, conn->cap);
    }
    ssize_t n = recv(conn->fd, conn->buf + conn->len, conn->cap - conn->len, 0);
    if (n > 0) {
      conn->len += (size_t)n;
    } else if (n == 0) {
      return mb_err_set(err, UV_EOF, "the scheduler closed the connection");
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      int rc = wait_for(conn, POLLIN, deadline, err);
      if (rc < 0) return rc;
    } else if (errno != EINTR) {
      return mb_err_set(err, -errno, "reading from the scheduler: %s",
                        strerror(errno));
    }
  }
}

void mb_control_hangup(mb_control_conn *conn) {
  if (!conn) return;
  close(conn->fd);
  free(conn->buf);
  free(conn);
}
