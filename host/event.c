/* event.c: event names and their log lines. */
#include "event.h"

#include <string.h>

#include "log.h"
#include "trigger.h"
#include "tz.h"

static const char *const names[] = {
#define MB_EV_NAME(name, kind, msg) kind,
  MB_EVENT_KINDS(MB_EV_NAME)
#undef MB_EV_NAME
};

static const char *const messages[] = {
#define MB_EV_MSG(name, kind, msg) msg,
  MB_EVENT_KINDS(MB_EV_MSG)
#undef MB_EV_MSG
};

mb_event mb_event_make(int kind, const char *job_id) {
  return (mb_event){
    .kind = kind,
    .job_id = job_id,
    .scheduled_time = MB_TIME_NONE,
    .start_time = MB_TIME_NONE,
    .duration = -1,
    .next_time = MB_TIME_NONE,
  };
}

const char *mb_event_name(int kind) {
  return kind >= 0 && kind < MB_EV_COUNT ? names[kind] : "?";
}

int mb_event_kind(const char *name) {
  for (int i = 0; i < MB_EV_COUNT; i++)
    if (strcmp(names[i], name) == 0) return i;
  return -1;
}

static int level_of(int kind) {
  switch (kind) {
  case MB_EV_ERROR:
  case MB_EV_TIMEOUT:
  case MB_EV_RETRIES_EXHAUSTED:
    return MB_LOG_ERROR;
  case MB_EV_MISSED:
  case MB_EV_SKIPPED:
  case MB_EV_CANCELLED:
  case MB_EV_RETRY:
    return MB_LOG_WARN;
  default:
    return MB_LOG_INFO;
  }
}

static const char *status_of(int kind) {
  switch (kind) {
  case MB_EV_EXECUTED: return "success";
  case MB_EV_ERROR: return "error";
  case MB_EV_TIMEOUT: return "timeout";
  case MB_EV_CANCELLED: return "cancelled";
  default: return NULL;
  }
}

const char *mb_event_detail(const mb_event *ev, char *buf, size_t n) {
  if (ev->detail || !ev->trigger) return ev->detail;
  mb_trigger_describe(ev->trigger, buf, n);
  return buf;
}

void mb_event_log(const mb_event *ev) {
  mb_event_log_at(ev, level_of(ev->kind));
}

void mb_event_log_at(const mb_event *ev, int level) {
  if (!mb_log_wanted(level)) return;
  mb_log_field f[12];
  size_t n = 0;
  char scheduled[64], next[64], desc[512];
  const char *detail = mb_event_detail(ev, desc, sizeof desc);
  f[n++] = MB_LS("job", ev->job_id);
  if (ev->run_id) f[n++] = MB_LI("run", ev->run_id);
  if (detail) f[n++] = MB_LS("trigger", detail);
  if (ev->attempt > 1 || (ev->attempt && ev->kind == MB_EV_RETRY))
    f[n++] = MB_LI("attempt", ev->attempt);
  /* A run's end names its run; the run started line has the schedule. */
  if (ev->scheduled_time != MB_TIME_NONE && !status_of(ev->kind)) {
    mb_time_format(ev->scheduled_time, mb_tz_utc(), scheduled,
                   sizeof scheduled);
    f[n++] = MB_LS("scheduled", scheduled);
  }
  if (ev->kind == MB_EV_STARTED && ev->start_time != MB_TIME_NONE &&
      ev->scheduled_time != MB_TIME_NONE)
    f[n++] = MB_LD("late", ev->start_time - ev->scheduled_time);
  if (status_of(ev->kind)) f[n++] = MB_LS("status", status_of(ev->kind));
  if (ev->duration >= 0) f[n++] = MB_LD("duration", ev->duration);
  if (ev->next_time != MB_TIME_NONE) {
    mb_time_format(ev->next_time, mb_tz_utc(), next, sizeof next);
    f[n++] = MB_LS("next", next);
  }
  if (ev->reason) f[n++] = MB_LS("reason", ev->reason);
  if (ev->error) f[n++] = MB_LS("error", ev->error);
  if (ev->traceback) f[n++] = MB_LS("traceback", ev->traceback);
  mb_log(level, messages[ev->kind], f, n);
}
