#include "gc.h"

/* Runs leave garbage (a ctx each) that the generational collector
 * takes in young collections, which hold the loop for as long as the
 * young generation takes to sweep. Left to itself it collects once a
 * fifth of the heap has been allocated: with ten thousand jobs firing
 * ten thousand times a second, about 450 KB and a millisecond and a
 * half, every quarter second; with a million jobs, a hundred times that.
 * Collecting at the end of a turn once YOUNG_BYTES have come keeps each
 * collection short (a tenth of a millisecond), whatever the heap's size;
 * the collector's own pace stays as the bound within a long turn. */
enum { YOUNG_BYTES = 64 * 1024 };

/* Lua 5.4 marks a full collection that freed less than half of the
 * heap's growth as bad (a heap growing with live data: jobs being added
 * or restored), and then makes its next collection a full one, whenever
 * that comes: in the middle of the next burst of fires, with a million
 * jobs a tenth of a second or more. A collection the loop takes at the
 * end of a turn is the one the mark asked for, and clears it. When a
 * bad full collection of Lua's own was followed by another, the
 * collector runs incremental until its next: LUA_GCCOLLECT would then
 * collect incrementally and keep the mark, while entering generational
 * mode collects and ends both. */

void mb_gc_open(lua_State *L) { lua_gc(L, LUA_GCGEN, 0, 0); }

size_t mb_gc_heap(lua_State *L) {
  return (size_t)lua_gc(L, LUA_GCCOUNT) * 1024 +
         (size_t)lua_gc(L, LUA_GCCOUNTB);
}

void mb_gc_start(mb_gc *gc, lua_State *L) {
  *gc = (mb_gc){.major_base = mb_gc_heap(L)};
}

/* Job code that switched to the incremental collector keeps it: the
 * mode call that cleared the mark switched it back (with a full
 * collection, once), so it is switched again, and this scheduler leaves
 * the mode alone from then on, even if job code switches back. */
static void incremental_chosen(mb_gc *gc, lua_State *L) {
  lua_gc(L, LUA_GCINC, 0, 0, 0);
  gc->incremental = true;
}

/* A young collection. Setting generational mode again clears the mark
 * and, in generational mode, does nothing else; between Lua's own bad
 * full collections (incremental, see above) it is a full collection,
 * the one the mark asked for, and the step after it a short one. */
static void collect_young(mb_gc *gc, lua_State *L) {
  if (!gc->incremental && lua_gc(L, LUA_GCGEN, 0, 0) == LUA_GCINC)
    incremental_chosen(gc, L);
  lua_gc(L, LUA_GCSTEP, 0);
}

/* A full collection, leaving no mark: entering incremental mode, then
 * generational mode, is what LUA_GCCOLLECT does in generational mode,
 * and one full collection in the incremental state above too (entering
 * incremental mode there changes nothing). */
static void collect_full(mb_gc *gc, lua_State *L) {
  if (!gc->incremental && lua_gc(L, LUA_GCINC, 0, 0, 0) == LUA_GCGEN) {
    lua_gc(L, LUA_GCGEN, 0, 0);
    return;
  }
  gc->incremental = true;
  lua_gc(L, LUA_GCCOLLECT);
}

void mb_gc_pace(mb_gc *gc, lua_State *L) {
  /* Job code that stopped the collector keeps it stopped (a step would
   * collect all the same). */
  if (!lua_gc(L, LUA_GCISRUNNING)) return;
  size_t heap = mb_gc_heap(L);
  /* Smaller than the floor: a collection ran meanwhile. */
  if (heap < gc->floor) gc->floor = heap;
  if (heap < gc->major_base) gc->major_base = heap;
  if (heap - gc->floor < YOUNG_BYTES) return;
  /* A step taken here is a young collection, and it leaves the collector
   * no debt: its own major collection, due once the heap has doubled
   * since the last, would never come, and what outlived two young
   * collections would never be freed. So the loop takes that one too. */
  if (heap / 2 > gc->major_base) {
    collect_full(gc, L);
    gc->major++;
    gc->major_base = mb_gc_heap(L);
  } else {
    collect_young(gc, L);
    gc->young++;
  }
  gc->floor = mb_gc_heap(L);
}
