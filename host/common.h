/* common.h: what every module shares: time values, error codes and
 * messages, and the host allocator. */
#ifndef MB_COMMON_H
#define MB_COMMON_H

#include <stddef.h>
#include <stdint.h>

/* An instant: microseconds since the Unix epoch, UTC. */
typedef int64_t mb_time;
#define MB_TIME_NONE INT64_MIN
#define MB_SEC INT64_C(1000000)

/* Our error codes sit at -5000 and below; libuv's pass through. */
#define MB_ERRNO_MAP(X)                                        \
  X(EINVAL, -5001, "invalid argument")                         \
  X(ENOTFOUND, -5002, "not found")                             \
  X(EEXIST, -5003, "already exists")                           \
  X(ENEVER, -5004, "trigger can never fire")                   \
  X(ECANCELED, -5005, "canceled")                              \
  X(ELUA, -5006, "error in Lua code")                          \
  X(ESTATE, -5007, "wrong state for this operation")         \
  X(EBUSY, -5008, "in use by another process")                 \
  X(ESTORE, -5009, "the store failed")

enum {
#define MB_ERR_ENUM(name, code, text) MB_##name = (code),
  MB_ERRNO_MAP(MB_ERR_ENUM)
#undef MB_ERR_ENUM
};

/* A failure explained for a person: code plus a one-line message. */
typedef struct mb_err {
  int code;
  char msg[256];
} mb_err;

/* Fill err (which may be NULL) with code and a printf-style message;
 * returns code so callers can `return mb_err_set(...)`. */
int mb_err_set(mb_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Text for any code: ours, libuv's, or a negative errno. */
const char *mb_strerror(int code);
/* Symbolic name such as "MB_ENEVER" or "ENOENT". */
const char *mb_err_name(int code);

/* Allocation that never returns NULL: it aborts with a message. */
void *mb_xmalloc(size_t n);
void *mb_xcalloc(size_t n, size_t size);
/* What the mb_x allocators do when memory is out: say so, and abort. */
_Noreturn void mb_out_of_memory(size_t n);
void *mb_xrealloc(void *p, size_t n);
char *mb_xstrdup(const char *s);

#endif
