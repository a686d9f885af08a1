/*
 * opsout.h: what an operator subcommand prints on stdout: an aligned table for a person at a
 * terminal, one JSON object per line for a program.
 */
#ifndef CQRS_OPSOUT_H
#define CQRS_OPSOUT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

typedef struct opsout opsout;

/*
 * Output of command (e.g. "replay") to f (borrowed), as a table when text is true, else as JSON
 * lines. columns (NULL-terminated, borrowed for the output's life) are the members of each row
 * that the table shows, in order; the JSON lines carry every member. Caller frees with
 * opsout_free().
 */
opsout *opsout_new(FILE *f, const char *command, const char *const *columns, bool text);
/*
 * "auto" (text when stdout is a terminal), "text" or "json" -> *text; false for anything else.
 */
bool opsout_mode(const char *name, bool *text) __attribute__((warn_unused_result));
/* A sentence for the reader: as text under the table, or at once as {"command", "note"}. */
void opsout_note(opsout *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* One row (borrowed: copied): a JSON line at once, or kept for the table. */
void opsout_row(opsout *o, json_t *row);
/* Prints the table and the notes (in text mode), flushes f and frees. NULL is a no-op. */
void opsout_free(opsout *o);

#endif
