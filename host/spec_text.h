/* spec_text.h: the text a store keeps of a job added at run time (the
 * table constructor lua/state.lua writes: sorted keys, "[key]=value,"
 * entries), read without running it. Restoring many jobs that differ
 * only in their id validates one of them and copies the result for the
 * others; this finds the id to tell them apart. */
#ifndef MB_SPEC_TEXT_H
#define MB_SPEC_TEXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where the top-level id sits in a spec's text: the whole entry
 * (["id"]="...",) and the id's characters inside its quotes. */
typedef struct mb_spec_id {
  size_t entry_start, entry_end;  /* text[entry_start, entry_end) */
  size_t id_start, id_len;
} mb_spec_id;

/* Find text's top-level id entry. False when the text is not in the
 * writer's form, has no id, or its id needs escapes to be written (a
 * quote, a backslash, a control character): those take the long way. */
bool mb_spec_text_find_id(const char *text, mb_spec_id *out);

/* Where the id entry of a job of id would be in text, found by its bytes
 * alone (the first entry with id as the writer writes it), without
 * reading the rest. Where the top-level entry is elsewhere the place is
 * wrong, and the text then matches no shared text (whose entry was at
 * the top level). False when id needs escapes or is not there. */
bool mb_spec_text_guess_id(const char *text, const char *id,
                           mb_spec_id *out);

/* The text of stored specs that differ only in their id, held once by
 * every job restored from one of them: the text without its id entry,
 * and where that entry goes. */
typedef struct mb_spec_shared {
  unsigned refs;
  size_t head;   /* the entry goes before text[head] */
  size_t len;    /* of text, without its id entry */
  char text[];
} mb_spec_shared;

/* From text, whose id entry is at where; one hold, the caller's. */
mb_spec_shared *mb_spec_shared_new(const char *text, const mb_spec_id *where);
void mb_spec_shared_hold(mb_spec_shared *s);
/* Drop a hold (NULL: none); the last frees it. */
void mb_spec_shared_release(mb_spec_shared *s);
/* The text with id in its entry: a new string, the caller's to free. */
char *mb_spec_shared_text(const mb_spec_shared *s, const char *id);
/* A hash of text without its id entry (at where): the same for texts
 * that differ only in their id. */
uint64_t mb_spec_text_hash_without_id(const char *text,
                                      const mb_spec_id *where);
/* Whether text, its id entry at where, is s's text with some id. */
bool mb_spec_shared_matches(const mb_spec_shared *s, const char *text,
                            const mb_spec_id *where);
/* Whether text is the shared text with id in its entry. */
bool mb_spec_shared_is(const mb_spec_shared *s, const char *id,
                       const char *text);

#endif
