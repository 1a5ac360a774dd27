/* loop.c: the clock. Real timers share one timerfd on CLOCK_MONOTONIC
 * (microsecond precision, unlike uv_timer's milliseconds); a second
 * timerfd on CLOCK_REALTIME with TFD_TIMER_CANCEL_ON_SET wakes us when
 * the wall clock is stepped or the machine resumes, without polling. */
#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

/* Wall-minus-monotonic drift below this is NTP slewing, not a jump. */
#define JUMP_THRESHOLD (250 * 1000)

struct mb_clock {
  uv_loop_t *loop;
  int kind;
  mb_timer **heap;
  size_t len, cap;
  uint64_t seq;
  /* Virtual time; for a real clock only seen_offset is used. */
  mb_time mono;
  mb_time offset;       /* wall = mono + offset */
  mb_time seen_offset;  /* offset when we last looked */
  mb_clock_jump_cb jump_cb;
  void *jump_data;
  bool dispatching;
  uint64_t wakeups;
  /* Real clock. */
  int tfd, wfd;
  mb_time armed;        /* deadline the timerfd holds, or MB_TIME_NONE */
  bool expired;         /* the timerfd went off: readable until re-armed */
  uv_poll_t tpoll, wpoll;
  int open_handles;
};

static mb_time ts_usec(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (mb_time)ts.tv_sec * MB_SEC + ts.tv_nsec / 1000;
}

mb_time mb_clock_now(const mb_clock *c) {
  return c->kind == MB_CLOCK_VIRTUAL ? c->mono + c->offset
                                     : ts_usec(CLOCK_REALTIME);
}

mb_time mb_clock_mono(const mb_clock *c) {
  return c->kind == MB_CLOCK_VIRTUAL ? c->mono : ts_usec(CLOCK_MONOTONIC);
}

int mb_clock_kind(const mb_clock *c) { return c->kind; }

uv_loop_t *mb_clock_loop(const mb_clock *c) { return c->loop; }

void mb_clock_on_jump(mb_clock *c, mb_clock_jump_cb cb, void *data) {
  c->jump_cb = cb;
  c->jump_data = data;
}

/* ---- heap ---- */

static bool earlier(const mb_timer *a, const mb_timer *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void place(mb_clock *c, size_t i, mb_timer *t) {
  c->heap[i] = t;
  t->slot = i;
}

static void sift_up(mb_clock *c, size_t i) {
  mb_timer *t = c->heap[i];
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!earlier(t, c->heap[parent])) break;
    place(c, i, c->heap[parent]);
    i = parent;
  }
  place(c, i, t);
}

static void sift_down(mb_clock *c, size_t i) {
  mb_timer *t = c->heap[i];
  for (;;) {
    size_t child = 2 * i + 1;
    if (child >= c->len) break;
    if (child + 1 < c->len && earlier(c->heap[child + 1], c->heap[child]))
      child++;
    if (!earlier(c->heap[child], t)) break;
    place(c, i, c->heap[child]);
    i = child;
  }
  place(c, i, t);
}

static void heap_remove(mb_clock *c, mb_timer *t) {
  size_t i = t->slot;
  mb_timer *last = c->heap[--c->len];
  t->slot = SIZE_MAX;
  if (i == c->len) return;
  place(c, i, last);
  if (i > 0 && earlier(last, c->heap[(i - 1) / 2]))
    sift_up(c, i);
  else
    sift_down(c, i);
}

/* ---- the kernel timer ---- */

static void arm(mb_clock *c) {
  if (c->kind != MB_CLOCK_REAL || c->dispatching) return;
  /* The poll watcher keeps the loop alive only while timers wait. */
  if (c->len)
    uv_ref((uv_handle_t *)&c->tpoll);
  else
    uv_unref((uv_handle_t *)&c->tpoll);
  mb_time due = c->len ? c->heap[0]->due : MB_TIME_NONE;
  /* Setting the timerfd, to a deadline or to none, also clears the
   * expiry that made it readable: an expired one is always set again. */
  if (due == c->armed && !c->expired) return;
  struct itimerspec its;
  memset(&its, 0, sizeof its);
  if (due != MB_TIME_NONE) {
    /* A zero it_value disarms, so a deadline already past becomes 1 ns. */
    mb_time at = due > 0 ? due : 0;
    its.it_value.tv_sec = at / MB_SEC;
    its.it_value.tv_nsec = (long)(at % MB_SEC) * 1000;
    if (at == 0) its.it_value.tv_nsec = 1;
  }
  timerfd_settime(c->tfd, TFD_TIMER_ABSTIME, &its, NULL);
  c->armed = due;
  c->expired = false;
}

