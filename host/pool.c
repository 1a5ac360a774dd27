/* pool.c: objects of one size in huge-page chunks. */
#include "pool.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <uv.h>

#include "common.h"

#if defined(__SANITIZE_ADDRESS__)
#define POOL_BY_CALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_BY_CALLOC 1
#endif
#endif

enum { CHUNK = 2 << 20 };

/* Chunks kept mapped and populated ahead of a pool that keeps growing. */
enum { AHEAD = 2 };

struct mb_pool {
  size_t size;      /* of an object, rounded up to malloc's alignment */
  size_t first;     /* offset of a chunk's first object */
  size_t capacity;  /* objects a chunk holds */
  size_t live;
  size_t chunks;
  struct chunk *roomy;  /* chunks with room, most recently freed into first */
  size_t nroomy;
  void *ahead[AHEAD];   /* mapped, handed to the populator, not yet used */
  size_t nahead;
};

/* The head of a chunk, at its (aligned) start. */
typedef struct chunk {
  struct chunk *next, *prev;  /* in the pool's roomy list, when listed */
  void *freed;                /* freed objects, linked through their first word */
  size_t used;                /* objects handed out */
  size_t carved;              /* objects ever carved from the chunk */
  bool listed;
} chunk;

mb_pool *mb_pool_new(size_t size) {
  mb_pool *p = mb_xcalloc(1, sizeof *p);
  /* Aligned as malloc aligns; a freed object holds a pointer. */
  size_t align = _Alignof(max_align_t);
  if (size < sizeof(void *)) size = sizeof(void *);
  p->size = (size + align - 1) & ~(align - 1);
  p->first = (sizeof(chunk) + 63) & ~(size_t)63;
  p->capacity = (CHUNK - p->first) / p->size;
  return p;
}

size_t mb_pool_live(const mb_pool *p) { return p->live; }
size_t mb_pool_chunks(const mb_pool *p) { return p->chunks; }
size_t mb_pool_ahead(const mb_pool *p) { return p->nahead; }

#ifdef POOL_BY_CALLOC

void *mb_pool_alloc(mb_pool *p) {
  p->live++;
  return mb_xcalloc(1, p->size);
}

void mb_pool_free(mb_pool *p, void *obj) {
  if (!obj) return;
  p->live--;
  free(obj);
}

void *mb_table_alloc(size_t n, size_t size) { return mb_xcalloc(n, size); }

void mb_table_free(void *table, size_t n, size_t size) {
  (void)n;
  (void)size;
  free(table);
}

#else

static void list(mb_pool *p, chunk *c) {
  c->prev = NULL;
  c->next = p->roomy;
  if (p->roomy) p->roomy->prev = c;
  p->roomy = c;
  c->listed = true;
  p->nroomy++;
}

static void unlist(mb_pool *p, chunk *c) {
  if (c->prev)
    c->prev->next = c->next;
  else
    p->roomy = c->next;
  if (c->next) c->next->prev = c->prev;
  c->listed = false;
  p->nroomy--;
}

/* ---- populating ahead ----
 *
 * On a virtual machine the first write to a page may fault in the host as
 * well as in the guest: a million restored jobs touched 430 MB of fresh
 * chunks, and zeroing them took a third of the start (and from 0.1 to 1.3
 * s from run to run, as the host had or had not backed that memory
 * before). A pool that keeps growing has its next chunks mapped ahead and
 * populated by a helper thread, on the other core, while the loop thread
 * fills the current one. The helper only asks the kernel to fault pages
 * in (MADV_POPULATE_WRITE), which leaves their contents alone: the loop
 * thread may already be writing objects into the same chunk. */

#define POPULATE_QUEUE 16

static struct populator {
  uv_once_t once;
  bool started;
  uv_mutex_t mu;
  uv_cond_t more, done;
  void *queue[POPULATE_QUEUE];  /* NULL: taken back before its turn */
  size_t head, count;
  void *current;                /* being populated */
} populator = {.once = UV_ONCE_INIT};

static void populate_main(void *arg) {
  (void)arg;
  uv_mutex_lock(&populator.mu);
  for (;;) {
    while (populator.count == 0) uv_cond_wait(&populator.more, &populator.mu);
    populator.current = populator.queue[populator.head];
    populator.head = (populator.head + 1) % POPULATE_QUEUE;
    populator.count--;
    if (!populator.current) continue;
    uv_mutex_unlock(&populator.mu);
#ifdef MADV_POPULATE_WRITE
    /* A kernel older than 5.14 refuses: the loop thread faults the
     * pages itself, as it would without the helper. */
    madvise(populator.current, CHUNK, MADV_POPULATE_WRITE);
#endif
    uv_mutex_lock(&populator.mu);
    populator.current = NULL;
    uv_cond_broadcast(&populator.done);
  }
}

static void start_populator(void) {
  uv_thread_t thread;
  if (uv_mutex_init(&populator.mu) != 0) return;
  if (uv_cond_init(&populator.more) != 0) {
    uv_mutex_destroy(&populator.mu);
    return;
  }
  if (uv_cond_init(&populator.done) != 0) {
    uv_cond_destroy(&populator.more);
    uv_mutex_destroy(&populator.mu);
    return;
  }
  /* It waits on its queue for the life of the process: nothing joins
   * it. */
  uv_thread_options_t opts = {.flags = UV_THREAD_HAS_STACK_SIZE,
                              .stack_size = 64 << 10};
  populator.started =
      uv_thread_create_ex(&thread, &opts, populate_main, NULL) == 0;
}

