/*
 * redrive.c: state-processor redrive: puts dead-lettered commands back into the commands topic,
 * selected by reason, time and id. The processor recorded each as rejected when it dead-lettered
 * it, and would answer a plain copy with that decision; so each command's record is first reset
 * to "accepted" by an UPDATE that matches only the rejection one of its own dead letters caused
 * (ADR 0011), and only a command so reset is copied back. A command applied since, or decided
 * for another cause, is left alone; a second redrive of the same dead letter finds nothing to
 * reset.
 */
#include "ops/redrive.h"

#include "ops/cmdcopy.h"
#include "ops/deadletter.h"
#include "kafka/kafka.h"
#include "core/log.h"
#include "ops/opsout.h"
#include "ops/opsrun.h"
#include "core/service.h"
#include "core/xalloc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct redrive_config {
    char *pg_conninfo;
    char *topic_prefix;
    char *reason;
    char *since;
    char *until;
    char *id;
    bool dry_run;
    char *output;
    long long timeout_ms;
    char *log_level;
} redrive_config;

#define CFG(field) offsetof(redrive_config, field)

static const config_row redrive_config_table[] = {
    {"pg.conninfo", CONFIG_STR, CFG(pg_conninfo), "host=127.0.0.1 port=5432 dbname=cqrs", 0, 0,
     "libpq connection string of the write model"},
    {"topic.prefix", CONFIG_STR, CFG(topic_prefix), NULL, 0, 0,
     "prefix of the topic names: <prefix>commands.dlq is read, <prefix>commands written"},
    {"reason", CONFIG_STR, CFG(reason), NULL, 0, 0,
     "only dead letters of this reason: bad-envelope, unknown-command, malformed-payload, "
     "invalid-payload (empty: any)"},
    {"since", CONFIG_STR, CFG(since), NULL, 0, 0,
     "only dead letters written at or after this RFC 3339 time (empty: no bound)"},
    {"until", CONFIG_STR, CFG(until), NULL, 0, 0,
     "only dead letters written before this RFC 3339 time (empty: no bound)"},
    {"id", CONFIG_STR, CFG(id), NULL, 0, 0,
     "only these command ids (repeat --id, or separate them with commas; empty: any)"},
    {"dry_run", CONFIG_BOOL, CFG(dry_run), "false", 0, 0,
     "say what would be redriven; change and publish nothing"},
    {"output", CONFIG_STR, CFG(output), "auto", 0, 0,
     "auto (a table on a terminal, JSON lines otherwise), text or json"},
    {"timeout_ms", CONFIG_INT, CFG(timeout_ms), "30000", 100, 3600000,
     "how long to wait for an answer from Kafka or PostgreSQL before failing"},
    {"log.level", CONFIG_STR, CFG(log_level), "warn", 0, 0,
     "debug, info, warn or error (the log goes to stderr; info names each command redriven)"},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};

/*
 * The record of command $1 holds the rejection one of its dead letters caused: rejected (400,
 * as every dead letter's record is) by the message at one of the positions in $2
 * ([{"p": partition, "o": offset}, ...], the dlq_source of each of its dead letters), or already
 * reset by a redrive of one of them and not decided again (a redrive whose copy did not reach
 * Kafka must be able to run again). The processor writes a record's position with every decision.
 */
#define DEAD_LETTER_REJECTION                                                                      \
    "((c.status = 'rejected' AND c.http_status = 400) OR c.status = 'accepted') AND EXISTS "       \
    "(SELECT 1 FROM jsonb_to_recordset($2::jsonb) AS s(p int, o bigint) "                          \
    "WHERE s.p = c.kafka_partition AND s.o = c.kafka_offset)"

/* Back to "taken, not decided": the processor applies the next copy of the id as new. */
static const char reset_sql[] =
    "UPDATE commands c SET status = 'accepted', http_status = NULL, result = NULL, "
    "version = NULL, finished_at = NULL WHERE c.id = $1::uuid AND " DEAD_LETTER_REJECTION
    " RETURNING c.id";

static const char classify_sql[] =
    "SELECT c.status, " DEAD_LETTER_REJECTION " FROM commands c WHERE c.id = $1::uuid";

/* A selected dead letter, copied out of the poll that read it. */
typedef struct letter {
    deadletter d;
    int partition; /* in the dead-letter topic */
    long long offset;
    char *key;
    size_t key_len;
    char *value;
    size_t len;
    header *h; /* names and values owned */
    size_t nh;
} letter;

/* What became of the dead letters of one reason. */
typedef struct tally {
    char reason[64];
    long long dead, selected, redriven, applied, otherwise, no_record, no_id, duplicates;
} tally;

