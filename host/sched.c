/* sched.c: jobs by id, next fires in buckets by instant ordered by a
 * heap, one timer for the earliest; misfire, coalescing, jitter and
 * retries. */
#include "sched.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool.h"
#include "share.h"
#include "spec_text.h"

/* A long stall of a fast schedule is walked fire by fire at most this
 * far; past that, the schedule restarts from now. */
#define MAX_OVERDUE_STEPS 100000

typedef struct pending_fire {
  mb_timer timer;
  mb_sched *sched;
  mb_job *job;
  mb_fire fire;
  bool now;  /* fire at the instant the timer fires */
  struct pending_fire *next, **prevp;
} pending_fire;

/* Jobs due at one instant wait in a bucket, in the order their times
 * were set; the heap orders the buckets. Thousands of jobs due at once
 * (a burst, a schedule shared by many jobs) then leave and join buckets
 * in constant time, where a heap of jobs sifted one entry a level, and
 * wrote each moved job's slot, for every fire. */
typedef struct fire_bucket {
  mb_time at;
  mb_job *head, *tail;
  size_t slot;                /* in the heap */
  struct fire_bucket *hnext;  /* in the table by instant */
} fire_bucket;

/* The job table is open-addressed, each slot an id's hash beside its job:
 * a lookup passing over other ids reads the table alone. A miss among a
 * million jobs (every job a start restores is looked up first) then
 * costs one cache miss, where a chain of jobs cost one per job on it. */
typedef struct table_slot {
  uint64_t hash;
  mb_job *job;   /* NULL: empty */
} table_slot;

struct mb_sched {
  mb_clock *clock;
  mb_sched_hooks hooks;
  void *data;
  table_slot *slots;
  size_t nslots, njobs;
  fire_bucket **heap;         /* by instant, earliest first */
  size_t len, cap;
  fire_bucket **by_at;        /* buckets by instant, chained */
  size_t nby_at;              /* a power of two, or 0 */
  unsigned by_at_shift;       /* 64 - log2(nby_at) */
  size_t queued;              /* jobs in buckets */
  uint64_t rng;
  bool stopped;
  bool closing;  /* jobs leave with the scheduler: no removed events */
  mb_timer timer;
  mb_time timer_for;  /* the next fire the timer was started for */
  pending_fire *pending;
  /* Held while the scheduler is open: most jobs take it, and hashing it
   * again for each was a tenth of adding one. */
  const mb_job_policy *default_policy;
};

void mb_job_policy_default(mb_job_policy *p) {
  memset(p, 0, sizeof *p);
  p->max_instances = 1;
  p->overlap = MB_OVERLAP_SKIP;
  p->max_buffered = 100;
  p->misfire_grace = MB_TIME_NONE;
  p->coalesce = true;
  p->retry_attempts = 1;
  p->retry_backoff = MB_BACKOFF_EXPONENTIAL;
  p->retry_delay = MB_SEC;
}

/* ---- shared policies ----
 *
 * A job holds its policy by pointer into a table of the policies in use:
 * most jobs have the default one, and the jobs of one file or one stored
 * template one alike, so a million jobs hold a few policies instead of a
 * million copies of 88 bytes. Compared and hashed field by field, never
 * by bytes: padding is not part of a policy. Loop thread only. */

typedef struct shared_policy {
  mb_share_node share;  /* first: the table's node */
  size_t refs;
  mb_job_policy policy;
} shared_policy;

static mb_share_table policies;

static uint64_t mix_time(uint64_t h, mb_time t) {
  return mb_share_mix(h, (uint64_t)t);
}

static uint64_t policy_hash(const mb_job_policy *p) {
  /* Equal doubles, equal hashes: -0.0 == 0.0. */
  double jitter = p->retry_jitter == 0 ? 0 : p->retry_jitter;
  uint64_t jitter_bits;
  memcpy(&jitter_bits, &jitter, sizeof jitter_bits);
  uint64_t h = MB_SHARE_HASH_START;
  h = mix_time(h, p->timeout);
  h = mix_time(h, p->misfire_grace);
  h = mix_time(h, p->jitter);
  h = mix_time(h, p->retry_delay);
  h = mix_time(h, p->retry_max_delay);
  h = mb_share_mix(h, jitter_bits);
  h = mix_time(h, p->keep_for);
  h = mb_share_mix(h, p->max_instances);
  h = mb_share_mix(h, (uint64_t)p->overlap);
  h = mb_share_mix(h, p->max_buffered);
  h = mb_share_mix(h, (uint64_t)p->retry_attempts);
  h = mb_share_mix(h, (uint64_t)p->retry_backoff);
  h = mb_share_mix(h, (uint64_t)p->keep_runs);
  return mb_share_mix(h, p->coalesce);
}

