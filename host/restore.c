/* restore.c: sched:restore, taking back what the store kept after the
 * job files are loaded, in one pass over its rows: a row a file's job
 * claims gives it its counts, history and schedule; a row with a stored
 * spec brings its job back; the rest go. Stored specs that differ only in
 * their id are checked once (templates). */
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "lua_api.h"
#include "lua_host.h"
#include "share.h"
#include "spec_text.h"

/* What the jobs restored from stored specs that differ only in their id
 * share: the first is checked in Lua (revive), the rest copy its result
 * with their own id and a copy of its trigger, checked again then. */
struct revive_template {
  mb_share_node node;    /* first: the restore's table of templates */
  mb_spec_shared *text;  /* the spec's text without its id: the key */
  mb_trigger *trigger;   /* copied per job */
  mb_job_policy policy;
  char *name;            /* the spec's name, or NULL: each job's id */
  bool paused;
  struct mb_shared_spec *spec;
};

typedef struct restore_ctx {
  host *h;
  lua_State *L;
  /* When the restore began: its jobs are made as of then. The clock read
   * for each of a million jobs was a twentieth of a start. */
  mb_time now;
  bool keep_missing;
  int only_idx;       /* a set of ids to restore alone, or 0: all */
  int revive_idx;     /* revive(id, text), or 0: stored specs stay */
  int load_state_idx; /* load_state(text) -> ctx.state, or 0 */
  int recent_idx;     /* set of ids with runs after the store settled */
  bool any_recent;
  mb_share_table templates;
  struct revive_template **template_list;
  size_t ntemplates;
  /* The text of the template the row being restored was matched with
   * byte for byte, or NULL. */
  const mb_spec_shared *revived_as;
  int restored, removed, interrupted;
  /* Schedules to put back once interrupted runs have been retried, so
   * that a one-shot job waiting on that retry is not taken for done. */
  struct pending_schedule {
    mb_job *job;
    mb_time next, last;
  } *schedules;
  size_t nschedules, schedules_cap;
} restore_ctx;

static bool same_text(const char *a, const char *b) {
  return a == b || (a && b && strcmp(a, b) == 0);
}

/* A template's key: a stored spec's text and where its id entry is. */
typedef struct spec_key {
  const char *text;
  const mb_spec_id *where;
} spec_key;

static bool same_spec_key(const mb_share_node *node, const void *key) {
  const spec_key *k = key;
  return mb_spec_shared_matches(((const struct revive_template *)node)->text,
                                k->text, k->where);
}

/* The template of text, its id entry at where, or NULL. */
static struct revive_template *find_template(restore_ctx *c, const char *text,
                                             const mb_spec_id *where) {
  spec_key key = {text, where};
  return (struct revive_template *)mb_share_find(
    &c->templates, mb_spec_text_hash_without_id(text, where), same_spec_key,
    &key);
}

/* A restored job's definition is kept as the store's text, or as the
 * text it shares; NULL when a listener of the added event removed it
 * already. */
static mb_job *keep_revived(restore_ctx *c, mb_job *job, const char *text,
                            mb_spec_shared *shared) {
  if (job->removed) {
    mb_job_unref(job);
    return NULL;
  }
  job->rec.pruned_at = c->now;
  if (shared) {
    /* The stored text is the job's, whatever a listener of its added
     * event set: one or the other, never both. */
    host_set_string(&job->rec.spec, NULL);
    mb_spec_shared_hold(shared);
    job->rec.spec_shared = shared;
  } else {
    host_set_string(&job->rec.spec, text);
  }
  job->rec.memory_only = false;
  mb_job_unref(job);
  return job;
}

static void log_not_revived(const char *id, const char *why) {
  mb_log_field f[] = {MB_LS("job", id), MB_LS("error", why)};
  mb_log(MB_LOG_ERROR, "stored job could not be added back", f, 2);
}

/* Add the job of the checked spec at norm_idx with trigger t (taken
 * over); NULL, logged, when the scheduler refuses it. */
static mb_job *add_revived(restore_ctx *c, int norm_idx, mb_trigger *t,
                           const char *text) {
  host *h = c->h;
  lua_State *L = c->L;
  norm_idx = lua_absindex(L, norm_idx);
  lua_getfield(L, norm_idx, "id");
  lua_getfield(L, norm_idx, "name");
  lua_getfield(L, norm_idx, "paused");
  lua_getfield(L, norm_idx, "policy");
  mb_job_policy policy;
  host_read_policy(L, -1, &policy);
  const char *id = lua_tostring(L, -4);
  lua_pushvalue(L, norm_idx);
  mb_job_lua lua = {.ref = mb_ref(L)};
  mb_job *job;
  mb_err err = {0};
  int rc = mb_sched_add_job(h->sched, id, lua_tostring(L, -3), NULL, t,
                            &policy, false, lua_toboolean(L, -2), &lua, &job,
                            &err);
  if (rc < 0) {
    mb_unref(L, lua.ref);
    log_not_revived(id, err.msg);
  }
  lua_pop(L, 4);
  return rc < 0 ? NULL : keep_revived(c, job, text, NULL);
}