typedef struct redrive {
    const redrive_config *cfg;
    deadletter_filter filter;
    opsrun *run;
    char *dlq, *commands;
    opsrun_range *ranges;
    size_t nranges;
    letter *letters; /* selected, in the order read */
    size_t nletters, cap;
    json_t *sources; /* command id -> [{"p", "o"}] of every dead letter it has */
    tally *tallies;
    size_t ntallies;
    long long foreign; /* messages of the topic that are no dead letters of ours */
} redrive;

static tally *tally_of(redrive *rd, const char *reason)
{
    for (size_t i = 0; i < rd->ntallies; i++) {
        if (strcmp(rd->tallies[i].reason, reason) == 0)
            return &rd->tallies[i];
    }
    rd->tallies = xrealloc(rd->tallies, (rd->ntallies + 1) * sizeof(tally));
    tally *t = &rd->tallies[rd->ntallies++];
    memset(t, 0, sizeof(*t));
    snprintf(t->reason, sizeof(t->reason), "%s", reason);
    return t;
}

static void keep(redrive *rd, const kafka_message *m, const deadletter *d)
{
    if (rd->nletters == rd->cap) {
        rd->cap = rd->cap ? rd->cap * 2 : 64;
        rd->letters = xrealloc(rd->letters, rd->cap * sizeof(letter));
    }
    letter *l = &rd->letters[rd->nletters++];
    l->d = *d;
    l->partition = m->partition;
    l->offset = m->offset;
    l->key = m->key ? xstrndup(m->key, m->key_len) : NULL;
    l->key_len = m->key ? m->key_len : 0;
    l->value = m->value ? xstrndup(m->value, m->len) : NULL;
    l->len = m->value ? m->len : 0;
    l->h = xcalloc(m->nheaders + 1, sizeof(header));
    for (size_t i = 0; i < m->nheaders; i++) {
        l->h[i].name = xstrdup(m->headers[i].name);
        l->h[i].value =
            m->headers[i].value ? xstrndup(m->headers[i].value, m->headers[i].len) : NULL;
        l->h[i].len = m->headers[i].len;
    }
    l->nh = m->nheaders;
}

/* Each dead letter read: counted, its source remembered, kept when selected. */
static int gather(const kafka_message *const *msgs, size_t n, void *arg, char *err, size_t errlen)
{
    (void)err, (void)errlen;
    redrive *rd = arg;
    for (size_t i = 0; i < n; i++) {
        deadletter d;
        if (!deadletter_parse(msgs[i], &d)) {
            rd->foreign++;
            continue;
        }
        tally *t = tally_of(rd, d.reason);
        t->dead++;
        if (d.has_id) {
            json_t *list = json_object_get(rd->sources, d.id);
            if (!list) {
                list = json_array();
                json_object_set_new(rd->sources, d.id, list);
            }
            json_array_append_new(list, json_pack("{s:i, s:I}", "p", d.source_partition, "o",
                                                  (json_int_t)d.source_offset));
        }
        if (deadletter_selected(&rd->filter, &d)) {
            t->selected++;
            keep(rd, msgs[i], &d);
        }
    }
    return 0;
}

/* The whole dead-letter topic, up to its end now: the time selection is made on each letter. */
static int read_letters(redrive *rd, kafka_consumer *reader, char *err, size_t errlen)
{
    int timeout = (int)rd->cfg->timeout_ms;
    int count = kafka_consumer_partition_count(reader, timeout);
    if (count <= 0) {
        snprintf(err, errlen,
                 "topic %s: no partitions known (does it exist? is Kafka at "
                 "kafka.bootstrap.servers?)",
                 rd->dlq);
        return -1;
    }
    rd->nranges = (size_t)count;
    rd->ranges = xcalloc(rd->nranges, sizeof(opsrun_range));
    for (size_t i = 0; i < rd->nranges; i++) {
        opsrun_range *g = &rd->ranges[i];
        g->partition = (int)i;
        if (kafka_consumer_query_watermarks(reader, g->partition, &g->from, &g->to, timeout, err,
                                            errlen) != 0)
            return -1;
        g->done = g->from >= g->to;
    }
    return opsrun_read(rd->run, rd->ranges, rd->nranges, gather, rd, err, errlen);
}

typedef struct answer {
    bool found;      /* a row came back */
    bool applied;    /* classify: status applied */
    bool redrivable; /* classify: the rejection of one of its dead letters */
} answer;

static void on_answer(const pgconn_result *r, void *arg)
{
    answer *a = arg;
    a->found = pgconn_result_ntuples(r) > 0;
    if (a->found && pgconn_result_nfields(r) == 2) {
        a->applied = strcmp(pgconn_result_value(r, 0, 0), "applied") == 0;
        const char *m = pgconn_result_value(r, 0, 1);
        a->redrivable = m && strcmp(m, "t") == 0;
    }
}

