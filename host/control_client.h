/* control_client.h: the client end of the control socket, for the
 * short-lived command-line processes that talk to a running scheduler
 * (`moonbeat ls`, `moonbeat attach`). It blocks, with a time limit on
 * every step; it never runs inside a scheduler's loop. */
#ifndef MB_CONTROL_CLIENT_H
#define MB_CONTROL_CLIENT_H

#include <stddef.h>

#include "common.h"

typedef struct mb_control_conn mb_control_conn;

/* Connect to the server listening on path, waiting at most timeout_ms
 * (< 0: no limit). Returns NULL and fills err; err->code is a negative
 * errno (UV_ENOENT, UV_ECONNREFUSED: nothing listens there). */
mb_control_conn *mb_control_dial(const char *path, int timeout_ms,
                                 mb_err *err);

/* Write len bytes. Returns 0, or < 0 and fills err (UV_ETIMEDOUT, or
 * UV_EPIPE when the server hung up). */
int mb_control_write(mb_control_conn *conn, const char *data, size_t len,
                     int timeout_ms, mb_err *err);

/* Read the next line, without its newline, into *line (owned by conn,
 * valid until the next call). Returns 0, or < 0 and fills err: UV_EOF
 * when the server hung up first, UV_ETIMEDOUT. */
int mb_control_read_line(mb_control_conn *conn, int timeout_ms,
                         const char **line, size_t *len, mb_err *err);

/* Close the connection and free it. Accepts NULL. */
void mb_control_hangup(mb_control_conn *conn);

#endif