/* The job of stored spec st as template tpl says, with trigger t (taken
 * over): no Lua is run, and its spec table is the template's. NULL, with
 * *taken set, when a job of its id is in the scheduler already. */
static mb_job *add_shared(restore_ctx *c, struct revive_template *tpl,
                          mb_trigger *t, const mb_job_state *st, bool *taken) {
  host *h = c->h;
  mb_job_lua lua = {.ref = tpl->spec->ref, .shared = tpl->spec};
  tpl->spec->users++;
  mb_job *job;
  mb_err err = {0};
  int rc = mb_sched_add_job(h->sched, st->job_id,
                            tpl->name ? tpl->name : st->job_id, NULL, t,
                            &tpl->policy, false, tpl->paused, &lua, &job, &err);
  if (rc < 0) {
    host_release_shared(h->L, tpl->spec);
    if (rc == MB_EEXIST)
      *taken = true;
    else
      log_not_revived(st->job_id, err.msg);
    return NULL;
  }
  c->revived_as = tpl->text;
  return keep_revived(c, job, NULL, tpl->text);
}

/* The job of row st from the template its text matches, its id entry at
 * where; *used says whether there was one to use. */
static mb_job *from_template(restore_ctx *c, const mb_job_state *st,
                             const mb_spec_id *where, bool *used,
                             bool *taken) {
  struct revive_template *tpl = find_template(c, st->spec, where);
  if (!tpl) return NULL;
  mb_err err = {0};
  mb_trigger *t = mb_trigger_copy(tpl->trigger, c->now, &err);
  if (!t) return NULL;
  *used = true;
  return add_shared(c, tpl, t, st, taken);
}

/* Keep what the checked spec at base (revive's results from there) gives
 * the jobs whose specs differ from it only in their id. */
static void add_template(restore_ctx *c, int base, const mb_trigger *t,
                         const char *text, const mb_spec_id *where,
                         uint64_t hash) {
  lua_State *L = c->L;
  mb_err err = {0};
  mb_trigger *proto = mb_trigger_copy(t, c->now, &err);
  if (!proto) return;
  struct revive_template *tpl = mb_xcalloc(1, sizeof *tpl);
  tpl->trigger = proto;
  lua_getfield(L, base, "policy");
  host_read_policy(L, -1, &tpl->policy);
  lua_getfield(L, base, "paused");
  tpl->paused = lua_toboolean(L, -1);
  lua_getfield(L, base, "name");
  if (lua_toboolean(L, base + 3) && lua_isstring(L, -1))
    tpl->name = mb_xstrdup(lua_tostring(L, -1));
  lua_pop(L, 3);
  tpl->text = mb_spec_shared_new(text, where);
  tpl->spec = mb_xcalloc(1, sizeof *tpl->spec);
  host_push_copy(L, base, 12);
  lua_pushnil(L);
  lua_setfield(L, -2, "trigger");
  lua_pushnil(L);
  lua_setfield(L, -2, "state");
  tpl->spec->ref = mb_ref(L);
  tpl->spec->users = 1;  /* the restore's, while it lasts */
  mb_share_add(&c->templates, &tpl->node, hash);
  c->template_list = mb_xrealloc(c->template_list, (c->ntemplates + 1) *
                                 sizeof *c->template_list);
  c->template_list[c->ntemplates++] = tpl;
}

static void free_templates(restore_ctx *c) {
  for (size_t i = 0; i < c->ntemplates; i++) {
    struct revive_template *tpl = c->template_list[i];
    mb_share_remove(&c->templates, &tpl->node);
    mb_trigger_free(tpl->trigger);
    host_release_shared(c->L, tpl->spec);
    mb_spec_shared_release(tpl->text);
    free(tpl->name);
    free(tpl);
  }
  free(c->template_list);
}

/* The job of stored row st, added back from its spec unless a job of
 * its id is in the scheduler already (*taken): by its template when an
 * earlier spec differing only in its id made one, else checked in Lua.
 * A spec like one already checked is added straight away, the add
 * itself finding out whether the id is taken: one lookup per row. */
