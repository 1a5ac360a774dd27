/* control_lua.h: the control socket seen from Lua, as the module
 * `mb.control_socket` that lua/control.lua builds the protocol on:
 *
 *   sock.prepare(path) -> true | nil, message, code
 *   sock.listen(sched, path, {on_request = fn(client, line) -> reply?,
 *     on_gone = fn(client), max_request =, max_clients =,
 *     too_long_reply =, too_many_reply =}) -> server | nil, message, code
 *   server:send(client, text) / server:drop(client) -> true | nil
 *   server:clients(), server:handles(), server:close()
 *   sock.dial(path, timeout) -> conn | nil, message, code
 *   conn:write(text, timeout), conn:read_line(timeout), conn:close()
 *   sock.uid() -> the effective user id; sock.pid() -> the process id
 *
 * Timeouts are seconds (nil: none); codes are names such as "ENOENT",
 * "EOF", "ETIMEDOUT", "MB_EBUSY". */
#ifndef MB_CONTROL_LUA_H
#define MB_CONTROL_LUA_H

#include <lua.h>

int mb_control_luaopen(lua_State *L);

#endif