static bool same_policy(const mb_share_node *node, const void *key) {
  const mb_job_policy *a = &((const shared_policy *)node)->policy, *b = key;
  return a->timeout == b->timeout && a->misfire_grace == b->misfire_grace &&
         a->jitter == b->jitter && a->retry_delay == b->retry_delay &&
         a->retry_max_delay == b->retry_max_delay &&
         a->retry_jitter == b->retry_jitter && a->keep_for == b->keep_for &&
         a->max_instances == b->max_instances && a->overlap == b->overlap &&
         a->max_buffered == b->max_buffered &&
         a->retry_attempts == b->retry_attempts &&
         a->retry_backoff == b->retry_backoff &&
         a->keep_runs == b->keep_runs && a->coalesce == b->coalesce;
}

static const mb_job_policy *hold_policy(const mb_job_policy *p) {
  uint64_t h = policy_hash(p);
  shared_policy *sp =
      (shared_policy *)mb_share_find(&policies, h, same_policy, p);
  if (!sp) {
    sp = mb_xcalloc(1, sizeof *sp);
    sp->policy = *p;
    mb_share_add(&policies, &sp->share, h);
  }
  sp->refs++;
  return &sp->policy;
}

static shared_policy *policy_share(const mb_job_policy *p) {
  return (shared_policy *)((const char *)p - offsetof(shared_policy, policy));
}

/* One more holder of a policy already held. */
static const mb_job_policy *hold_again(const mb_job_policy *p) {
  policy_share(p)->refs++;
  return p;
}

static void release_policy(const mb_job_policy *p) {
  if (!p) return;
  shared_policy *sp = policy_share(p);
  if (--sp->refs > 0) return;
  mb_share_remove(&policies, &sp->share);
  free(sp);
}

size_t mb_sched_policies_held(void) { return policies.count; }

/* ---- randomness (xorshift64*: jitter needs speed, not secrecy) ---- */

void mb_sched_seed(mb_sched *s, uint64_t seed) {
  s->rng = seed ? seed : 0x9E3779B97F4A7C15u;
}

double mb_sched_random(mb_sched *s) {
  s->rng ^= s->rng >> 12;
  s->rng ^= s->rng << 25;
  s->rng ^= s->rng >> 27;
  return (double)((s->rng * 2685821657736338717u) >> 11) / 9007199254740992.0;
}

static mb_time jittered(mb_sched *s, const mb_job *j, mb_time base) {
  if (base == MB_TIME_NONE || j->policy->jitter <= 0) return base;
  return base + (mb_time)(mb_sched_random(s) * (double)(j->policy->jitter + 1));
}

/* ---- hash table ---- */

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603u;  /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211u;
  return h;
}

/* Linear probing, at most half full; a removal shifts the entries after
 * it back instead of leaving a tombstone. */
static void table_place(table_slot *slots, size_t n, uint64_t h, mb_job *j) {
  size_t i = h & (n - 1);
  while (slots[i].job) i = (i + 1) & (n - 1);
  slots[i] = (table_slot){h, j};
}

/* The indexes below double when full and halve when a quarter full
 * (the job table: an eighth, as it is kept half full), down to MIN_INDEX
 * entries: a long-lived scheduler gives back what a burst of jobs or
 * instants took once they are gone, and a size going up and down past a
 * power of two does not resize each time. */
enum { MIN_INDEX = 64 };

static void table_resize(mb_sched *s, size_t n) {
  table_slot *slots = mb_table_alloc(n, sizeof *slots);
  for (size_t i = 0; i < s->nslots; i++)
    if (s->slots[i].job)
      table_place(slots, n, s->slots[i].hash, s->slots[i].job);
  mb_table_free(s->slots, s->nslots, sizeof *s->slots);
  s->slots = slots;
  s->nslots = n;
}

static void table_insert(mb_sched *s, mb_job *j, uint64_t h) {
  if (2 * (s->njobs + 1) > s->nslots) table_resize(s, 2 * s->nslots);
  table_place(s->slots, s->nslots, h, j);
  s->njobs++;
}

static void table_remove(mb_sched *s, mb_job *j) {
  size_t mask = s->nslots - 1;
  size_t hole = hash(j->id) & mask;
  for (; s->slots[hole].job != j; hole = (hole + 1) & mask)
    if (!s->slots[hole].job) return;
  /* An entry after the hole moves into it unless its home lies between
   * the hole and itself: a lookup from its home would stop at the hole. */
  for (size_t k = (hole + 1) & mask; s->slots[k].job; k = (k + 1) & mask) {
    size_t home = s->slots[k].hash & mask;
    if (((k - home) & mask) >= ((k - hole) & mask)) {
      s->slots[hole] = s->slots[k];
      hole = k;
    }
  }
  s->slots[hole].job = NULL;
  s->njobs--;
  if (s->nslots > MIN_INDEX && s->njobs < s->nslots / 8)
    table_resize(s, s->nslots / 2);
}

static mb_job *find(const mb_sched *s, const char *id, uint64_t h) {
  size_t mask = s->nslots - 1;
  for (size_t i = h & mask; s->slots[i].job; i = (i + 1) & mask)
    if (s->slots[i].hash == h && strcmp(s->slots[i].job->id, id) == 0)
      return s->slots[i].job;
  return NULL;
}