static mb_job *revive(restore_ctx *c, const mb_job_state *st, bool *taken) {
  lua_State *L = c->L;
  bool plain = !strpbrk(st->job_id, " \t\n\v\f\r");
  mb_spec_id where;
  bool used = false;
  mb_job *job;
  /* Most rows are like one seen before: found by the id entry's bytes
   * alone, and the rest compared byte for byte. */
  if (plain && c->ntemplates &&
      mb_spec_text_guess_id(st->spec, st->job_id, &where)) {
    job = from_template(c, st, &where, &used, taken);
    if (used) return job;
  }
  if (mb_sched_get_job(c->h->sched, st->job_id)) {
    *taken = true;
    return NULL;
  }
  /* Read in full: like one seen before after all (its id entry was not
   * the first with its bytes), or a template for those like it, if it
   * can be one (an id at the top level, written plainly). */
  bool keyed = plain && mb_spec_text_find_id(st->spec, &where) &&
               where.id_len == strlen(st->job_id) &&
               memcmp(st->spec + where.id_start, st->job_id,
                      where.id_len) == 0;
  if (keyed) {
    job = from_template(c, st, &where, &used, taken);
    if (used) return job;
  }
  uint64_t hash = keyed ? mb_spec_text_hash_without_id(st->spec, &where) : 0;
  /* The long way: revive(id, text) -> norm, text to keep, reusable,
   * named; or nothing when it cannot come back (it said why). */
  lua_pushvalue(L, c->revive_idx);
  lua_pushstring(L, st->job_id);
  lua_pushstring(L, st->spec);
  int base = lua_gettop(L) - 2;
  job = NULL;
  if (lua_pcall(L, 2, 4, 0) != LUA_OK) {
    log_not_revived(st->job_id, lua_tostring(L, -1));
  } else if (lua_istable(L, base)) {
    const char *keep = lua_tostring(L, base + 1);
    bool reusable = keyed && lua_toboolean(L, base + 2) &&
                    same_text(keep, st->spec);
    lua_getfield(L, base, "trigger");
    mb_trigger *t = host_take_trigger(L, -1);
    lua_pop(L, 1);
    if (reusable) add_template(c, base, t, st->spec, &where, hash);
    job = add_revived(c, base, t, keep);
  }
  lua_settop(L, base - 1);
  return job;
}

/* ctx.state as the store kept it, back in the job's spec. */
static void load_state(restore_ctx *c, mb_job *job) {
  lua_State *L = c->L;
  if (!c->load_state_idx || !job->rec.state || job->lua_ref == LUA_NOREF ||
      strcmp(job->rec.state, "{}") == 0)
    return;
  lua_pushvalue(L, c->load_state_idx);
  lua_pushstring(L, job->rec.state);
  if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_istable(L, -1)) {
    host_own_spec(c->h, job);
    mb_host_whole_spec(L, job);
    if (job->lua_ref != LUA_NOREF) {
      lua_rawgeti(L, LUA_REGISTRYINDEX, job->lua_ref);
      lua_insert(L, -2);
      lua_setfield(L, -2, "state");
      job->rec.has_state = true;
    }
  }
  lua_pop(L, 1);
}

static bool is_recent(restore_ctx *c, const char *job_id) {
  if (!c->any_recent) return false;
  lua_getfield(c->L, c->recent_idx, job_id);
  bool recent = lua_toboolean(c->L, -1);
  lua_pop(c->L, 1);
  return recent;
}

static void add_recent(const char *job_id, void *data) {
  restore_ctx *c = data;
  c->any_recent = true;
  lua_pushboolean(c->L, 1);
  lua_setfield(c->L, c->recent_idx, job_id);
}

/* The runs of a job recorded after its row was written, folded back
 * into what the row says (see SWEEP_EVERY). */
typedef struct fold {
  mb_job *job;
  mb_time last;  /* the latest fire they account for, or MB_TIME_NONE */
  bool any;
} fold;

static void fold_run(const mb_run_record *r, void *data) {
  fold *f = data;
  struct mb_job_record *rec = &f->job->rec;
  f->any = true;
  if (r->attempt <= 1 && r->scheduled != MB_TIME_NONE &&
      (f->last == MB_TIME_NONE || r->scheduled > f->last))
    f->last = r->scheduled;
  /* A run left running is counted when it is marked interrupted. */
  if (strcmp(r->status, "running") == 0) return;
  rec->unpruned++;
  const char *st = r->status;
  bool ends_run = true;
  if (strcmp(st, "success") == 0) {
    rec->ok++;
  } else if (strcmp(st, "error") == 0 || strcmp(st, "interrupted") == 0) {
    rec->failed++;
  } else if (strcmp(st, "timeout") == 0) {
    rec->timed_out++;
  } else if (strcmp(st, "cancelled") == 0) {
    rec->cancelled++;
  } else {
    ends_run = false;
    if (strcmp(st, "missed") == 0) rec->missed++;
    if (strcmp(st, "skipped") == 0) rec->skipped++;
  }
  if (ends_run && r->started != MB_TIME_NONE) {
    rec->last_status = host_status_static(st);
    rec->last_start = r->started;
    rec->last_duration =
      r->finished != MB_TIME_NONE ? r->finished - r->started : -1;
    host_set_string(&rec->last_error, strcmp(st, "success") == 0 ? NULL : r->error);
  }
}

