/* control.h: the control socket's server. A Unix socket on the loop
 * where each client sends requests, one per line, and gets responses
 * written back in order. The server frames lines, bounds their size,
 * the number of clients and what waits unwritten for a slow reader, and
 * hands each complete line to a callback: what a line means is the
 * caller's business (lua/control.lua).
 *
 * The socket file has mode 0600 and sits in a directory only its user
 * can enter; it is removed when the server closes. A client that
 * disconnects, or that the server drops, never disturbs the others. */
#ifndef MB_CONTROL_H
#define MB_CONTROL_H

#include <stdint.h>
#include <uv.h>

#include "common.h"

/* Bytes in one request line, and clients connected at once. */
#define MB_CONTROL_MAX_REQUEST ((size_t)1 << 20)
#define MB_CONTROL_MAX_CLIENTS 128

typedef struct mb_control mb_control;

/* A complete request line from client (an id unique for the server's
 * life), without its line end; it may hold any bytes, NUL included. */
typedef void (*mb_control_request_cb)(mb_control *c, uint64_t client,
                                      const char *line, size_t len,
                                      void *data);
/* client has gone (it hung up, or was dropped). Called from the loop,
 * never from inside mb_control_send or mb_control_drop, and never for
 * the clients a closing server drops. */
typedef void (*mb_control_gone_cb)(mb_control *c, uint64_t client,
                                   void *data);

typedef struct mb_control_opts {
  size_t max_request;            /* 0: MB_CONTROL_MAX_REQUEST */
  size_t max_clients;            /* 0: MB_CONTROL_MAX_CLIENTS */
  /* Lines sent, before the client is dropped, to a client whose request
   * is too long and to one beyond max_clients (NULL: none). Copied. */
  const char *too_long_reply;
  const char *too_many_reply;
  mb_control_request_cb on_request;
  mb_control_gone_cb on_gone;    /* may be NULL */
  void *data;
} mb_control_opts;

/* Get path ready for a server: its directory exists (made 0700 when
 * missing), is owned by this user and closed to group and others; no
 * live server answers on path (a stale socket file is removed); path is
 * short enough for a socket address. Returns 0, or < 0 and fills err:
 * MB_EBUSY when a server answers. */
int mb_control_prepare(const char *path, mb_err *err);

/* Prepare path, then listen on it on loop (path and opts are copied).
 * Returns NULL and fills err on failure. Close with mb_control_close. */
mb_control *mb_control_listen(uv_loop_t *loop, const char *path,
                              const mb_control_opts *opts, mb_err *err);

/* Stop listening, drop every client and remove the socket file. Memory
 * is freed once the handles are closed: the loop must run once more
 * (closing the scheduler does). Accepts NULL. */
void mb_control_close(mb_control *c);

/* Queue text and a newline for client. Returns 0, or MB_ENOTFOUND when
 * the client has gone or is being dropped. */
int mb_control_send(mb_control *c, uint64_t client, const char *text,
                    size_t len);
/* Hang up on client once what is queued for it is written. Returns 0,
 * or MB_ENOTFOUND. */
int mb_control_drop(mb_control *c, uint64_t client);

/* Clients connected now. */
size_t mb_control_clients(const mb_control *c);
/* Handles open on the server's loop (a leak check for specs). */
size_t mb_control_loop_handles(const mb_control *c);

#endif