mb_job *mb_sched_get_job(const mb_sched *s, const char *id) {
  return find(s, id, hash(id));
}

void mb_sched_prefetch(const mb_sched *s, const char *id) {
  __builtin_prefetch(&s->slots[hash(id) & (s->nslots - 1)], 1);
}

size_t mb_sched_job_count(const mb_sched *s) { return s->njobs; }

size_t mb_sched_index_bytes(const mb_sched *s) {
  return s->nslots * sizeof *s->slots + s->cap * sizeof *s->heap +
         s->nby_at * sizeof *s->by_at;
}

/* ---- next fires: buckets by instant, in a heap ---- */

static mb_pool *bucket_pool;

static void put(mb_sched *s, size_t i, fire_bucket *b) {
  s->heap[i] = b;
  b->slot = i;
}

static void up(mb_sched *s, size_t i) {
  fire_bucket *b = s->heap[i];
  while (i > 0 && b->at < s->heap[(i - 1) / 2]->at) {
    put(s, i, s->heap[(i - 1) / 2]);
    i = (i - 1) / 2;
  }
  put(s, i, b);
}

/* Floyd's way: the hole at i goes down to a leaf along the sooner
 * children, then the bucket rises from there. A bucket that moves down
 * at all (a fired job's next instant, the last bucket moved to the top)
 * mostly belongs near the leaves: one comparison a level, not two. */
static void down(mb_sched *s, size_t i) {
  fire_bucket *b = s->heap[i];
  size_t hole = i;
  for (;;) {
    size_t c = 2 * hole + 1;
    if (c >= s->len) break;
    if (c + 1 < s->len && s->heap[c + 1]->at < s->heap[c]->at) c++;
    put(s, hole, s->heap[c]);
    hole = c;
  }
  while (hole > i && b->at < s->heap[(hole - 1) / 2]->at) {
    put(s, hole, s->heap[(hole - 1) / 2]);
    hole = (hole - 1) / 2;
  }
  put(s, hole, b);
}

/* The bucket at i, its instant changed, to its place. */
static void settle(mb_sched *s, size_t i) {
  if (i > 0 && s->heap[i]->at < s->heap[(i - 1) / 2]->at)
    up(s, i);
  else
    down(s, i);
}

/* Fibonacci hashing: the product's top bits, which every bit of the
 * instant moves (instants a power of two apart included). */
static fire_bucket **by_at_chain(const mb_sched *s, mb_time at) {
  uint64_t h = (uint64_t)at * 0x9e3779b97f4a7c15ULL;
  return &s->by_at[h >> s->by_at_shift];
}

static fire_bucket *bucket_at(const mb_sched *s, mb_time at) {
  if (!s->nby_at) return NULL;
  fire_bucket *b = *by_at_chain(s, at);
  while (b && b->at != at) b = b->hnext;
  return b;
}

static void heap_resize(mb_sched *s, size_t cap) {
  s->heap = mb_xrealloc(s->heap, cap * sizeof *s->heap);
  s->cap = cap;
}

static void by_at_resize(mb_sched *s, size_t n) {
  fire_bucket **old = s->by_at;
  size_t old_n = s->nby_at;
  s->by_at = mb_xcalloc(n, sizeof *s->by_at);
  s->nby_at = n;
  s->by_at_shift = 64;
  for (size_t k = n; k > 1; k >>= 1) s->by_at_shift--;
  for (size_t i = 0; i < old_n; i++) {
    for (fire_bucket *c = old[i], *next; c; c = next) {
      next = c->hnext;
      fire_bucket **chain = by_at_chain(s, c->at);
      c->hnext = *chain;
      *chain = c;
    }
  }
  free(old);
}

static void by_at_add(mb_sched *s, fire_bucket *b) {
  /* As many chains as buckets at least: short chains. */
  if (s->len > s->nby_at)
    by_at_resize(s, s->nby_at ? 2 * s->nby_at : MIN_INDEX);
  fire_bucket **chain = by_at_chain(s, b->at);
  b->hnext = *chain;
  *chain = b;
}

static void by_at_remove(mb_sched *s, fire_bucket *b) {
  fire_bucket **p = by_at_chain(s, b->at);
  while (*p != b) p = &(*p)->hnext;
  *p = b->hnext;
}

/* An empty bucket leaves the heap and the table. */
static void drop_bucket(mb_sched *s, fire_bucket *b) {
  by_at_remove(s, b);
  size_t i = b->slot;
  fire_bucket *last = s->heap[--s->len];
  if (i != s->len) {
    put(s, i, last);
    settle(s, i);
  }
  mb_pool_free(bucket_pool, b);
  if (s->cap > MIN_INDEX && s->len < s->cap / 4) heap_resize(s, s->cap / 2);
  if (s->nby_at > MIN_INDEX && s->len < s->nby_at / 4)
    by_at_resize(s, s->nby_at / 2);
}