static void restore_one(const mb_job_state *st, void *data) {
  restore_ctx *c = data;
  host *h = c->h;
  if (c->only_idx) {
    lua_getfield(c->L, c->only_idx, st->job_id);
    bool wanted = lua_toboolean(c->L, -1);
    lua_pop(c->L, 1);
    if (!wanted) return;
  }
  h->restoring_id = st->job_id;
  /* Looked up (and mostly added) below, after its spec is matched. */
  mb_sched_prefetch(h->sched, st->job_id);
  /* A job of its id in the scheduler (a file declared it) takes the row;
   * else the row's spec brings the job back, if it has one. */
  mb_job *job = NULL;
  c->revived_as = NULL;
  bool taken = !st->spec || !c->revive_idx;
  if (!taken) job = revive(c, st, &taken);
  if (taken) job = mb_sched_get_job(h->sched, st->job_id);
  if (!job) {
    h->restoring_id = NULL;
    /* No file declares it any more: it goes, its history stays. Unless
     * a file failed to load: it may be the one that declares it. */
    if (!c->keep_missing) {
      mb_store_delete_job(h->store, st->job_id);
      c->removed++;
    } else if (is_recent(c, st->job_id) && st->checkpoint < h->settle_cap) {
      /* Its runs since the row wait to be folded in when the job is
       * back: the store must not say every row holds them. */
      h->settle_cap = st->checkpoint;
    }
    return;
  }
  struct mb_job_record *rec = &job->rec;
  rec->ok = st->ok;
  rec->failed = st->failed;
  rec->timed_out = st->timed_out;
  rec->missed = st->missed;
  rec->skipped = st->skipped;
  rec->cancelled = st->cancelled;
  rec->last_status = host_status_static(st->last_status);
  rec->last_start = st->last_start;
  rec->last_duration = st->last_duration;
  host_set_string(&rec->last_error, st->last_error);
  host_set_string(&rec->state, st->state);
  rec->checkpoint = st->checkpoint;
  fold f = {job, MB_TIME_NONE, false};
  mb_err err = {0};
  if (is_recent(c, st->job_id) &&
      mb_store_runs_since(h->store, st->job_id, st->checkpoint, fold_run, &f,
                          &err) < 0) {
    mb_log_field fl[] = {MB_LS("job", st->job_id), MB_LS("error", err.msg)};
    mb_log(MB_LOG_ERROR, "store read failed", fl, 2);
  }
  /* Held from here: loading its state runs Lua, and a finalizer may
   * remove it. */
  mb_job_ref(job);
  load_state(c, job);
  const char *trigger = host_trigger_identity(job);
  if (st->paused) {
    host_set_string(&rec->pause_note, st->pause_note);
    mb_sched_pause_job(h->sched, job);
  }
  if (st->retry_due != MB_TIME_NONE) {
    mb_fire fire = {st->retry_scheduled, st->retry_attempt, false};
    mb_sched_retry(h->sched, job, st->retry_due, &fire);
  }
  h->restoring_id = NULL;
  /* The row is written again only when restoring changed what it says:
   * the counts, last run and state were copied from it; the rest is
   * compared here, and the schedule once it is back. */
  bool same_trigger = st->trigger && strcmp(st->trigger, trigger) == 0;
  bool changed = !same_trigger || job->paused != st->paused ||
                 !(rec->spec_shared
                     ? rec->spec_shared == c->revived_as ||
                           mb_spec_shared_is(rec->spec_shared, job->id,
                                             st->spec)
                     : same_text(rec->spec, st->spec)) ||
                 job->retry_due != st->retry_due ||
                 (st->retry_due != MB_TIME_NONE &&
                  (job->retry_fire.attempt != st->retry_attempt ||
                   job->retry_fire.scheduled != st->retry_scheduled));
  /* The same trigger: the schedule carries over, overdue fires and all;
   * a changed one keeps the next fire just computed. */
  if (same_trigger) {
    if (c->nschedules == c->schedules_cap) {
      c->schedules_cap = c->schedules_cap ? 2 * c->schedules_cap : 64;
      c->schedules = mb_xrealloc(c->schedules,
                                 c->schedules_cap * sizeof *c->schedules);
    }
    /* Fires the history says are done since the row was written are
     * not due again. */
    mb_time next = st->next_fire, last = st->last_fire;
    if (f.last != MB_TIME_NONE && (last == MB_TIME_NONE || f.last > last)) {
      last = f.last;
      if (next != MB_TIME_NONE && next <= last)
        next = mb_trigger_next(job->trigger, last, mb_clock_now(h->clock));
    }
    c->schedules[c->nschedules++] = (struct pending_schedule){job, next, last};
    mb_job_ref(job);
  }
  /* What was folded in stays to be written by the next sweep. */
  if (changed)
    host_mark_dirty(h, job);
  else if (f.any)
    host_touch(h, job, false);
  mb_job_unref(job);
  c->restored++;
}

