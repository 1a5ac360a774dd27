/* pool.c: objects of one size in huge-page chunks. */
#include "pool.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common.h"

#if defined(__SANITIZE_ADDRESS__)
#define POOL_BY_CALLOC 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define POOL_BY_CALLOC 1
#endif
#endif

enum { CHUNK = 2 << 20 };

struct mb_pool {
  size_t size;      /* of an object, rounded up to malloc's alignment */
  size_t first;     /* offset of a chunk's first object */
  size_t capacity;  /* objects a chunk holds */
  size_t live;
  size_t chunks;
  struct chunk *roomy;  /* chunks with room, most recently freed into first */
  size_t nroomy;
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

/* A chunk aligned to its size, so that an object finds its chunk by
 * masking its address: map twice the size and keep the aligned half. */
static chunk *new_chunk(mb_pool *p) {
  char *m = mmap(NULL, 2 * CHUNK, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) mb_out_of_memory(2 * CHUNK);
  uintptr_t start = ((uintptr_t)m + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1);
  size_t head = start - (uintptr_t)m;
  if (head) munmap(m, head);
  munmap((char *)start + CHUNK, CHUNK - head);
#ifdef MADV_HUGEPAGE
  /* Not the first chunk: a scheduler of a few jobs touches a few pages
   * of it, and a huge page would make that 2 MiB. */
  if (p->chunks > 0) madvise((void *)start, CHUNK, MADV_HUGEPAGE);
#endif
  p->chunks++;
  chunk *c = (chunk *)start;  /* fresh mappings are zeroed */
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
    munmap(c, CHUNK);
    p->chunks--;
  }
}

#endif
