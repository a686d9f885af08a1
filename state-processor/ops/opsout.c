/* opsout.c: an operator subcommand's report as an aligned table or as JSON lines. */
#include "ops/opsout.h"

#include "core/xalloc.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct opsout {
    FILE *f;
    char *command;
    const char *const *columns;
    bool text;
    json_t *rows;  /* the table's rows, printed by opsout_free() */
    json_t *notes; /* in text mode, printed under the table */
};

opsout *opsout_new(FILE *f, const char *command, const char *const *columns, bool text)
{
    opsout *o = xcalloc(1, sizeof(*o));
    o->f = f;
    o->command = xstrdup(command);
    o->columns = columns;
    o->text = text;
    o->rows = json_array();
    o->notes = json_array();
    return o;
}

bool opsout_mode(const char *name, bool *text)
{
    if (strcmp(name, "auto") == 0)
        *text = isatty(STDOUT_FILENO);
    else if (strcmp(name, "text") == 0 || strcmp(name, "json") == 0)
        *text = name[0] == 't';
    else
        return false;
    return true;
}

static void print_json(opsout *o, json_t *line)
{
    char *s = json_dumps(line, JSON_COMPACT);
    fprintf(o->f, "%s\n", s);
    free(s);
    fflush(o->f);
}

void opsout_note(opsout *o, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (o->text) {
        json_array_append_new(o->notes, json_string(buf));
        return;
    }
    json_t *line = json_pack("{s:s, s:s}", "command", o->command, "note", buf);
    print_json(o, line);
    json_decref(line);
}

void opsout_row(opsout *o, json_t *row)
{
    if (o->text) {
        json_array_append_new(o->rows, json_deep_copy(row));
        return;
    }
    json_t *line = json_pack("{s:s}", "command", o->command);
    json_object_update(line, row);
    print_json(o, line);
    json_decref(line);
}

/* A cell as text: numbers and strings as they are, anything else (null, absent) as "-". */
static char *cell(const json_t *v)
{
    if (json_is_integer(v))
        return xasprintf("%lld", (long long)json_integer_value(v));
    if (json_is_string(v))
        return xstrdup(json_string_value(v));
    if (json_is_boolean(v))
        return xstrdup(json_is_true(v) ? "yes" : "no");
    return xstrdup("-");
}

static void print_table(opsout *o)
{
    size_t ncols = 0;
    while (o->columns[ncols])
        ncols++;
    size_t *width = xcalloc(ncols ? ncols : 1, sizeof(*width));
    for (size_t c = 0; c < ncols; c++)
        width[c] = strlen(o->columns[c]);
    size_t i;
    json_t *row;
    json_array_foreach(o->rows, i, row)
    {
        for (size_t c = 0; c < ncols; c++) {
            char *s = cell(json_object_get(row, o->columns[c]));
            if (strlen(s) > width[c])
                width[c] = strlen(s);
            free(s);
        }
    }
    for (size_t c = 0; c < ncols; c++)
        fprintf(o->f, "%-*s%s", (int)width[c], o->columns[c], c + 1 < ncols ? "  " : "\n");
    json_array_foreach(o->rows, i, row)
    {
        for (size_t c = 0; c < ncols; c++) {
            char *s = cell(json_object_get(row, o->columns[c]));
            /* Numbers right-aligned under their heading, the first column (a name) left. */
            fprintf(o->f, c == 0 ? "%-*s%s" : "%*s%s", (int)width[c], s,
                    c + 1 < ncols ? "  " : "\n");
            free(s);
        }
    }
    free(width);
}

void opsout_free(opsout *o)
{
    if (!o)
        return;
    if (o->text && json_array_size(o->rows) > 0)
        print_table(o);
    size_t i;
    json_t *note;
    json_array_foreach(o->notes, i, note)
    {
        fprintf(o->f, "%s\n", json_string_value(note));
    }
    fflush(o->f);
    json_decref(o->rows);
    json_decref(o->notes);
    free(o->command);
    free(o);
}