/* Publishes the letter's command to the partition it was consumed from, marked as redriven. */
static int copy(redrive *rd, const letter *l, char *err, size_t errlen)
{
    char mark[48];
    snprintf(mark, sizeof(mark), "%d/%lld", l->partition, l->offset);
    header h[CMDCOPY_MAX_HEADERS];
    size_t nh = cmdcopy_headers(l->h, l->nh < KAFKA_MAX_HEADERS ? l->nh : KAFKA_MAX_HEADERS,
                                CMDCOPY_REDRIVE_MARK, mark, h);
    return opsrun_produce(rd->run, rd->commands, l->d.source_partition, l->key, l->key_len,
                          l->value, l->len, h, nh, err, errlen);
}

/* One selected dead letter: reset and copied back, or counted for why not. */
static int redrive_one(redrive *rd, const letter *l, json_t *seen, char *err, size_t errlen)
{
    tally *t = tally_of(rd, l->d.reason);
    if (!l->d.has_id) {
        t->no_id++; /* nothing to find its record by: it was never recorded */
        return 0;
    }
    if (json_object_get(seen, l->d.id)) {
        t->duplicates++; /* the same command dead-lettered again: one redrive for all */
        return 0;
    }
    json_object_set_new(seen, l->d.id, json_true());
    char *sources = json_dumps(json_object_get(rd->sources, l->d.id), JSON_COMPACT);
    const char *v[] = {l->d.id, sources};
    answer reset = {0}, a = {0};
    int rc = 0;
    if (!rd->cfg->dry_run)
        rc = opsrun_query(rd->run, reset_sql, 2, v, on_answer, &reset, err, errlen);
    if (rc == 0 && !reset.found)
        rc = opsrun_query(rd->run, classify_sql, 2, v, on_answer, &a, err, errlen);
    free(sources);
    if (rc != 0)
        return -1;
    if (reset.found || (rd->cfg->dry_run && a.redrivable)) {
        t->redriven++;
        if (rd->cfg->dry_run)
            return 0;
        char where[48];
        snprintf(where, sizeof(where), "%d/%lld", l->partition, l->offset);
        log_kv(LOG_INFO, "redriven",
               LOG_FIELDS("command_id", l->d.id, "reason", l->d.reason, "dead_letter", where));
        return copy(rd, l, err, errlen);
    }
    if (!a.found)
        t->no_record++; /* purged after idempotency.retention_s, or never recorded */
    else if (a.applied)
        t->applied++;
    else
        t->otherwise++; /* another decision than this dead letter's: not ours to revisit */
    return 0;
}

static void add_counts(json_t *row, const tally *t)
{
    json_object_set_new(row, "dead_letters", json_integer(t->dead));
    json_object_set_new(row, "selected", json_integer(t->selected));
    json_object_set_new(row, "redriven", json_integer(t->redriven));
    json_object_set_new(row, "already_applied", json_integer(t->applied));
    json_object_set_new(row, "decided_otherwise", json_integer(t->otherwise));
    json_object_set_new(row, "no_record", json_integer(t->no_record));
    json_object_set_new(row, "no_command_id", json_integer(t->no_id));
    json_object_set_new(row, "duplicates", json_integer(t->duplicates));
}

static void report(redrive *rd, bool text)
{
    static const char *const columns[] = {"reason",    "dead_letters",    "selected",
                                          "redriven",  "already_applied", "decided_otherwise",
                                          "no_record", "no_command_id",   "duplicates",
                                          NULL};
    opsout *o = opsout_new(stdout, "redrive", columns, text);
    bool dry = rd->cfg->dry_run;
    tally total = {.reason = "total"};
    for (size_t i = 0; i < rd->ntallies; i++) {
        const tally *t = &rd->tallies[i];
        json_t *row = json_pack("{s:s}", "reason", t->reason);
        add_counts(row, t);
        json_object_set_new(row, "dry_run", json_boolean(dry));
        opsout_row(o, row);
        json_decref(row);
        total.dead += t->dead, total.selected += t->selected, total.redriven += t->redriven;
        total.applied += t->applied, total.otherwise += t->otherwise;
        total.no_record += t->no_record, total.no_id += t->no_id;
        total.duplicates += t->duplicates;
    }
    json_t *row = json_pack("{s:s}", "reason", "total");
    add_counts(row, &total);
    json_object_set_new(row, "dry_run", json_boolean(dry));
    opsout_row(o, row);
    json_decref(row);
    if (dry)
        opsout_note(o,
                    "dry run: %lld of %lld selected dead letters would be redriven into %s; "
                    "nothing was changed or published",
                    total.redriven, total.selected, rd->commands);
    else
        opsout_note(o,
                    "redrove %lld of %lld selected dead letters into %s; the processors apply "
                    "each command at most once",
                    total.redriven, total.selected, rd->commands);
    if (rd->foreign > 0)
        opsout_note(o,
                    "%lld messages of %s are not dead letters of the processor (no dlq_reason "
                    "or dlq_source) and were left alone",
                    rd->foreign, rd->dlq);
    opsout_free(o);
}

