/* common.c: error text and the aborting allocator. */
#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

int mb_err_set(mb_err *err, int code, const char *fmt, ...) {
  if (err) {
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return code;
}

const char *mb_strerror(int code) {
  switch (code) {
#define MB_ERR_TEXT(name, c, text) case c: return text;
    MB_ERRNO_MAP(MB_ERR_TEXT)
#undef MB_ERR_TEXT
  default: return uv_strerror(code);
  }
}

const char *mb_err_name(int code) {
  switch (code) {
#define MB_ERR_NAME(name, c, text) case c: return "MB_" #name;
    MB_ERRNO_MAP(MB_ERR_NAME)
#undef MB_ERR_NAME
  default: return uv_err_name(code);
  }
}

_Noreturn void mb_out_of_memory(size_t n) {
  fprintf(stderr, "moonbeat: out of memory allocating %zu bytes\n", n);
  abort();
}

void *mb_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) mb_out_of_memory(n);
  return p;
}

void *mb_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) mb_out_of_memory(n * size);
  return p;
}

void *mb_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) mb_out_of_memory(n);
  return q;
}

char *mb_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  return memcpy(mb_xmalloc(n), s, n);
}