static fire_bucket *new_bucket(mb_sched *s, mb_time at) {
  if (!bucket_pool) bucket_pool = mb_pool_new(sizeof(fire_bucket));
  fire_bucket *b = mb_pool_alloc(bucket_pool);
  b->at = at;
  if (s->len == s->cap) heap_resize(s, s->cap ? 2 * s->cap : MIN_INDEX);
  put(s, s->len++, b);
  by_at_add(s, b);
  up(s, s->len - 1);
  return b;
}

static void append(fire_bucket *b, mb_job *j) {
  j->bucket = b;
  j->qnext = NULL;
  j->qprev = b->tail;
  if (b->tail)
    b->tail->qnext = j;
  else
    b->head = j;
  b->tail = j;
}

/* Take j out of its bucket; an emptied bucket is dropped unless keep. */
static void unlink_job(mb_sched *s, mb_job *j, bool keep) {
  fire_bucket *b = j->bucket;
  if (j->qprev) j->qprev->qnext = j->qnext; else b->head = j->qnext;
  if (j->qnext) j->qnext->qprev = j->qprev; else b->tail = j->qprev;
  j->bucket = NULL;
  j->qprev = j->qnext = NULL;
  s->queued--;
  if (!b->head && !keep) drop_bucket(s, b);
}

static void unqueue(mb_sched *s, mb_job *j) {
  if (j->bucket) unlink_job(s, j, false);
}

/* Put j in the bucket of j->next_fire, or keep it out when it has none.
 * It goes behind the jobs already there: fires due at the same instant
 * come in the order their times were set. A job alone in its bucket,
 * moving to an instant no other holds, takes its bucket along: a fired
 * job's bucket goes down from the top once, not out and back in. */
static void queue(mb_sched *s, mb_job *j) {
  if (j->next_fire == MB_TIME_NONE || j->paused || j->removed) {
    unqueue(s, j);
    return;
  }
  mb_time at = j->next_fire;
  fire_bucket *b = bucket_at(s, at);
  if (!b && j->bucket && j->bucket->head == j && j->bucket->tail == j) {
    b = j->bucket;
    by_at_remove(s, b);
    b->at = at;
    by_at_add(s, b);
    settle(s, b->slot);
    return;
  }
  /* Its own bucket, emptied, is kept while it is the one to join. */
  if (j->bucket) unlink_job(s, j, b == j->bucket);
  if (!b) b = new_bucket(s, at);
  append(b, j);
  s->queued++;
}

/* One timer for the earliest fire. An earliest fire that did not change
 * keeps its timer: adding a million jobs behind a due one would
 * otherwise restart it, and set the kernel's timer, a million times. */
static void rearm(mb_sched *s) {
  if (s->len == 0 || s->stopped) {
    mb_timer_stop(s->clock, &s->timer);
    return;
  }
  if (mb_timer_active(&s->timer) && s->heap[0]->at == s->timer_for) return;
  s->timer_for = s->heap[0]->at;
  mb_time delay = s->heap[0]->at - mb_clock_now(s->clock);
  mb_timer_start(s->clock, &s->timer, delay > 0 ? delay : 0);
}

/* Set j's next fire to the trigger's first at or after now. A date
 * trigger that has fired has nothing left, whatever now is. */
static void schedule_from(mb_sched *s, mb_job *j, mb_time now) {
  bool once = mb_trigger_kind(j->trigger) == MB_TRIGGER_DATE;
  mb_time prev = once ? j->last_fire : MB_TIME_NONE;
  j->next_base = mb_trigger_next(j->trigger, prev, now);
  j->next_fire = jittered(s, j, j->next_base);
}

/* ---- events ---- */

void mb_sched_emit(mb_sched *s, const mb_event *ev) {
  s->hooks.event(s, ev, s->data);
}

/* Held while the event goes out: the event names it by its id and
 * points at it, and a listener (or the log sink) may remove it, which a
 * handle sweep may follow by freeing it. */
static void emit_job(mb_sched *s, int kind, mb_job *j) {
  mb_job_ref(j);
  mb_event ev = mb_event_make(kind, j->id);
  ev.job = j;  /* the store's record of it, without a lookup by id */
  ev.next_time = j->next_fire;
  if (kind == MB_EV_ADDED) ev.trigger = j->trigger;
  mb_sched_emit(s, &ev);
  mb_job_unref(j);
}

/* ---- firing ---- */

static void drop(mb_sched *s, mb_job *j, const char *reason);

/* A job whose trigger has no fire left goes once nothing of it is
 * pending: no run in flight (it may fail and retry), no retry. */
static void drop_if_done(mb_sched *s, mb_job *j) {
  /* After a shutdown nothing changes: the job is as it was stopped. */
  if (!s->stopped && !j->removed && !j->paused && j->next_fire == MB_TIME_NONE &&
      j->retry_due == MB_TIME_NONE && j->running == 0 && j->nbuffered == 0 &&
      j->pending_fires == 0) {
    j->done = true;
    drop(s, j, "done");
  }
}

