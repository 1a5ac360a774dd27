/* embedded.h: the Lua sources compiled into the binary. The table is
 * generated at build time from lua/ and stdlib/ (tools/embed.c). */
#ifndef MB_EMBEDDED_H
#define MB_EMBEDDED_H

#include <stddef.h>

typedef struct mb_embedded {
  const char *module;     /* "mb.validate", "moonbeat.time" */
  const char *chunkname;  /* "@lua/validate.lua": tracebacks name it */
  const char *data;
  size_t size;
} mb_embedded;

/* Ends with an entry whose module is NULL. */
extern const mb_embedded mb_embedded_files[];

#endif
