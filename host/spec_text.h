/* spec_text.h: the text a store keeps of a job added at run time (the
 * table constructor lua/state.lua writes: sorted keys, "[key]=value,"
 * entries), read without running it. Restoring many jobs that differ
 * only in their id validates one of them and copies the result for the
 * others; this finds the id to tell them apart. */
#ifndef MB_SPEC_TEXT_H
#define MB_SPEC_TEXT_H

#include <stdbool.h>
#include <stddef.h>

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

#endif
