/* repl.h: the REPL's terminal side, seen from Lua as the module
 * "mb.term". It reads stdin on the loop and never blocks it: through GNU
 * readline's callback interface when stdin is a terminal (line editing,
 * history, completion, Ctrl-C clearing the line), else as plain lines
 * from a pipe or a file. Text written while a prompt is shown (log
 * lines, results that arrive later) goes above the prompt, which is then
 * drawn again with what was being typed.
 *
 * Process-wide, as stdin is: one terminal is open at a time, on the
 * default loop (the loop a scheduler on the real clock runs on). What
 * each line means is the Lua side's business (lua/repl.lua). */
#ifndef MB_REPL_H
#define MB_REPL_H

#include <lua.h>

/* The module table: interactive, open, read, write, add_history,
 * interrupt, after, close, run. */
int luaopen_mb_term(lua_State *L);

#endif
