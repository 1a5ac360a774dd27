/* fs.h: file operations for jobs, the host half of moonbeat.fs (the C
 * module `moonbeat.core.fs`). Each operation is a chain of libuv fs
 * requests. On a run's own thread the requests go to libuv's thread
 * pool and the run waits; anywhere else (a job file being loaded, a
 * script) the same chain runs synchronously. When the run ends first,
 * the operation is abandoned: the request in flight finishes in the
 * pool (a request already running cannot be cancelled), the operation
 * undoes what it began (closes its descriptor, removes its temporary
 * file) and frees itself in its last callback. */
#ifndef MB_FS_H
#define MB_FS_H

#include <lua.h>
#include <stddef.h>

/* The module: read, write (atomic), append, list, stat, remove, mkdir
 * (with parents), and live(). */
int luaopen_moonbeat_core_fs(lua_State *L);

/* Operations started and not yet freed: a leak check for tests. */
size_t mb_fs_live(void);

#endif
