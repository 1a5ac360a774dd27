/* loop.h: the event loop and the one clock every timer in the host goes
 * through. A clock is real (wall time from the system, timers on a
 * timerfd) or virtual (both times move only when a test advances them),
 * and it notices wall-clock jumps: a step of the system clock or a
 * suspend, or a virtual jump in tests.
 *
 * Timers are plain structs owned by their caller and kept in the
 * clock's min-heap; one kernel timer is armed for the earliest, so an
 * idle process makes no wake-ups. Stopping a timer is immediate: no
 * close callback, the memory is the caller's again at once. */
#ifndef MB_LOOP_H
#define MB_LOOP_H

#include <stdbool.h>
#include <uv.h>

#include "common.h"

typedef struct mb_clock mb_clock;
typedef struct mb_timer mb_timer;
typedef void (*mb_timer_cb)(mb_timer *timer);
/* delta: how far wall time moved against monotonic time. */
typedef void (*mb_clock_jump_cb)(mb_clock *clock, mb_time delta, void *data);

struct mb_timer {
  mb_timer_cb cb;
  void *data;
  /* Private to the clock. */
  mb_time due;   /* monotonic microseconds */
  uint64_t seq;  /* keeps equal deadlines first-in, first-out */
  size_t slot;   /* index in the heap, or SIZE_MAX when stopped */
};

enum { MB_CLOCK_REAL, MB_CLOCK_VIRTUAL };

/* Create a clock on loop. For a virtual clock, start is the initial
 * wall time; for a real one it is ignored. Returns NULL and fills err on
 * failure. Free with mb_clock_close, which closes its handles and frees
 * memory when they are closed (run the loop once after). */
mb_clock *mb_clock_new(uv_loop_t *loop, int kind, mb_time start, mb_err *err);
void mb_clock_close(mb_clock *clock);

int mb_clock_kind(const mb_clock *clock);
/* The loop the clock's timers run on: stdlib waits (processes, sockets,
 * file requests) put their handles there too. */
uv_loop_t *mb_clock_loop(const mb_clock *clock);

/* Wall time (UTC instant) and monotonic time, in microseconds. */
mb_time mb_clock_now(const mb_clock *clock);
mb_time mb_clock_mono(const mb_clock *clock);

/* Called when the wall clock jumps against the monotonic clock. */
void mb_clock_on_jump(mb_clock *clock, mb_clock_jump_cb cb, void *data);

/* Timers: init once, start/stop any number of times. A started timer
 * fires once after delay microseconds (0: on the next loop turn or the
 * next advance). Starting an active timer restarts it. */
void mb_timer_init(mb_timer *timer, mb_timer_cb cb, void *data);
void mb_timer_start(mb_clock *clock, mb_timer *timer, mb_time delay);
void mb_timer_stop(mb_clock *clock, mb_timer *timer);
bool mb_timer_active(const mb_timer *timer);
/* True while the clock is firing timers: inside a timer callback. */
bool mb_clock_busy(const mb_clock *clock);

/* Number of started timers: a leak check for tests. */
size_t mb_clock_active_timers(const mb_clock *clock);
/* How many times the clock has woken to fire timers: an idle process
 * wakes once per fire and never between. */
uint64_t mb_clock_wakeups(const mb_clock *clock);

/* Virtual clock only: move both clocks forward by delta, firing every
 * timer that falls due on the way, in order, each at its own instant,
 * and running ready loop callbacks between them. Returns < 0 on a real
 * clock. */
int mb_clock_advance(mb_clock *clock, mb_time delta);
/* Virtual clock only: move both clocks forward by delta without firing
 * anything, as a loop blocked for that long would; the timers that fell
 * due fire, late, on the next advance. */
int mb_clock_stall(mb_clock *clock, mb_time delta);
/* Virtual clock only: move the wall clock by delta (may be negative)
 * without moving monotonic time, as an NTP step does. The jump is
 * noticed on the next advance, as a real one is on the next wake-up. */
int mb_clock_jump(mb_clock *clock, mb_time delta);

#endif