static void fire_or_miss(mb_sched *s, mb_job *j, mb_time scheduled,
                         mb_time now, int coalesced) {
  mb_time grace = j->policy->misfire_grace;
  if (grace != MB_TIME_NONE && now - scheduled > grace) {
    char reason[160], late[32], limit[32];
    snprintf(reason, sizeof reason,
             "%s late, more than misfire_grace_time %s%s",
             mb_duration_format(now - scheduled, late, sizeof late),
             mb_duration_format(grace, limit, sizeof limit),
             coalesced > 1 ? " (coalesced fires)" : "");
    mb_event ev = mb_event_make(MB_EV_MISSED, j->id);
    ev.scheduled_time = scheduled;
    ev.reason = reason;
    mb_sched_emit(s, &ev);
    return;
  }
  mb_fire fire = {scheduled, 1, false};
  s->hooks.fire(s, j, &fire, s->data);
}

static void fire_job(mb_sched *s, mb_job *j, mb_time now) {
  mb_time first = j->next_fire, base = j->next_base;
  mb_time *overdue = NULL;
  size_t n = 0, cap = 0;
  int steps = 0;
  mb_time next = mb_trigger_next(j->trigger, base, now);
  mb_time latest = first;
  for (; next != MB_TIME_NONE && next <= now; steps++) {
    if (steps == MAX_OVERDUE_STEPS) {
      next = mb_trigger_next(j->trigger, MB_TIME_NONE, now + 1);
      break;
    }
    if (!j->policy->coalesce) {
      if (n == cap) {
        cap = cap ? 2 * cap : 16;
        overdue = mb_xrealloc(overdue, cap * sizeof *overdue);
      }
      overdue[n++] = next;
    }
    latest = next;
    next = mb_trigger_next(j->trigger, next, now);
  }
  j->next_base = next;
  j->next_fire = jittered(s, j, next);
  j->last_fire = latest;
  queue(s, j);
  mb_job_ref(j);
  if (j->policy->coalesce) {
    fire_or_miss(s, j, latest, now, steps + 1);
  } else {
    fire_or_miss(s, j, first, now, 1);
    for (size_t i = 0; i < n && !j->removed && !j->paused && !s->stopped; i++)
      fire_or_miss(s, j, overdue[i], now, 1);
  }
  free(overdue);
  drop_if_done(s, j);
  mb_job_unref(j);
}

static void fire_due(mb_timer *timer) {
  mb_sched *s = timer->data;
  mb_time now = mb_clock_now(s->clock);
  while (!s->stopped && s->len && s->heap[0]->at <= now)
    fire_job(s, s->heap[0]->head, now);
  rearm(s);
}

static void on_jump(mb_clock *clock, mb_time delta, void *data) {
  (void)clock;
  (void)delta;
  mb_sched *s = data;
  mb_time now = mb_clock_now(s->clock);
  /* Fires made overdue by a forward jump stay due (they run as after a
   * stall); every later fire is recomputed from the new now. */
  size_t n = 0;
  mb_job **jobs = mb_xmalloc((s->queued ? s->queued : 1) * sizeof *jobs);
  for (size_t i = 0; i < s->len; i++)
    for (mb_job *j = s->heap[i]->head; j; j = j->qnext) jobs[n++] = j;
  for (size_t i = 0; i < n; i++) {
    if (jobs[i]->next_fire <= now) continue;
    schedule_from(s, jobs[i], now);
    queue(s, jobs[i]);
  }
  free(jobs);
  /* The same next fire is now another delay away. */
  mb_timer_stop(s->clock, &s->timer);
  rearm(s);
}

static void unlink_pending(pending_fire *p) {
  p->job->pending_fires--;
  *p->prevp = p->next;
  if (p->next) p->next->prevp = p->prevp;
}

static void on_pending_fire(mb_timer *timer) {
  pending_fire *p = timer->data;
  mb_sched *s = p->sched;
  unlink_pending(p);
  if (p->now) p->fire.scheduled = mb_clock_now(s->clock);
  mb_fire p_fire_copy = p->fire;
  mb_job *j = p->job;
  free(p);
  if (!j->removed) {
    s->hooks.fire(s, j, &p_fire_copy, s->data);
    drop_if_done(s, j);
  }
  mb_job_unref(j);
}

/* Stop job's retry timer, if it ever had one. */
static void stop_retry_timer(mb_sched *s, mb_job *j) {
  if (j->retry_timer) mb_timer_stop(s->clock, j->retry_timer);
}

static void on_retry_due(mb_timer *timer) {
  mb_job *j = timer->data;
  mb_sched *s = j->sched;
  mb_fire fire = j->retry_fire;
  j->retry_due = MB_TIME_NONE;
  mb_job_ref(j);
  s->hooks.fire(s, j, &fire, s->data);
  drop_if_done(s, j);
  mb_job_unref(j);
}

