/* gc.h: Lua's collector, paced around the loop's turns. Runs leave
 * young garbage (a ctx each) beside a large, long-lived heap of
 * jobs; the loop takes the collections at the end of turns, so that a
 * burst of fires inside one turn is not held by a full collection. */
#ifndef MB_GC_H
#define MB_GC_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct mb_gc {
  size_t floor;       /* the heap after the latest collection */
  size_t major_base;  /* the heap after the latest full collection */
  long long young;    /* young collections taken at the end of a turn */
  long long major;    /* full ones */
  bool incremental;   /* job code chose the incremental collector */
} mb_gc;

/* Put L's collector in generational mode. Once per state. */
void mb_gc_open(lua_State *L);
/* The heap as it is counts as collected: the first paced collection
 * is a young one. */
void mb_gc_start(mb_gc *gc, lua_State *L);
/* At the end of a turn: a young collection once enough garbage came,
 * a full one once the heap has doubled since the last. */
void mb_gc_pace(mb_gc *gc, lua_State *L);
/* The Lua heap in bytes. */
size_t mb_gc_heap(lua_State *L);

#endif
