/* share.h: tables of things made once and held by everyone who asks for
 * an equal one: compiled cron expressions, triggers. The table's node
 * lives inside the shared thing (its first member) and keeps its hash,
 * so growing the table reads no key. Loop thread only. */
#ifndef MB_SHARE_H
#define MB_SHARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct mb_share_node {
  struct mb_share_node *next;
  uint64_t hash;
} mb_share_node;

typedef struct mb_share_table {
  mb_share_node **buckets;
  size_t nbuckets, count;
} mb_share_table;

/* The node of hash for which same(node, key) holds, or NULL. */
mb_share_node *mb_share_find(const mb_share_table *t, uint64_t hash,
                             bool (*same)(const mb_share_node *node,
                                          const void *key),
                             const void *key);
/* Add node under hash (not in the table yet). */
void mb_share_add(mb_share_table *t, mb_share_node *node, uint64_t hash);
/* Take node out; the table frees its buckets when it empties. */
void mb_share_remove(mb_share_table *t, mb_share_node *node);

/* FNV-1a steps, for the keys' hashes. */
#define MB_SHARE_HASH_START 1469598103934665603ULL
static inline uint64_t mb_share_mix(uint64_t h, uint64_t v) {
  return (h ^ v) * 1099511628211ULL;
}

/* h with n bytes at p mixed in, eight a step (a step a byte was most of
 * hashing a key), the high bits of each folded down for the tables,
 * which take the low ones. */
uint64_t mb_share_mix_bytes(uint64_t h, const void *p, size_t n);

#endif
