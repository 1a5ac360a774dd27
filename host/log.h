/* log.h: one line per event, for a person (text) or a machine (JSON
 * lines). A line is a message plus ordered key/value fields. Lines go to
 * a FILE (stderr by default) and, when set, to a sink callback that
 * tests and the REPL use. Process-wide: there is one log. */
#ifndef MB_LOG_H
#define MB_LOG_H

#include <stdbool.h>
#include <stdio.h>

#include "common.h"

enum { MB_LOG_DEBUG, MB_LOG_INFO, MB_LOG_WARN, MB_LOG_ERROR, MB_LOG_OFF };
enum { MB_LOG_TEXT, MB_LOG_JSON };

typedef struct mb_log_field {
  const char *key;
  enum { MB_LF_STR, MB_LF_INT, MB_LF_NUM, MB_LF_BOOL, MB_LF_DUR } type;
  const char *s;
  long long i;
  double n;
} mb_log_field;

#define MB_LS(k, v) ((mb_log_field){.key = (k), .type = MB_LF_STR, .s = (v)})
#define MB_LI(k, v) \
  ((mb_log_field){.key = (k), .type = MB_LF_INT, .i = (long long)(v)})
#define MB_LN(k, v) ((mb_log_field){.key = (k), .type = MB_LF_NUM, .n = (v)})
/* A duration in microseconds: "1.2ms" in text, seconds in JSON. */
#define MB_LD(k, v) \
  ((mb_log_field){.key = (k), .type = MB_LF_DUR, .i = (long long)(v)})
#define MB_LB(k, v) ((mb_log_field){.key = (k), .type = MB_LF_BOOL, .i = (v)})

typedef void (*mb_log_sink)(int level, const char *msg,
                            const mb_log_field *fields, size_t n, void *data);
typedef mb_time (*mb_log_clock)(void *data);

/* Where and how lines are written. out NULL: nowhere. */
void mb_log_configure(FILE *out, int format, int min_level);
/* Timestamps come from this clock (the scheduler's, real or virtual). */
void mb_log_set_clock(mb_log_clock clock, void *data);
/* Also hand every line (at any level) to sink; NULL removes it. */
void mb_log_set_sink(mb_log_sink sink, void *data);
/* "debug", "info", "warn", "error", "off" to a level, or -1. */
int mb_log_level_from_name(const char *name);
const char *mb_log_level_name(int level);

void mb_log(int level, const char *msg, const mb_log_field *fields, size_t n);
/* Whether a line at level would go anywhere: callers skip building
 * fields nobody reads. */
bool mb_log_wanted(int level);

#endif
