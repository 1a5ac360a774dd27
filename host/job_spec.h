/* job_spec.h: add_job's fast path. Most specs are a table of plain
 * fields (id, name, run as a function) with a trigger of a known kind
 * spelled plainly; such a spec is read here straight into what the
 * scheduler needs, with no Lua code run. Anything else (policy fields,
 * args, a "module.function" run, a time zone, a wrong value...) is left
 * to lua/validate.lua, which words every error: so what is read here
 * must come out exactly as the validator would have made it. */
#ifndef MB_JOB_SPEC_H
#define MB_JOB_SPEC_H

#include <lua.h>
#include <stdbool.h>

#include "trigger.h"

typedef struct mb_plain_spec {
  const char *id;           /* the spec's own string */
  const char *name;         /* the spec's own string; NULL: the id */
  mb_trigger_spec trigger;  /* its cron expression is the caller's */
} mb_plain_spec;

/* Read the add_job spec at idx, a trigger naming no zone being read in
 * zone. True: *out is filled, the caller owns out->trigger.cron (which
 * mb_trigger_new takes over) and the run function is pushed. False: the
 * spec is not of the plain shape or something in it is wrong; nothing
 * was pushed and there is nothing to free. */
bool mb_job_spec_read(lua_State *L, int idx, const mb_tz *zone,
                      mb_plain_spec *out);

#endif
