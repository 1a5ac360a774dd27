/* sqlite.h: sqlite databases for job runs. Statements run off the loop
 * thread, on libuv's thread pool (uv_queue_work): a connection is used
 * by one worker at a time, its statements queue in order, and the Lua
 * state is never touched in a worker (parameters and rows travel as C
 * data). A run that ends while its statement runs interrupts it
 * (sqlite3_interrupt, and a flag the worker's progress and busy
 * handlers watch); the connection is freed only after the worker is
 * done with it.
 *
 * `moonbeat.core.sqlite` is the C half of `moonbeat.sqlite`
 * (stdlib/sqlite.lua builds exec, query and transaction on it). */
#ifndef MB_SQLITE_H
#define MB_SQLITE_H

#include <lua.h>
#include <uv.h>

/* The module: open(path, readonly, create, busy_timeout_ms) -> db, or
 * nil, message, code; stats() -> {connections, statements}. */
int luaopen_moonbeat_core_sqlite(lua_State *L);

/* The loop is closing: wait until no statement queued on it runs in a
 * worker any more (its runs are cancelled by then, so this is short),
 * running the loop to collect them. */
void mb_sqlite_loop_drain(uv_loop_t *loop);

#endif
