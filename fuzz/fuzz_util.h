/* fuzz_util.h: what both fuzz targets use to turn an input into
 * further numbers, so that a saved crash input replays exactly. */
#ifndef MB_FUZZ_UTIL_H
#define MB_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* FNV-1a of the input. */
static inline uint64_t hash(const uint8_t *p, size_t n) {
  uint64_t h = UINT64_C(14695981039346656037);
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * UINT64_C(1099511628211);
  return h;
}

/* splitmix64: a stream of further numbers from the hash. */
static inline uint64_t mix(uint64_t *h) {
  uint64_t z = (*h += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ z >> 30) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ z >> 27) * UINT64_C(0x94d049bb133111eb);
  return z ^ z >> 31;
}

#endif
