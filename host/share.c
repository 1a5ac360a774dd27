/* share.c: the tables of shared things (see share.h). */
#include "share.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

static mb_share_node **bucket(const mb_share_table *t, uint64_t hash) {
  return &t->buckets[hash & (t->nbuckets - 1)];
}

mb_share_node *mb_share_find(const mb_share_table *t, uint64_t hash,
                             bool (*same)(const mb_share_node *node,
                                          const void *key),
                             const void *key) {
  if (!t->nbuckets) return NULL;
  for (mb_share_node *n = *bucket(t, hash); n; n = n->next)
    if (n->hash == hash && same(n, key)) return n;
  return NULL;
}

/* Twice the buckets, at most three quarters full. */
static void grow(mb_share_table *t) {
  mb_share_table bigger = {
    mb_xcalloc(t->nbuckets ? 2 * t->nbuckets : 64, sizeof *t->buckets),
    t->nbuckets ? 2 * t->nbuckets : 64, t->count};
  for (size_t i = 0; i < t->nbuckets; i++) {
    for (mb_share_node *n = t->buckets[i], *next; n; n = next) {
      next = n->next;
      mb_share_node **b = bucket(&bigger, n->hash);
      n->next = *b;
      *b = n;
    }
  }
  free(t->buckets);
  *t = bigger;
}

void mb_share_add(mb_share_table *t, mb_share_node *node, uint64_t hash) {
  if (t->count + 1 > t->nbuckets / 4 * 3) grow(t);
  node->hash = hash;
  mb_share_node **b = bucket(t, hash);
  node->next = *b;
  *b = node;
  t->count++;
}

void mb_share_remove(mb_share_table *t, mb_share_node *node) {
  mb_share_node **p = bucket(t, node->hash);
  while (*p != node) p = &(*p)->next;
  *p = node->next;
  if (--t->count == 0) {
    free(t->buckets);
    *t = (mb_share_table){0};
  }
}

uint64_t mb_share_mix_bytes(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (; n >= 8; b += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, b, 8);
    h = mb_share_mix(h, w);
    h ^= h >> 29;
  }
  uint64_t last = 0;
  memcpy(&last, b, n);
  h = mb_share_mix(h, last);
  return h ^ (h >> 29);
}