static void arm_wall_watch(mb_clock *c) {
  /* Far in the future: we only want the cancel-on-set wake-up. */
  struct itimerspec its;
  memset(&its, 0, sizeof its);
  its.it_value.tv_sec = (time_t)1 << 40;
  timerfd_settime(c->wfd, TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET, &its,
                  NULL);
}

static void check_jump(mb_clock *c) {
  mb_time offset = mb_clock_now(c) - mb_clock_mono(c);
  mb_time delta = offset - c->seen_offset;
  mb_time threshold = c->kind == MB_CLOCK_VIRTUAL ? 0 : JUMP_THRESHOLD;
  if (delta > threshold || delta < -threshold) {
    c->seen_offset = offset;
    if (c->jump_cb) c->jump_cb(c, delta, c->jump_data);
  }
}

/* Zero-delay timers started at one virtual instant fire at that instant
 * in rounds; a chain longer than this (a job that reruns itself at once,
 * forever) continues on the next advance instead of never returning. */
#define MAX_ROUNDS_PER_INSTANT 100

/* Fire every timer due at or before `upto`; a virtual clock moves to
 * each deadline before firing it. A real clock fires only what was due
 * when it woke: a timer started meanwhile waits for the next turn. */
static void dispatch(mb_clock *c, mb_time upto) {
  c->dispatching = true;
  mb_time instant = MB_TIME_NONE;
  uint64_t round_seq = c->seq;
  int rounds = 0;
  while (c->len && c->heap[0]->due <= upto) {
    mb_timer *t = c->heap[0];
    if (c->kind == MB_CLOCK_VIRTUAL) {
      if (t->due != instant) {
        /* A virtual clock wakes once per distinct deadline, as a real
         * one wakes once per timerfd expiry. */
        c->wakeups++;
        instant = t->due;
        round_seq = c->seq;
        rounds = 0;
      } else if (t->seq >= round_seq) {
        if (++rounds == MAX_ROUNDS_PER_INSTANT) break;
        round_seq = c->seq;
      }
      if (t->due > c->mono) c->mono = t->due;
    }
    heap_remove(c, t);
    t->cb(t);
    if (c->kind == MB_CLOCK_VIRTUAL) uv_run(c->loop, UV_RUN_NOWAIT);
  }
  c->dispatching = false;
  arm(c);
}

static void on_timerfd(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  mb_clock *c = p->data;
  /* No read of the expiry count: arm sets the timerfd again after the
   * dispatch, which clears it, and saves a system call per wake-up. */
  c->expired = true;
  c->armed = MB_TIME_NONE;
  c->wakeups++;
  check_jump(c);
  dispatch(c, mb_clock_mono(c));
}

static void on_wallfd(uv_poll_t *p, int status, int events) {
  (void)status;
  (void)events;
  mb_clock *c = p->data;
  uint64_t expirations;
  /* ECANCELED here is the news: the wall clock was set. */
  while (read(c->wfd, &expirations, sizeof expirations) > 0) {}
  arm_wall_watch(c);
  check_jump(c);
  c->armed = MB_TIME_NONE;
  arm(c);
}

/* ---- public ---- */

