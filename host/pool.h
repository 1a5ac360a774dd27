/* pool.h: objects of one size carved from 2 MiB chunks that the kernel
 * may back with huge pages. A store of a million jobs then costs a few
 * hundred page faults where malloc's heap costs a hundred thousand
 * (about 10 us each on a virtual machine, a second in all). The first
 * chunk stays in small pages, so a pool of a few objects stays small.
 * Objects come zeroed; a chunk whose objects are all freed goes back to
 * the system unless it is the only one with room. A pool past its second
 * chunk keeps two more mapped ahead, their pages faulted in by a helper
 * thread (pool.c says why), until it is back to one chunk. Loop thread
 * only.
 *
 * Built with AddressSanitizer, objects come from calloc one by one, so
 * that it still sees every use after free and every leak. */
#ifndef MB_POOL_H
#define MB_POOL_H

#include <stddef.h>

typedef struct mb_pool mb_pool;

/* A pool of objects of size bytes (at most a few kilobytes). */
mb_pool *mb_pool_new(size_t size);
/* A zeroed object; aborts, as mb_xmalloc does, when memory is out. */
void *mb_pool_alloc(mb_pool *p);
void mb_pool_free(mb_pool *p, void *obj);
/* Objects handed out and not freed. */
size_t mb_pool_live(const mb_pool *p);
/* Chunks holding objects or room for them (0 when objects come from
 * calloc), and chunks mapped ahead of them. */
size_t mb_pool_chunks(const mb_pool *p);
size_t mb_pool_ahead(const mb_pool *p);

/* A zeroed table of n elements of size bytes, for an index that grows
 * large and is read at random (the job table): past a chunk it is mapped
 * in huge pages, whose few faults and TLB entries cost far less than a
 * small page's each. Freed with mb_table_free and the same n and size. */
void *mb_table_alloc(size_t n, size_t size);
void mb_table_free(void *table, size_t n, size_t size);

#endif
