/* watch.h: a job directory seen from the file system. Linux's inotify
 * does not recurse, so a watch holds one libuv fs event per directory:
 * it adds one for each directory that appears and drops those whose
 * directory goes. Changes are gathered until the tree has been quiet for
 * a moment of real time (editors write a file in several steps, or save
 * by renaming a temporary file over it) and handed over as one batch.
 *
 * What counts: files whose name ends in ".lua" and directories. Names
 * starting with "." (editor temporaries, .git) are left out. The
 * directory "lib" at the top holds Lua modules that job files require,
 * not job files: the watch sees its changes (paths under "lib/"), and
 * mb_watch_list leaves it out. Paths are relative to the root; a
 * directory's ends in "/". */
#ifndef MB_WATCH_H
#define MB_WATCH_H

#include <stddef.h>
#include <uv.h>

#include "common.h"

typedef struct mb_watch mb_watch;

/* A batch of changed paths, sorted, each once. The strings are the
 * watch's, valid during the call. The callback may close the watch. */
typedef void (*mb_watch_cb)(mb_watch *watch, const char *const *paths,
                            size_t n, void *data);

/* The quiet period, and the longest a change waits while the tree
 * keeps changing, in milliseconds. */
#define MB_WATCH_QUIET_MS 15
#define MB_WATCH_MAX_WAIT_MS 250

/* Watch root and every directory below it on loop. Returns NULL and
 * fills err when root cannot be watched; a subdirectory that cannot be
 * is logged and skipped. Close with mb_watch_close. */
mb_watch *mb_watch_new(uv_loop_t *loop, const char *root, mb_watch_cb cb,
                       void *data, mb_err *err);
/* Stop: no callback after this. Memory goes once libuv has closed the
 * handles (run the loop once more). NULL is fine. */
void mb_watch_close(mb_watch *watch);
/* How many directories are watched: for tests. */
size_t mb_watch_dirs(const mb_watch *watch);

/* The job files under root, sorted, as paths relative to it. A
 * directory reached twice (through a symbolic link) is read once.
 * Returns 0 and sets *paths (free each and the array) and *n, or < 0
 * and fills err when root cannot be read. */
int mb_watch_list(const char *root, char ***paths, size_t *n, mb_err *err);

#endif
