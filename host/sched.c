/* sched.c: jobs by id, next fires in a heap, one timer for the
 * earliest. */
#include "sched.h"

#include <stdlib.h>
#include <string.h>

/* A long stall of a fast schedule coalesces this many overdue fires at
 * most one by one; past that, the schedule restarts from now. */
#define MAX_OVERDUE_STEPS 100000

typedef struct pending_run {
  mb_timer timer;
  mb_sched *sched;
  mb_job *job;
  struct pending_run *next, **prevp;
} pending_run;

struct mb_sched {
  mb_clock *clock;
  mb_sched_hooks hooks;
  void *data;
  mb_job **buckets;
  size_t nbuckets, njobs;
  mb_job **heap;
  size_t len, cap;
  uint64_t seq;
  mb_timer timer;
  pending_run *pending;
};

/* ---- hash table ---- */

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603u;  /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211u;
  return h;
}

static mb_job **bucket_of(const mb_sched *s, const char *id) {
  return &s->buckets[hash(id) & (s->nbuckets - 1)];
}

static void table_grow(mb_sched *s) {
  size_t n = s->nbuckets * 2;
  mb_job **b = mb_xcalloc(n, sizeof *b);
  for (size_t i = 0; i < s->nbuckets; i++) {
    for (mb_job *j = s->buckets[i], *next; j; j = next) {
      next = j->hnext;
      mb_job **slot = &b[hash(j->id) & (n - 1)];
      j->hnext = *slot;
      *slot = j;
    }
  }
  free(s->buckets);
  s->buckets = b;
  s->nbuckets = n;
}

static void table_insert(mb_sched *s, mb_job *j) {
  if (s->njobs + 1 > s->nbuckets) table_grow(s);
  mb_job **slot = bucket_of(s, j->id);
  j->hnext = *slot;
  *slot = j;
  s->njobs++;
}

static void table_remove(mb_sched *s, mb_job *j) {
  for (mb_job **p = bucket_of(s, j->id); *p; p = &(*p)->hnext) {
    if (*p == j) {
      *p = j->hnext;
      s->njobs--;
      return;
    }
  }
}

mb_job *mb_sched_get_job(const mb_sched *s, const char *id) {
  for (mb_job *j = *bucket_of(s, id); j; j = j->hnext)
    if (strcmp(j->id, id) == 0) return j;
  return NULL;
}

size_t mb_sched_job_count(const mb_sched *s) { return s->njobs; }

/* ---- heap of next fires ---- */

static bool sooner(const mb_job *a, const mb_job *b) {
  return a->next_fire < b->next_fire ||
         (a->next_fire == b->next_fire && a->seq < b->seq);
}

static void put(mb_sched *s, size_t i, mb_job *j) {
  s->heap[i] = j;
  j->slot = i;
}

static void up(mb_sched *s, size_t i) {
  mb_job *j = s->heap[i];
  while (i > 0 && sooner(j, s->heap[(i - 1) / 2])) {
    put(s, i, s->heap[(i - 1) / 2]);
    i = (i - 1) / 2;
  }
  put(s, i, j);
}

static void down(mb_sched *s, size_t i) {
  mb_job *j = s->heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= s->len) break;
    if (c + 1 < s->len && sooner(s->heap[c + 1], s->heap[c])) c++;
    if (!sooner(s->heap[c], j)) break;
    put(s, i, s->heap[c]);
    i = c;
  }
  put(s, i, j);
}

static void unqueue(mb_sched *s, mb_job *j) {
  if (j->slot == SIZE_MAX) return;
  size_t i = j->slot;
  mb_job *last = s->heap[--s->len];
  j->slot = SIZE_MAX;
  if (i == s->len) return;
  put(s, i, last);
  if (i > 0 && sooner(last, s->heap[(i - 1) / 2]))
    up(s, i);
  else
    down(s, i);
}

/* Put j in the heap at j->next_fire, or keep it out when it has none. */
static void queue(mb_sched *s, mb_job *j) {
  unqueue(s, j);
  if (j->next_fire == MB_TIME_NONE || j->paused || j->removed) return;
  if (s->len == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 64;
    s->heap = mb_xrealloc(s->heap, s->cap * sizeof *s->heap);
  }
  j->seq = s->seq++;
  put(s, s->len++, j);
  up(s, s->len - 1);
}

/* One timer for the earliest fire. */
static void rearm(mb_sched *s) {
  if (s->len == 0) {
    mb_timer_stop(s->clock, &s->timer);
    return;
  }
  mb_time delay = s->heap[0]->next_fire - mb_clock_now(s->clock);
  mb_timer_start(s->clock, &s->timer, delay > 0 ? delay : 0);
}