/* ---- public ---- */

mb_sched *mb_sched_new(mb_clock *clock, const mb_sched_hooks *hooks,
                       void *data) {
  mb_sched *s = mb_xcalloc(1, sizeof *s);
  s->clock = clock;
  s->hooks = *hooks;
  s->data = data;
  s->nslots = MIN_INDEX;
  s->slots = mb_table_alloc(s->nslots, sizeof *s->slots);
  mb_job_policy defaults;
  mb_job_policy_default(&defaults);
  s->default_policy = hold_policy(&defaults);
  mb_sched_seed(s, (uint64_t)mb_clock_mono(clock) ^ (uint64_t)(uintptr_t)s);
  mb_timer_init(&s->timer, fire_due, s);
  mb_clock_on_jump(clock, on_jump, s);
  return s;
}

static void cancel_pending(mb_sched *s, mb_job *only) {
  for (pending_fire *p = s->pending, *next; p; p = next) {
    next = p->next;
    if (only && p->job != only) continue;
    mb_timer_stop(s->clock, &p->timer);
    unlink_pending(p);
    mb_job_unref(p->job);
    free(p);
  }
}

void mb_sched_free(mb_sched *s) {
  if (!s) return;
  s->closing = true;
  /* Closing, no event goes out: nothing adds jobs meanwhile. */
  while (s->njobs) mb_sched_remove_all_jobs(s);
  cancel_pending(s, NULL);
  mb_timer_stop(s->clock, &s->timer);
  mb_clock_on_jump(s->clock, NULL, NULL);
  release_policy(s->default_policy);
  mb_table_free(s->slots, s->nslots, sizeof *s->slots);
  free(s->heap);
  free(s->by_at);
  free(s);
}

mb_clock *mb_sched_clock(const mb_sched *s) { return s->clock; }
mb_time mb_sched_now(const mb_sched *s) { return mb_clock_now(s->clock); }

/* Jobs come from a pool of huge-page chunks (pool.h), shared by every
 * scheduler: a job may outlive its own. The id never changes, and one
 * short enough lives in the job's slot, after it. */
enum { INLINE_ID = 32 };
static mb_pool *job_pool;

static char *inline_id(mb_job *j) { return (char *)(j + 1); }

static mb_job *new_job(const char *id) {
  if (!job_pool) job_pool = mb_pool_new(sizeof(mb_job) + INLINE_ID);
  mb_job *j = mb_pool_alloc(job_pool);
  size_t id_size = strlen(id) + 1;
  j->id = id_size <= INLINE_ID ? memcpy(inline_id(j), id, id_size)
                               : mb_xstrdup(id);
  return j;
}

void mb_sched_job_memory(size_t *live, size_t *chunks, size_t *ahead) {
  *live = job_pool ? mb_pool_live(job_pool) : 0;
  *chunks = job_pool ? mb_pool_chunks(job_pool) : 0;
  *ahead = job_pool ? mb_pool_ahead(job_pool) : 0;
}

void mb_job_ref(mb_job *j) { j->refs++; }

void mb_job_unref(mb_job *j) {
  if (--j->refs > 0) return;
  mb_trigger_free(j->trigger);
  release_policy(j->policy);
  free(j->retry_timer);
  free(j->buffer);
  free(j->rec.last_error);
  free(j->rec.pause_note);
  free(j->rec.state);
  free(j->rec.spec);
  mb_spec_shared_release(j->rec.spec_shared);
  if (j->name != j->id) free(j->name);
  if (j->id != inline_id(j)) free(j->id);
  free(j->file);
  mb_pool_free(job_pool, j);
}

/* Take j out of the scheduler; its memory lives while referenced. */
/* reason: "done" when its trigger has no fire left, "replaced", or NULL
 * when it was removed. */
static void drop(mb_sched *s, mb_job *j, const char *reason) {
  cancel_pending(s, j);
  stop_retry_timer(s, j);
  j->retry_due = MB_TIME_NONE;
  j->nbuffered = 0;
  unqueue(s, j);
  table_remove(s, j);
  j->removed = true;
  j->next_fire = j->next_base = MB_TIME_NONE;
  if (!s->closing) {
    mb_event ev = mb_event_make(MB_EV_REMOVED, j->id);
    ev.reason = reason;
    mb_sched_emit(s, &ev);
  }
  s->hooks.removed(s, j, s->data);
  mb_job_unref(j);
  rearm(s);
}

