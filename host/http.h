/* http.h: HTTP requests from job runs, on libcurl's multi-socket
 * interface driven by the run's loop: uv_poll handles watch curl's
 * sockets and a real uv timer carries curl's timeouts (so they run even
 * under the virtual clock). No threads, no blocking call. One curl
 * multi handle per loop, kept across runs so connections are reused;
 * it is closed by mb_http_loop_close.
 *
 * `moonbeat.core.http` is the C half of `moonbeat.http` (stdlib/http.lua,
 * which validates the request table and shapes the response). */
#ifndef MB_HTTP_H
#define MB_HTTP_H

#include <lua.h>
#include <uv.h>

/* The module: request(req) -> status, headers, body, url, or nil,
 * message, code; stats() -> {transfers, sockets, loops}. */
int luaopen_moonbeat_core_http(lua_State *L);

/* The loop is closing: release its multi handle, its cached
 * connections and its handles (their close callbacks run on the loop's
 * next turn). Transfers still in flight on it (runs of another
 * scheduler sharing the loop) keep it open until the last one ends. */
void mb_http_loop_close(uv_loop_t *loop);

#endif