/* ---- firing ---- */

static void drop(mb_sched *s, mb_job *j);

static void fire_due(mb_timer *timer) {
  mb_sched *s = timer->data;
  mb_time now = mb_clock_now(s->clock);
  while (s->len && s->heap[0]->next_fire <= now) {
    mb_job *j = s->heap[0];
    mb_time scheduled = j->next_fire;
    mb_time next = mb_trigger_next(j->trigger, scheduled, now);
    /* Coalesce: of several overdue fires, the latest one runs. */
    for (int steps = 0; next != MB_TIME_NONE && next <= now; steps++) {
      if (steps == MAX_OVERDUE_STEPS) {
        next = mb_trigger_next(j->trigger, MB_TIME_NONE, now + 1);
        break;
      }
      scheduled = next;
      next = mb_trigger_next(j->trigger, scheduled, now);
    }
    j->last_fire = scheduled;
    j->next_fire = next;
    queue(s, j);
    mb_job_ref(j);
    s->hooks.fire(s, j, scheduled, s->data);
    if (!j->removed && !j->paused && j->next_fire == MB_TIME_NONE)
      drop(s, j);
    mb_job_unref(j);
  }
  rearm(s);
}

static void on_jump(mb_clock *clock, mb_time delta, void *data) {
  (void)clock;
  (void)delta;
  mb_sched *s = data;
  mb_time now = mb_clock_now(s->clock);
  /* Fires made overdue by a forward jump stay due (they run once, as
   * after a stall); every later fire is recomputed from the new now. */
  size_t n = s->len;
  mb_job **jobs = mb_xmalloc(n * sizeof *jobs);
  memcpy(jobs, s->heap, n * sizeof *jobs);
  for (size_t i = 0; i < n; i++) {
    mb_job *j = jobs[i];
    if (j->next_fire <= now) continue;
    j->next_fire = mb_trigger_next(j->trigger, MB_TIME_NONE, now);
    queue(s, j);
  }
  free(jobs);
  rearm(s);
}

static void on_pending_run(mb_timer *timer) {
  pending_run *p = timer->data;
  mb_sched *s = p->sched;
  *p->prevp = p->next;
  if (p->next) p->next->prevp = p->prevp;
  if (!p->job->removed)
    s->hooks.fire(s, p->job, mb_clock_now(s->clock), s->data);
  mb_job_unref(p->job);
  free(p);
}

/* ---- public ---- */

mb_sched *mb_sched_new(mb_clock *clock, const mb_sched_hooks *hooks,
                       void *data) {
  mb_sched *s = mb_xcalloc(1, sizeof *s);
  s->clock = clock;
  s->hooks = *hooks;
  s->data = data;
  s->nbuckets = 64;
  s->buckets = mb_xcalloc(s->nbuckets, sizeof *s->buckets);
  mb_timer_init(&s->timer, fire_due, s);
  mb_clock_on_jump(clock, on_jump, s);
  return s;
}

void mb_sched_free(mb_sched *s) {
  if (!s) return;
  mb_sched_remove_all_jobs(s);
  mb_timer_stop(s->clock, &s->timer);
  mb_clock_on_jump(s->clock, NULL, NULL);
  free(s->buckets);
  free(s->heap);
  free(s);
}

mb_clock *mb_sched_clock(const mb_sched *s) { return s->clock; }
mb_time mb_sched_now(const mb_sched *s) { return mb_clock_now(s->clock); }

void mb_job_ref(mb_job *j) { j->refs++; }

void mb_job_unref(mb_job *j) {
  if (--j->refs > 0) return;
  mb_trigger_free(j->trigger);
  free(j->id);
  free(j->name);
  free(j->file);
  free(j);
}

/* Take j out of the scheduler; its memory lives while referenced. */
static void drop(mb_sched *s, mb_job *j) {
  for (pending_run *p = s->pending, *next; p; p = next) {
    next = p->next;
    if (p->job != j) continue;
    mb_timer_stop(s->clock, &p->timer);
    *p->prevp = p->next;
    if (p->next) p->next->prevp = p->prevp;
    mb_job_unref(p->job);
    free(p);
  }
  unqueue(s, j);
  table_remove(s, j);
  j->removed = true;
  j->next_fire = MB_TIME_NONE;
  s->hooks.removed(s, j, s->data);
  mb_job_unref(j);
  rearm(s);
}