int mb_sched_add_job(mb_sched *s, const char *id, const char *name,
                     const char *file, mb_trigger *trigger,
                     const mb_job_policy *policy, bool replace, bool paused,
                     const mb_job_lua *lua, mb_job **out, mb_err *err) {
  uint64_t h = hash(id);
  mb_job *old = find(s, id, h);
  if (old && !replace) {
    mb_trigger_free(trigger);
    if (old->file)
      return mb_err_set(err, MB_EEXIST, "job id '%s' already exists "
                        "(declared in %s); pass replace_existing = true "
                        "to replace it", id, old->file);
    return mb_err_set(err, MB_EEXIST, "job id '%s' already exists; pass "
                      "replace_existing = true to replace it", id);
  }
  if (old) {
    drop(s, old, "replaced");
    /* The removal's listeners (or finalizers) may have added the id: the
     * job they added stays, and this add fails as if it had come first. */
    if (find(s, id, h)) {
      mb_trigger_free(trigger);
      return mb_err_set(err, MB_EEXIST, "job id '%s' was added again while "
                        "the job it replaces was removed", id);
    }
  }
  mb_job *j = new_job(id);
  j->name = name && strcmp(name, id) != 0 ? mb_xstrdup(name) : j->id;
  j->file = file ? mb_xstrdup(file) : NULL;
  j->trigger = trigger;
  j->policy = policy ? hold_policy(policy) : hold_again(s->default_policy);
  j->last_fire = j->retry_due = MB_TIME_NONE;
  j->rec.last_start = MB_TIME_NONE;
  j->rec.last_duration = MB_TIME_NONE;
  j->lua_ref = lua->ref;
  j->lua_lean = lua->lean;
  j->lua_shared = lua->shared;
  j->refs = 1;
  j->sched = s;
  j->paused = paused;
  if (paused)
    j->next_fire = j->next_base = MB_TIME_NONE;
  else
    schedule_from(s, j, mb_sched_now(s));
  /* Joining jobs at its instant writes the last of them, mostly long
   * out of cache: fetched while the job goes into the table. */
  fire_bucket *joined = j->next_fire != MB_TIME_NONE && !paused
                            ? bucket_at(s, j->next_fire)
                            : NULL;
  if (joined) __builtin_prefetch(&joined->tail->qnext, 1);
  table_insert(s, j, h);
  queue(s, j);
  rearm(s);
  mb_job_ref(j);
  emit_job(s, MB_EV_ADDED, j);
  if (out)
    *out = j;
  else
    mb_job_unref(j);
  return 0;
}

/* A listing's order, by keys held side by side: next fire (none last),
 * then the id, its first eight bytes packed so that comparing them as a
 * number compares them as strcmp does. Sorting a million jobs read each
 * job's fire and id at every comparison, and most ids share a fire. */
typedef struct listed {
  uint64_t at;      /* next fire, offset so that none sorts last */
  uint64_t prefix;  /* the id's first eight bytes, big-endian */
  mb_job *job;
} listed;

static int by_listing(const void *a, const void *b) {
  const listed *x = a, *y = b;
  if (x->at != y->at) return x->at < y->at ? -1 : 1;
  if (x->prefix != y->prefix) return x->prefix < y->prefix ? -1 : 1;
  return strcmp(x->job->id, y->job->id);
}

static listed listing_key(mb_job *j) {
  listed l = {.job = j};
  /* INT64_MIN (none) wraps to the top; the rest keep their order. */
  l.at = (uint64_t)j->next_fire - (uint64_t)INT64_MIN - 1;
  for (int i = 0; i < 8 && j->id[i]; i++)
    l.prefix |= (uint64_t)(unsigned char)j->id[i] << (56 - 8 * i);
  return l;
}

mb_job **mb_sched_jobs(const mb_sched *s, size_t *n) {
  size_t k = 0;
  listed *keys = mb_xmalloc((s->njobs ? s->njobs : 1) * sizeof *keys);
  for (size_t i = 0; i < s->nslots; i++)
    if (s->slots[i].job) keys[k++] = listing_key(s->slots[i].job);
  qsort(keys, k, sizeof *keys, by_listing);
  mb_job **all = mb_xmalloc((k ? k : 1) * sizeof *all);
  for (size_t i = 0; i < k; i++) all[i] = keys[i].job;
  free(keys);
  *n = k;
  return all;
}

static void arm_retry(mb_sched *s, mb_job *j) {
  if (j->retry_due == MB_TIME_NONE || j->paused || s->stopped) return;
  mb_time delay = j->retry_due - mb_sched_now(s);
  if (!j->retry_timer) {
    j->retry_timer = mb_xmalloc(sizeof *j->retry_timer);
    mb_timer_init(j->retry_timer, on_retry_due, j);
  }
  mb_timer_start(s->clock, j->retry_timer, delay > 0 ? delay : 0);
}

int mb_sched_pause_job(mb_sched *s, mb_job *j) {
  if (j->removed) return MB_ENOTFOUND;
  j->paused = true;
  j->next_fire = j->next_base = MB_TIME_NONE;
  stop_retry_timer(s, j);
  unqueue(s, j);
  rearm(s);
  emit_job(s, MB_EV_PAUSED, j);
  return 0;
}