static void interrupted_one(const mb_run_record *r, void *data) {
  restore_ctx *c = data;
  host *h = c->h;
  c->interrupted++;
  mb_log_field f[] = {MB_LS("job", r->job_id), MB_LI("run", r->run_id),
                      MB_LI("pid", r->pid)};
  mb_log(MB_LOG_WARN, "run interrupted by a stop of its process", f, 3);
  mb_job *job = mb_sched_get_job(h->sched, r->job_id);
  if (!job) return;
  job->rec.failed++;
  job->rec.last_status = "interrupted";
  host_mark_dirty(h, job);
  mb_fire fire = {r->scheduled, r->attempt, false};
  mb_runner_interrupted(h->runner, job, &fire,
                        "the process running it stopped before it finished");
}

static int optional_function(lua_State *L, int how, const char *key) {
  if (lua_getfield(L, how, key) == LUA_TFUNCTION) return lua_gettop(L);
  lua_pop(L, 1);
  return 0;
}

/* sched:restore{keep_missing, only, revive, load_state} -> {restored,
 * removed, interrupted}: after the job files are loaded, take back what
 * the store kept, in one pass over it. only: a set of job ids, jobs a
 * reload added, to restore alone (interrupted runs were dealt with at
 * start). revive(id, text) -> norm, text, reusable, named: a stored
 * spec whose id no file declares, checked (see revive above).
 * load_state(text) -> table: a saved ctx.state. */
int mb_host_restore(lua_State *L) {
  host *h = host_check(L, 1);
  restore_ctx c = {.h = h, .L = L, .now = mb_clock_now(h->clock)};
  if (lua_istable(L, 2)) {
    lua_getfield(L, 2, "keep_missing");
    c.keep_missing = lua_toboolean(L, -1);
    if (lua_getfield(L, 2, "only") == LUA_TTABLE) {
      c.only_idx = lua_gettop(L);
      c.keep_missing = true;
    }
    c.revive_idx = optional_function(L, 2, "revive");
    c.load_state_idx = optional_function(L, 2, "load_state");
  }
  if (h->store) {
    mb_err err = {0};
    /* Rows are written lazily: the jobs with runs after the store last
     * settled may have runs their rows do not hold. */
    lua_newtable(L);
    c.recent_idx = lua_gettop(L);
    int rc = mb_store_recent_jobs(h->store, mb_store_settled(h->store),
                                  add_recent, &c, &err);
    if (rc == 0) rc = mb_store_load_jobs(h->store, restore_one, &c, &err);
    if (rc == 0 && !c.only_idx)
      rc = mb_store_interrupted(h->store, interrupted_one, &c, &err);
    for (size_t i = 0; i < c.nschedules; i++) {
      struct pending_schedule *p = &c.schedules[i];
      mb_job *job = p->job;
      mb_sched_restore_job(h->sched, job, p->next, p->last);
      if (!job->removed &&
          (job->next_fire != p->next || job->last_fire != p->last))
        host_mark_dirty(h, job);
      mb_job_unref(job);
    }
    free(c.schedules);
    free_templates(&c);
    if (rc < 0) {
      lua_pushnil(L);
      lua_pushstring(L, err.msg);
      return 2;
    }
    host_flush(h);
  }
  lua_createtable(L, 0, 3);
  lua_pushinteger(L, c.restored);
  lua_setfield(L, -2, "restored");
  lua_pushinteger(L, c.removed);
  lua_setfield(L, -2, "removed");
  lua_pushinteger(L, c.interrupted);
  lua_setfield(L, -2, "interrupted");
  return 1;
}

