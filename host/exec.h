/* exec.h: child processes for job runs, the host half of moonbeat.exec
 * (the C module `moonbeat.core.exec`). A child gets a session and a
 * process group of its own; the whole group is killed when the command
 * exits (nothing it started in the background outlives it), when its
 * own timeout passes (SIGTERM, then SIGKILL after a grace), and when
 * the run that waits for it ends first (SIGKILL at once). The memory of
 * a child outlives that run until the child is reaped and its last
 * handle is closed. */
#ifndef MB_EXEC_H
#define MB_EXEC_H

#include <lua.h>
#include <stddef.h>

#include "common.h"

/* After SIGTERM at a command's own timeout, this long before SIGKILL. */
#define MB_EXEC_KILL_GRACE (2 * MB_SEC)

/* The module: spawn(name, argv, opts), which waits inside a run, and
 * live(). */
int luaopen_moonbeat_core_exec(lua_State *L);

/* Children started and not yet released (reaped, handles closed): a
 * leak check for tests. */
size_t mb_exec_live(void);

#endif
