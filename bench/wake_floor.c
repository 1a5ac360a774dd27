/* wake_floor.c: what B1's wake-ups alone cost this machine. It waits for
 * the same deadlines as B1 (n a second, spread evenly over it, for a
 * number of seconds) the way moonbeat's loop does, one timerfd armed for
 * the next deadline and an epoll wait for it, and does nothing else. Its
 * CPU time is the floor under B1's CPU figure for any scheduler that
 * wakes once per fire; its lateness is the machine's own.
 *
 *   wake_floor [n [seconds]]
 *
 * prints one JSON line with the fields of bench/mb_bench.lua's interval
 * workload: cpu_pct, late_p50_ms, late_p99_ms, late_max_ms, wakeups. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int64_t cpu_ns(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return ((int64_t)u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000000 +
         ((int64_t)u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1000;
}

static int by_value(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

static double at(const int64_t *sorted, size_t n, double p) {
  size_t i = (size_t)(p * (double)n + 0.999999);
  if (i < 1) i = 1;
  if (i > n) i = n;
  return (double)sorted[i - 1] / 1e6;
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 10000;
  long seconds = argc > 2 ? atol(argv[2]) : 20;
  if (n < 1 || seconds < 1) {
    fprintf(stderr, "usage: wake_floor [n [seconds]]\n");
    return 2;
  }
  size_t total = (size_t)n * (size_t)seconds;
  int64_t *late = malloc(total * sizeof *late);
  int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (!late || tfd < 0 || ep < 0) {
    perror("wake_floor");
    return 1;
  }
  struct epoll_event ev = {.events = EPOLLIN};
  epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);

  /* A whole second ahead, as B1 starts on a second's boundary. */
  int64_t start = (now_ns() / 1000000000 + 1) * 1000000000;
  int64_t step = 1000000000 / n;
  int64_t cpu0 = 0;
  size_t fired = 0;
  long wakeups = 0;
  while (fired < total) {
    int64_t due = start + (int64_t)fired * step;
    struct itimerspec its = {
        .it_value = {.tv_sec = due / 1000000000, .tv_nsec = due % 1000000000}};
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
    struct epoll_event got;
    if (epoll_wait(ep, &got, 1, -1) < 1) continue;
    wakeups++;
    int64_t t = now_ns();
    if (fired == 0) cpu0 = cpu_ns();
    /* Every deadline passed is a fire, as the scheduler would run it. */
    while (fired < total && start + (int64_t)fired * step <= t) {
      late[fired] = t - (start + (int64_t)fired * step);
      fired++;
    }
  }
  double cpu_pct =
      100.0 * (double)(cpu_ns() - cpu0) / ((double)seconds * 1e9);
  qsort(late, total, sizeof *late, by_value);
  printf("{\"impl\":\"floor\",\"workload\":\"interval\",\"n\":%ld,"
         "\"seconds\":%ld,\"cpu_pct\":%.3f,\"late_p50_ms\":%.4f,"
         "\"late_p99_ms\":%.4f,\"late_max_ms\":%.3f,\"wakeups\":%ld}\n",
         n, seconds, cpu_pct, at(late, total, 0.50), at(late, total, 0.99),
         (double)late[total - 1] / 1e6, wakeups);
  free(late);
  close(tfd);
  close(ep);
  return 0;
}