static int run(redrive *rd, const config_props *kafka, bool text, char *err, size_t errlen)
{
    rd->run = opsrun_new(rd->cfg->pg_conninfo, kafka, rd->cfg->timeout_ms, NULL, NULL, err, errlen);
    if (!rd->run)
        return -1;
    kafka_consumer *reader = opsrun_reader(rd->run, kafka, rd->dlq, err, errlen);
    if (!reader || read_letters(rd, reader, err, errlen) != 0)
        return -1;
    json_t *seen = json_object();
    int rc = 0;
    for (size_t i = 0; i < rd->nletters && rc == 0; i++)
        rc = redrive_one(rd, &rd->letters[i], seen, err, errlen);
    json_decref(seen);
    if (rc == 0 && !rd->cfg->dry_run && opsrun_flush(rd->run, err, errlen) != 0)
        rc = -1;
    if (rc != 0) {
        /* A command reset but not confirmed by Kafka stays "accepted" at its dead letter's
           position: running the same redrive again publishes it again, at most once applied. */
        size_t n = strlen(err);
        snprintf(err + n, errlen - n, "; running the same redrive again is safe");
        return -1;
    }
    report(rd, text);
    return 0;
}

static void free_letters(redrive *rd)
{
    for (size_t i = 0; i < rd->nletters; i++) {
        letter *l = &rd->letters[i];
        for (size_t k = 0; k < l->nh; k++) {
            free((char *)(uintptr_t)l->h[k].name);
            free((char *)(uintptr_t)l->h[k].value);
        }
        free(l->h);
        free(l->key);
        free(l->value);
    }
    free(rd->letters);
}

/* argv with the usage name of the subcommand and every --id joined into one (comma list). */
static char **arguments(int argc, char **argv, int *n)
{
    char **args = xcalloc((size_t)argc + 2, sizeof(char *));
    char *ids = NULL;
    *n = 0;
    args[(*n)++] = "state-processor redrive";
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--id=", 5) != 0) {
            args[(*n)++] = argv[i];
            continue;
        }
        char *joined = ids ? xasprintf("%s,%s", ids, argv[i] + 5) : xasprintf("%s", argv[i]);
        free(ids);
        ids = joined;
    }
    if (ids)
        args[(*n)++] = ids;
    return args;
}

int redrive_main(int argc, char **argv)
{
    redrive_config cfg = {0};
    config_props kafka = {0};
    redrive rd = {.cfg = &cfg};
    char err[600];
    int rc = EXIT_FAILURE, nargs;
    char **args = arguments(argc, argv, &nargs);
    bool joined = nargs > 1 && strncmp(args[nargs - 1], "--id=", 5) == 0;
    if (!service_setup("redrive",
                       "Puts dead-lettered commands (<prefix>commands.dlq) back into the commands "
                       "topic, selected by reason, time and id; each command's dead-letter "
                       "rejection is reset first, so that it applies at most once. Runs beside "
                       "the processors.",
                       redrive_config_table, &cfg, &kafka, nargs, args, &rc))
        goto out;
    rc = EXIT_FAILURE;
    bool text = false;
    if (!opsout_mode(cfg.output, &text)) {
        snprintf(err, sizeof(err), "output: '%s' is not auto, text or json", cfg.output);
        log_kv(LOG_FATAL, "bad configuration", LOG_FIELDS("error", err));
        goto out;
    }
    if (deadletter_filter_init(&rd.filter, cfg.reason, cfg.since, cfg.until, cfg.id, err,
                               sizeof(err)) != 0) {
        log_kv(LOG_FATAL, "bad configuration", LOG_FIELDS("error", err));
        goto out;
    }
    rd.dlq = xasprintf("%scommands.dlq", cfg.topic_prefix);
    rd.commands = xasprintf("%scommands", cfg.topic_prefix);
    rd.sources = json_object();
    if (run(&rd, &kafka, text, err, sizeof(err)) != 0) {
        log_kv(LOG_FATAL, "redrive failed", LOG_FIELDS("error", err));
        goto out;
    }
    rc = EXIT_SUCCESS;
out:
    opsrun_free(rd.run);
    deadletter_filter_clear(&rd.filter);
    free_letters(&rd);
    free(rd.ranges);
    free(rd.tallies);
    json_decref(rd.sources);
    free(rd.dlq);
    free(rd.commands);
    config_free(redrive_config_table, &cfg);
    config_props_free(&kafka);
    if (joined)
        free(args[nargs - 1]);
    free(args);
    return rc;
}
