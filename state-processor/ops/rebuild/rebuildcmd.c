/* rebuildcmd.c: state-processor rebuild: configuration, the rebuild, its result on stdout. */
#include "ops/rebuild/rebuildcmd.h"

#include "core/log.h"
#include "ops/opsout.h"
#include "ops/rebuild/rebuild.h"
#include "core/service.h"
#include "core/xalloc.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static const char *status_name(rebuild_status st)
{
    return st == REBUILD_DONE ? "done" : st == REBUILD_INTERRUPTED ? "interrupted" : "failed";
}

static json_t *result_json(const rebuild_config *cfg, const rebuild_result *res, rebuild_status st,
                           const char *err)
{
    json_t *j = json_pack(
        "{s:s, s:s, s:s, s:s, s:b, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f}",
        "type", "result", "task", "rebuild", "aggregate", cfg->type, "status", status_name(st),
        "dry_run", cfg->dry_run, "swapped", res->swapped, "events_read",
        (json_int_t)res->events_read, "events_projected", (json_int_t)res->events_projected,
        "events_skipped", (json_int_t)res->events_skipped, "rows_changed",
        (json_int_t)res->rows_changed, "rows_refused", (json_int_t)res->rows_refused,
        "rows_before_time", (json_int_t)res->rows_before_time, "rows_caught_up",
        (json_int_t)res->rows_caught_up, "rows", (json_int_t)res->rows, "swap_attempts",
        (json_int_t)res->swap_attempts, "lock_held_ms", (json_int_t)res->lock_held_ms, "elapsed_s",
        (double)(long long)(res->elapsed_s * 1000 + 0.5) / 1000);
    if (st != REBUILD_DONE)
        json_object_set_new(j, "error", json_string(err));
    if (cfg->from_time && *cfg->from_time)
        json_object_set_new(j, "from_time", json_string(cfg->from_time));
    if (cfg->dry_run && st == REBUILD_DONE) {
        json_object_set_new(
            j, "differences",
            json_pack("{s:I, s:I, s:I, s:I}", "total",
                      (json_int_t)(res->differing + res->only_live + res->only_rebuilt),
                      "differing", (json_int_t)res->differing, "only_live",
                      (json_int_t)res->only_live, "only_rebuilt", (json_int_t)res->only_rebuilt));
        json_object_set_new(j, "live_rows", json_integer(res->live_rows));
        json_object_set_new(j, "checksum_live", json_string(res->checksum_live));
        json_object_set_new(j, "checksum_rebuilt", json_string(res->checksum_rebuilt));
        json_object_set_new(j, "examples",
                            res->examples ? json_incref(res->examples) : json_array());
    }
    return j;
}

static void print_text(FILE *f, const rebuild_config *cfg, const rebuild_result *res,
                       rebuild_status st, const char *err)
{
    fprintf(f, "rebuild of %s%s: ", cfg->type, cfg->dry_run ? " (dry run)" : "");
    if (st != REBUILD_DONE)
        fprintf(f, "%s: %s (nothing swapped, no shadow table left)\n", status_name(st), err);
    else if (res->swapped)
        fprintf(f, "swapped in %.3f s\n", res->elapsed_s);
    else
        fprintf(f, "compared in %.3f s, nothing swapped; the shadow table was dropped\n",
                res->elapsed_s);
    fprintf(f, "  events read       %lld (of this type %lld, cannot be projected %lld)\n",
            res->events_read, res->events_projected, res->events_skipped);
    fprintf(f,
            "  rows              %lld (written from events %lld, copied before from_time %lld, "
            "caught up from the live table %lld, refused %lld)\n",
            res->rows, res->rows_changed, res->rows_before_time, res->rows_caught_up,
            res->rows_refused);
    if (res->swapped)
        fprintf(f, "  swap              %lld attempt%s, live table locked for %lld ms\n",
                res->swap_attempts, res->swap_attempts == 1 ? "" : "s", res->lock_held_ms);
    if (!cfg->dry_run || st != REBUILD_DONE)
        return;
    fprintf(f,
            "  differences       %lld rows would change: %lld differ, %lld only in the live table, "
            "%lld only rebuilt (live table: %lld rows)\n",
            res->differing + res->only_live + res->only_rebuilt, res->differing, res->only_live,
            res->only_rebuilt, res->live_rows);
    fprintf(f, "  checksums         live %s, rebuilt %s\n", res->checksum_live,
            res->checksum_rebuilt);
    size_t i;
    json_t *e;
    json_array_foreach(res->examples, i, e)
    {
        char lv[24] = "none", rv[24] = "none"; /* none: the row is missing on that side */
        const json_t *l = json_object_get(e, "live_version"),
                     *b = json_object_get(e, "rebuilt_version");
        if (json_is_integer(l))
            snprintf(lv, sizeof(lv), "%lld", (long long)json_integer_value(l));
        if (json_is_integer(b))
            snprintf(rv, sizeof(rv), "%lld", (long long)json_integer_value(b));
        fprintf(f, "    %s/%s: live version %s, rebuilt version %s\n",
                json_string_value(json_object_get(e, "tenant")),
                json_string_value(json_object_get(e, "id")), lv, rv);
    }
}

