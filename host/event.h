/* event.h: what happens to jobs and runs, as one record. The scheduler
 * core and the runner emit events through the sched hooks; the host
 * writes each as one log line and hands it to the Lua listeners. */
#ifndef MB_EVENT_H
#define MB_EVENT_H

#include <stdbool.h>

#include "common.h"

#define MB_EVENT_KINDS(X)                 \
  X(ADDED, "added", "job added")          \
  X(REMOVED, "removed", "job removed")    \
  X(MODIFIED, "modified", "job modified") \
  X(PAUSED, "paused", "job paused")       \
  X(RESUMED, "resumed", "job resumed")    \
  X(STARTED, "started", "run started")    \
  X(EXECUTED, "executed", "run finished") \
  X(ERROR, "error", "run failed")         \
  X(TIMEOUT, "timeout", "run timed out")  \
  X(CANCELLED, "cancelled", "run cancelled") \
  X(MISSED, "missed", "fire missed")      \
  X(SKIPPED, "skipped", "fire skipped")   \
  X(BUFFERED, "buffered", "fire buffered") \
  X(RETRY, "retry", "retry scheduled")    \
  X(RETRIES_EXHAUSTED, "retries_exhausted", "retries exhausted")

enum {
#define MB_EV_ENUM(name, kind, msg) MB_EV_##name,
  MB_EVENT_KINDS(MB_EV_ENUM)
#undef MB_EV_ENUM
  MB_EV_COUNT
};

/* Fields that do not apply are 0, NULL or MB_TIME_NONE as noted. */
typedef struct mb_event {
  int kind;
  const char *job_id;
  uint64_t run_id;         /* 0: no run */
  mb_time scheduled_time;  /* MB_TIME_NONE: none */
  mb_time start_time;      /* MB_TIME_NONE: none */
  mb_time duration;        /* < 0: none */
  int attempt;             /* 0: none */
  const char *error;
  const char *traceback;
  mb_time next_time;       /* added, resumed, retry: when it fires next */
  const char *reason;      /* missed, skipped, buffered, cancelled: why */
  const char *detail;      /* added, modified: the trigger described */
  /* added: the trigger, described as detail only by those who read it
   * (most adds are neither logged nor heard). */
  const struct mb_trigger *trigger;
  const char *log_tail;    /* a run's end: the last lines it logged */
  bool manual;             /* a run asked for (run_job), not a fire */
  struct mb_job *job;      /* a run's start and end, added, paused,
                              resumed: its job (a lookup by id spared),
                              or NULL */
} mb_event;

/* An event of kind about job_id with every optional field unset. */
mb_event mb_event_make(int kind, const char *job_id);

/* "executed", "retries_exhausted", ...; kind from a name, or -1. */
const char *mb_event_name(int kind);
int mb_event_kind(const char *name);

/* ev's detail, or its trigger described into buf (NULL: neither). */
const char *mb_event_detail(const mb_event *ev, char *buf, size_t n);

/* Write ev as one log line: "run finished job=... status=...", at its
 * kind's level or at level. */
void mb_event_log(const mb_event *ev);
void mb_event_log_at(const mb_event *ev, int level);

#endif