int mb_sched_add_job(mb_sched *s, const char *id, const char *name,
                     const char *file, mb_trigger *trigger, bool replace,
                     mb_job **out, mb_err *err) {
  mb_job *old = mb_sched_get_job(s, id);
  if (old && !replace) {
    mb_trigger_free(trigger);
    if (old->file)
      return mb_err_set(err, MB_EEXIST, "job id '%s' already exists "
                        "(declared in %s); pass replace_existing = true "
                        "to replace it", id, old->file);
    return mb_err_set(err, MB_EEXIST, "job id '%s' already exists; pass "
                      "replace_existing = true to replace it", id);
  }
  if (old) drop(s, old);
  mb_job *j = mb_xcalloc(1, sizeof *j);
  j->id = mb_xstrdup(id);
  j->name = mb_xstrdup(name ? name : id);
  j->file = file ? mb_xstrdup(file) : NULL;
  j->trigger = trigger;
  j->last_fire = MB_TIME_NONE;
  j->lua_ref = -2; /* LUA_NOREF, without including Lua here */
  j->refs = 1;
  j->slot = SIZE_MAX;
  j->sched = s;
  j->next_fire = mb_trigger_next(trigger, MB_TIME_NONE, mb_sched_now(s));
  table_insert(s, j);
  queue(s, j);
  rearm(s);
  if (out) *out = j;
  return 0;
}

static int by_next_fire(const void *a, const void *b) {
  const mb_job *x = *(mb_job *const *)a, *y = *(mb_job *const *)b;
  bool xn = x->next_fire == MB_TIME_NONE, yn = y->next_fire == MB_TIME_NONE;
  if (xn != yn) return xn ? 1 : -1;
  if (x->next_fire != y->next_fire) return x->next_fire < y->next_fire ? -1 : 1;
  return strcmp(x->id, y->id);
}

mb_job **mb_sched_jobs(const mb_sched *s, size_t *n) {
  mb_job **all = mb_xmalloc((s->njobs ? s->njobs : 1) * sizeof *all);
  size_t k = 0;
  for (size_t i = 0; i < s->nbuckets; i++)
    for (mb_job *j = s->buckets[i]; j; j = j->hnext) all[k++] = j;
  qsort(all, k, sizeof *all, by_next_fire);
  *n = k;
  return all;
}

int mb_sched_pause_job(mb_sched *s, mb_job *j) {
  if (j->removed) return MB_ENOTFOUND;
  j->paused = true;
  j->next_fire = MB_TIME_NONE;
  unqueue(s, j);
  rearm(s);
  return 0;
}

int mb_sched_resume_job(mb_sched *s, mb_job *j) {
  if (j->removed) return MB_ENOTFOUND;
  if (!j->paused) return 0;
  j->paused = false;
  j->next_fire = mb_trigger_next(j->trigger, MB_TIME_NONE, mb_sched_now(s));
  if (j->next_fire == MB_TIME_NONE) {
    drop(s, j);
    return 0;
  }
  queue(s, j);
  rearm(s);
  return 0;
}

int mb_sched_remove_job(mb_sched *s, mb_job *j) {
  if (j->removed) return MB_ENOTFOUND;
  drop(s, j);
  return 0;
}

void mb_sched_remove_all_jobs(mb_sched *s) {
  for (size_t i = 0; i < s->nbuckets; i++)
    while (s->buckets[i]) drop(s, s->buckets[i]);
}

int mb_sched_reschedule_job(mb_sched *s, mb_job *j, mb_trigger *trigger) {
  if (j->removed) {
    mb_trigger_free(trigger);
    return MB_ENOTFOUND;
  }
  mb_trigger_free(j->trigger);
  j->trigger = trigger;
  if (!j->paused) {
    j->next_fire = mb_trigger_next(trigger, MB_TIME_NONE, mb_sched_now(s));
    if (j->next_fire == MB_TIME_NONE) {
      drop(s, j);
      return 0;
    }
    queue(s, j);
    rearm(s);
  }
  return 0;
}

int mb_sched_set_next_fire(mb_sched *s, mb_job *j, mb_time next) {
  if (j->removed) return MB_ENOTFOUND;
  if (next == MB_TIME_NONE) return mb_sched_pause_job(s, j);
  j->paused = false;
  j->next_fire = next;
  queue(s, j);
  rearm(s);
  return 0;
}

int mb_sched_run_job(mb_sched *s, mb_job *j) {
  if (j->removed) return MB_ENOTFOUND;
  pending_run *p = mb_xmalloc(sizeof *p);
  mb_timer_init(&p->timer, on_pending_run, p);
  p->sched = s;
  p->job = j;
  mb_job_ref(j);
  p->next = s->pending;
  p->prevp = &s->pending;
  if (s->pending) s->pending->prevp = &p->next;
  s->pending = p;
  mb_timer_start(s->clock, &p->timer, 0);
  return 0;
}

void mb_sched_rename_job(mb_job *j, const char *name) {
  free(j->name);
  j->name = mb_xstrdup(name);
}