int rebuildcmd_main(int argc, char **argv)
{
    rebuild_config cfg = {0};
    config_props kafka = {0};
    char err[512];
    int rc = EXIT_FAILURE;
    char **args = xcalloc((size_t)argc + 1, sizeof(char *));
    args[0] = "state-processor rebuild";
    for (int i = 1; i < argc; i++)
        args[i] = argv[i];
    rebuild *r = NULL;

    if (!service_setup("rebuild",
                       "Rebuilds one projection table from the events topic while the live table "
                       "keeps serving reads: into a shadow table, then swapped in one "
                       "transaction. Progress on stderr, the result on stdout.",
                       rebuild_config_table, &cfg, &kafka, argc, args, &rc))
        goto out;
    rc = EXIT_FAILURE;
    bool text;
    if (!opsout_mode(cfg.output, &text)) {
        snprintf(err, sizeof(err), "output: '%s' is not auto, text or json", cfg.output);
        log_kv(LOG_FATAL, "bad configuration", LOG_FIELDS("error", err));
        goto out;
    }
    r = rebuild_new(&cfg, &kafka, stderr, isatty(STDERR_FILENO), err, sizeof(err));
    if (!r) {
        log_kv(LOG_FATAL, "bad configuration", LOG_FIELDS("error", err));
        goto out;
    }
    rebuild_result res;
    rebuild_status st = rebuild_run(r, &res, err, sizeof(err));
    if (st != REBUILD_DONE)
        log_kv(LOG_ERROR, "rebuild did not complete",
               LOG_FIELDS("aggregate", cfg.type, "status", status_name(st), "error", err));
    if (text) {
        print_text(stdout, &cfg, &res, st, err);
    } else {
        json_t *j = result_json(&cfg, &res, st, err);
        char *s = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(9));
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(j);
    }
    json_decref(res.examples);
    rc = st == REBUILD_DONE ? EXIT_SUCCESS : st == REBUILD_INTERRUPTED ? 130 : EXIT_FAILURE;
out:
    rebuild_free(r);
    config_free(rebuild_config_table, &cfg);
    config_props_free(&kafka);
    free(args);
    return rc;
}

#define REBUILD_AT(field) offsetof(rebuild_config, field)
_Static_assert(offsetof(rebuild_config, proc) == 0, "rebuild_config starts with the shared keys");

const config_row rebuild_config_table[] = {
    {ROW_PG_CONNINFO},
    {ROW_TOPIC_PREFIX},
    {ROW_SCHEMAS_DIR},
    {"type", CONFIG_STR, REBUILD_AT(type), NULL, 0, 0,
     "the aggregate type whose projection table is rebuilt (required)"},
    {"from_time", CONFIG_STR, REBUILD_AT(from_time), NULL, 0, 0,
     "RFC 3339 time: rows last changed before it are copied from the live table, the events are "
     "read from the first offset at that time (empty: the whole topic)"},
    {"from_time.slack_ms", CONFIG_INT, REBUILD_AT(from_time_slack_ms), "60000", 0, 86400000,
     "events are read from this long before from_time, for clocks that differ between the "
     "processor (event times) and Kafka (message timestamps)"},
    {"dry_run", CONFIG_BOOL, REBUILD_AT(dry_run), "false", 0, 0,
     "build and compare only: report the rows a swap would change, then drop the shadow table"},
    {"output", CONFIG_STR, REBUILD_AT(output), "auto", 0, 0,
     "the result on stdout: auto (text on a terminal, else JSON), text or json"},
    {"batch.max", CONFIG_INT, PROCCONFIG_AT(batch_max), "1000", 1, 100000,
     "most events per upsert"},
    {"swap.lock_timeout_ms", CONFIG_INT, REBUILD_AT(lock_timeout_ms), "2000", 10, 600000,
     "how long the swap waits for the live table's lock (reads wait behind it meanwhile)"},
    {"swap.attempts", CONFIG_INT, REBUILD_AT(swap_attempts), "5", 1, 1000,
     "swap transactions tried when the lock does not come within swap.lock_timeout_ms"},
    {ROW_TENANT_DEFAULT},
    {ROW_LOG_LEVEL},
    {"pg.startup_timeout_s", CONFIG_INT, PROCCONFIG_AT(startup_timeout_s), "30", 1, 3600,
     "how long the first connection to PostgreSQL may take"},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};