mb_clock *mb_clock_new(uv_loop_t *loop, int kind, mb_time start, mb_err *err) {
  mb_clock *c = mb_xcalloc(1, sizeof *c);
  c->loop = loop;
  c->kind = kind;
  c->armed = MB_TIME_NONE;
  c->tfd = c->wfd = -1;
  if (kind == MB_CLOCK_VIRTUAL) {
    c->mono = 0;
    c->offset = start;
    c->seen_offset = start;
    return c;
  }
  c->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  c->wfd = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK | TFD_CLOEXEC);
  if (c->tfd < 0 || c->wfd < 0) {
    mb_err_set(err, -errno, "timerfd_create: %s", strerror(errno));
    if (c->tfd >= 0) close(c->tfd);
    if (c->wfd >= 0) close(c->wfd);
    free(c);
    return NULL;
  }
  uv_poll_init(loop, &c->tpoll, c->tfd);
  uv_poll_init(loop, &c->wpoll, c->wfd);
  c->tpoll.data = c->wpoll.data = c;
  c->open_handles = 2;
  uv_poll_start(&c->tpoll, UV_READABLE, on_timerfd);
  uv_poll_start(&c->wpoll, UV_READABLE, on_wallfd);
  /* The watchers must not keep `uv_run` alive on their own. */
  uv_unref((uv_handle_t *)&c->tpoll);
  uv_unref((uv_handle_t *)&c->wpoll);
  arm_wall_watch(c);
  c->seen_offset = mb_clock_now(c) - mb_clock_mono(c);
  return c;
}

static void on_poll_closed(uv_handle_t *h) {
  mb_clock *c = h->data;
  if (--c->open_handles == 0) {
    close(c->tfd);
    close(c->wfd);
    free(c->heap);
    free(c);
  }
}

void mb_clock_close(mb_clock *c) {
  if (!c) return;
  while (c->len) heap_remove(c, c->heap[0]);
  if (c->kind == MB_CLOCK_VIRTUAL) {
    free(c->heap);
    free(c);
    return;
  }
  uv_close((uv_handle_t *)&c->tpoll, on_poll_closed);
  uv_close((uv_handle_t *)&c->wpoll, on_poll_closed);
}

void mb_timer_init(mb_timer *t, mb_timer_cb cb, void *data) {
  memset(t, 0, sizeof *t);
  t->cb = cb;
  t->data = data;
  t->slot = SIZE_MAX;
}

bool mb_timer_active(const mb_timer *t) { return t->slot != SIZE_MAX; }

bool mb_clock_busy(const mb_clock *c) { return c->dispatching; }

size_t mb_clock_active_timers(const mb_clock *c) { return c->len; }
uint64_t mb_clock_wakeups(const mb_clock *c) { return c->wakeups; }

void mb_timer_start(mb_clock *c, mb_timer *t, mb_time delay) {
  if (mb_timer_active(t)) heap_remove(c, t);
  if (delay < 0) delay = 0;
  t->due = mb_clock_mono(c) + delay;
  t->seq = c->seq++;
  if (c->len == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 64;
    c->heap = mb_xrealloc(c->heap, c->cap * sizeof *c->heap);
  }
  c->heap[c->len] = t;
  t->slot = c->len++;
  sift_up(c, t->slot);
  arm(c);
}

void mb_timer_stop(mb_clock *c, mb_timer *t) {
  if (!mb_timer_active(t)) return;
  heap_remove(c, t);
  arm(c);
}

int mb_clock_advance(mb_clock *c, mb_time delta) {
  if (c->kind != MB_CLOCK_VIRTUAL) return MB_ESTATE;
  if (c->dispatching) return MB_ESTATE;
  if (delta < 0) return MB_EINVAL;
  mb_time target = c->mono + delta;
  uv_run(c->loop, UV_RUN_NOWAIT);
  check_jump(c);
  dispatch(c, target);
  /* Stopped short by a runaway chain: time stays where it is. */
  if (!(c->len && c->heap[0]->due < target)) c->mono = target;
  uv_run(c->loop, UV_RUN_NOWAIT);
  return 0;
}

int mb_clock_stall(mb_clock *c, mb_time delta) {
  if (c->kind != MB_CLOCK_VIRTUAL) return MB_ESTATE;
  if (delta < 0) return MB_EINVAL;
  c->mono += delta;
  return 0;
}

int mb_clock_jump(mb_clock *c, mb_time delta) {
  if (c->kind != MB_CLOCK_VIRTUAL) return MB_ESTATE;
  c->offset += delta;
  return 0;
}