int mb_sched_resume_job(mb_sched *s, mb_job *j) {
  if (j->removed) return MB_ENOTFOUND;
  if (!j->paused) return 0;
  j->paused = false;
  schedule_from(s, j, mb_sched_now(s));
  queue(s, j);
  arm_retry(s, j);
  rearm(s);
  mb_job_ref(j);
  emit_job(s, MB_EV_RESUMED, j);
  drop_if_done(s, j);
  mb_job_unref(j);
  return 0;
}

int mb_sched_remove_job(mb_sched *s, mb_job *j) {
  if (j->removed) return MB_ENOTFOUND;
  drop(s, j, NULL);
  return 0;
}

/* The jobs there when it is called: a removal shifts the table's entries
 * and a listener of its event may add jobs, which stay (one that added
 * a job per removal would otherwise never let it end). */
void mb_sched_remove_all_jobs(mb_sched *s) {
  size_t n = 0;
  mb_job **all = mb_xmalloc((s->njobs ? s->njobs : 1) * sizeof *all);
  for (size_t i = 0; i < s->nslots; i++) {
    if (!s->slots[i].job) continue;
    all[n] = s->slots[i].job;
    mb_job_ref(all[n++]);
  }
  for (size_t i = 0; i < n; i++) {
    if (!all[i]->removed) drop(s, all[i], NULL);
    mb_job_unref(all[i]);
  }
  free(all);
}

int mb_sched_reschedule_job(mb_sched *s, mb_job *j, mb_trigger *trigger) {
  if (j->removed) {
    mb_trigger_free(trigger);
    return MB_ENOTFOUND;
  }
  mb_trigger_free(j->trigger);
  j->trigger = trigger;
  j->last_fire = MB_TIME_NONE;
  if (!j->paused) {
    schedule_from(s, j, mb_sched_now(s));
    queue(s, j);
    rearm(s);
    mb_job_ref(j);
    drop_if_done(s, j);
    mb_job_unref(j);
  }
  return 0;
}

int mb_sched_set_next_fire(mb_sched *s, mb_job *j, mb_time next) {
  if (j->removed) return MB_ENOTFOUND;
  if (next == MB_TIME_NONE) return mb_sched_pause_job(s, j);
  bool was_paused = j->paused;
  j->paused = false;
  j->next_fire = j->next_base = next;
  queue(s, j);
  arm_retry(s, j);
  rearm(s);
  if (was_paused) emit_job(s, MB_EV_RESUMED, j);
  return 0;
}

void mb_sched_restore_job(mb_sched *s, mb_job *j, mb_time next,
                          mb_time last) {
  if (j->removed) return;
  j->last_fire = last;
  if (j->paused) return;
  j->next_fire = j->next_base = next;
  queue(s, j);
  rearm(s);
  mb_job_ref(j);
  drop_if_done(s, j);
  mb_job_unref(j);
}

void mb_sched_set_policy(mb_sched *s, mb_job *j, const mb_job_policy *p) {
  (void)s;
  const mb_job_policy *old = j->policy;
  j->policy = hold_policy(p);
  release_policy(old);
}

int mb_sched_fire_soon(mb_sched *s, mb_job *j, const mb_fire *fire) {
  if (j->removed) return MB_ENOTFOUND;
  if (s->stopped) return MB_ESTATE;
  pending_fire *p = mb_xmalloc(sizeof *p);
  mb_timer_init(&p->timer, on_pending_fire, p);
  p->sched = s;
  p->job = j;
  p->now = fire == NULL;
  p->fire = fire ? *fire : (mb_fire){MB_TIME_NONE, 1, true};
  mb_job_ref(j);
  j->pending_fires++;
  p->next = s->pending;
  p->prevp = &s->pending;
  if (s->pending) s->pending->prevp = &p->next;
  s->pending = p;
  mb_timer_start(s->clock, &p->timer, 0);
  return 0;
}

int mb_sched_retry(mb_sched *s, mb_job *j, mb_time due, const mb_fire *fire) {
  if (j->removed) return MB_ENOTFOUND;
  if (s->stopped) return MB_ESTATE;
  j->retry_due = due;
  j->retry_fire = *fire;
  arm_retry(s, j);
  return 0;
}

void mb_sched_stop(mb_sched *s) {
  s->stopped = true;
  mb_timer_stop(s->clock, &s->timer);
  cancel_pending(s, NULL);
  for (size_t i = 0; i < s->nslots; i++)
    if (s->slots[i].job) stop_retry_timer(s, s->slots[i].job);
}

bool mb_sched_stopped(const mb_sched *s) { return s->stopped; }

void mb_sched_run_ended(mb_sched *s, mb_job *j) {
  mb_job_ref(j);
  drop_if_done(s, j);
  mb_job_unref(j);
}

void mb_sched_rename_job(mb_job *j, const char *name) {
  if (j->name != j->id) free(j->name);
  j->name = strcmp(name, j->id) != 0 ? mb_xstrdup(name) : j->id;
}

void mb_sched_set_file(mb_job *j, const char *file) {
  free(j->file);
  j->file = file ? mb_xstrdup(file) : NULL;
}