/* Hand mapping to the helper; false when it cannot take it. */
static bool populate_later(void *mapping) {
  uv_once(&populator.once, start_populator);
  if (!populator.started) return false;
  uv_mutex_lock(&populator.mu);
  bool queued = populator.count < POPULATE_QUEUE;
  if (queued) {
    populator.queue[(populator.head + populator.count) % POPULATE_QUEUE] =
        mapping;
    populator.count++;
    uv_cond_signal(&populator.more);
  }
  uv_mutex_unlock(&populator.mu);
  return queued;
}

/* Before mapping is unmapped: the helper must not populate whatever is
 * mapped at that address next. Waits while it populates mapping, a few
 * milliseconds at most, and only for a chunk emptied that soon. */
static void populate_forget(void *mapping) {
  if (!populator.started) return;
  uv_mutex_lock(&populator.mu);
  for (size_t i = 0; i < populator.count; i++) {
    size_t at = (populator.head + i) % POPULATE_QUEUE;
    if (populator.queue[at] == mapping) populator.queue[at] = NULL;
  }
  while (populator.current == mapping)
    uv_cond_wait(&populator.done, &populator.mu);
  uv_mutex_unlock(&populator.mu);
}

/* ---- chunks ---- */

/* A mapping of bytes (whole chunks) aligned to a chunk: map a chunk
 * more and keep the aligned part. The kernel backs only aligned 2 MiB
 * ranges with huge pages, and a chunk's object finds its chunk by
 * masking its address. NULL when the system refuses. */
static void *map_aligned(size_t bytes, bool huge) {
  char *m = mmap(NULL, bytes + CHUNK, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) return NULL;
  uintptr_t start = ((uintptr_t)m + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1);
  size_t head = start - (uintptr_t)m;
  if (head) munmap(m, head);
  munmap((char *)start + bytes, CHUNK - head);
#ifdef MADV_HUGEPAGE
  if (huge) madvise((void *)start, bytes, MADV_HUGEPAGE);
#else
  (void)huge;
#endif
  return (void *)start;
}

/* Only a chunk mapped ahead may fail quietly. */
static void *map_chunk(bool huge) { return map_aligned(CHUNK, huge); }

/* Keep AHEAD chunks mapped and populating for a pool past its second
 * chunk: one or two chunks are a small scheduler, not a growing one. A
 * chunk the helper cannot take is unmapped again, as it would cost the
 * loop thread no less to fault it later. */
static void top_up_ahead(mb_pool *p) {
  if (p->chunks < 3) return;
  while (p->nahead < AHEAD) {
    void *m = map_chunk(true);
    if (!m) return;  /* short of address space: faulted when needed */
    if (!populate_later(m)) {
      munmap(m, CHUNK);  /* the helper never had it */
      return;
    }
    p->ahead[p->nahead++] = m;
  }
}

/* A pool back to one chunk is not growing: what it mapped ahead goes.
 * Not sooner, so that one going up and down past a chunk's worth of
 * objects does not map and populate chunks each time. */
static void drop_ahead(mb_pool *p) {
  while (p->nahead) {
    void *m = p->ahead[--p->nahead];
    populate_forget(m);
    munmap(m, CHUNK);
  }
}

static chunk *new_chunk(mb_pool *p) {
  /* Not the first chunk in huge pages: a scheduler of a few jobs
   * touches a few pages of it, and a huge page would make that 2 MiB. */
  void *m;
  if (p->nahead) {  /* the oldest: the helper took it first */
    m = p->ahead[0];
    memmove(p->ahead, p->ahead + 1, --p->nahead * sizeof *p->ahead);
  } else {
    m = map_chunk(p->chunks > 0);
    if (!m) mb_out_of_memory(2 * CHUNK);
  }
  p->chunks++;
  top_up_ahead(p);
  chunk *c = m;  /* fresh mappings are zeroed */
  list(p, c);
  return c;
}

void *mb_pool_alloc(mb_pool *p) {
  chunk *c = p->roomy ? p->roomy : new_chunk(p);
  void *obj;
  if (c->freed) {
    obj = c->freed;
    c->freed = *(void **)obj;
    memset(obj, 0, p->size);
  } else {
    obj = (char *)c + p->first + c->carved++ * p->size;
  }
  c->used++;
  p->live++;
  if (!c->freed && c->carved == p->capacity) unlist(p, c);
  return obj;
}

void mb_pool_free(mb_pool *p, void *obj) {
  if (!obj) return;
  chunk *c = (chunk *)((uintptr_t)obj & ~(uintptr_t)(CHUNK - 1));
  *(void **)obj = c->freed;
  c->freed = obj;
  c->used--;
  p->live--;
  if (!c->listed) list(p, c);
  /* An empty chunk goes back, but for the last one with room: a job
   * removed and another added must not map and unmap a chunk each. */
  if (c->used == 0 && p->nroomy > 1) {
    unlist(p, c);
    populate_forget(c);
    munmap(c, CHUNK);
    p->chunks--;
    if (p->chunks <= 1) drop_ahead(p);
  }
}

/* ---- tables ---- */

/* Whole chunks, so that every page of it can be a huge one. */
static size_t table_bytes(size_t n, size_t size) {
  return (n * size + CHUNK - 1) & ~(size_t)(CHUNK - 1);
}

void *mb_table_alloc(size_t n, size_t size) {
  if (n > SIZE_MAX / size) mb_out_of_memory(SIZE_MAX);
  if (n * size < CHUNK) return mb_xcalloc(n, size);
  size_t bytes = table_bytes(n, size);
  void *table = map_aligned(bytes, true);
  if (!table) mb_out_of_memory(bytes);
  return table;
}

void mb_table_free(void *table, size_t n, size_t size) {
  if (!table) return;
  if (n * size < CHUNK)
    free(table);
  else
    munmap(table, table_bytes(n, size));
}

#endif
