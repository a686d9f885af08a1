/*
 * replay.c: state-processor replay: copies a range of the commands topic back into it, each
 * message to its own partition and in its order, with its headers (less the reply partition). The
 * processors deduplicate the copies of decided commands by id and key, and apply the others:
 * those the database lost, after a restore. PostgreSQL is only read here, to say how many of each.
 */
#include "ops/replay.h"

#include "core/rfc3339.h"
#include "ops/cmdcopy.h"
#include "core/ids.h"
#include "kafka/kafka.h"
#include "core/log.h"
#include "ops/opsout.h"
#include "ops/opsrun.h"
#include "core/service.h"
#include "core/strmap.h"
#include "core/xalloc.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * A command issued before (now - idempotency.retention_s + this margin) is not replayed: the
 * processors may have purged its idempotency record, and would apply it again. The margin
 * covers the clocks of the gateway (ce_time) and of PostgreSQL (finished_at) disagreeing.
 */
#define EXPIRY_MARGIN_MS (5LL * 60 * 1000)

typedef struct replay_config {
    char *pg_conninfo;
    char *topic_prefix;
    long long from_offset;
    char *from_time;
    long long to_offset;
    long long partition;
    bool dry_run;
    long long retention_s;
    char *output;
    long long timeout_ms;
    char *log_level;
} replay_config;

#define CFG(field) offsetof(replay_config, field)

static const config_row replay_config_table[] = {
    {"pg.conninfo", CONFIG_STR, CFG(pg_conninfo), "host=127.0.0.1 port=5432 dbname=cqrs", 0, 0,
     "libpq connection string of the write model (only read: which commands are decided)"},
    {"topic.prefix", CONFIG_STR, CFG(topic_prefix), NULL, 0, 0,
     "prefix of the topic names: <prefix>commands is replayed"},
    {"from_offset", CONFIG_INT, CFG(from_offset), "-1", -1, LLONG_MAX,
     "replay from this offset of each partition (one of from_offset, from_time is required)"},
    {"from_time", CONFIG_STR, CFG(from_time), NULL, 0, 0,
     "replay from the first message appended at or after this RFC 3339 time"},
    {"to_offset", CONFIG_INT, CFG(to_offset), "-1", -1, LLONG_MAX,
     "stop before this offset (-1: at the end each partition has when replay starts)"},
    {"partition", CONFIG_INT, CFG(partition), "-1", -1, 1 << 20,
     "replay only this partition (-1: every partition)"},
    {"dry_run", CONFIG_BOOL, CFG(dry_run), "false", 0, 0,
     "read the range and say what would be replayed; publish nothing"},
    {"idempotency.retention_s", CONFIG_INT, CFG(retention_s), "86400", 1, 315360000,
     "the processors' value: older commands (less 5 min) are not replayed, their records may "
     "be purged"},
    {"output", CONFIG_STR, CFG(output), "auto", 0, 0,
     "auto (a table on a terminal, JSON lines otherwise), text or json"},
    {"timeout_ms", CONFIG_INT, CFG(timeout_ms), "30000", 100, 3600000,
     "how long to wait for an answer from Kafka or PostgreSQL before failing"},
    {"log.level", CONFIG_STR, CFG(log_level), "warn", 0, 0,
     "debug, info, warn or error (the log goes to stderr)"},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};

/* What became of one partition's messages (its range is the opsrun_range of the same index). */
typedef struct part {
    int id;
    long long first; /* offset of the first message taken; -1 before */
    bool started;    /* from_time: a message at or after the time was reached */
    long long messages, replayed, decided, undecided, expired, no_id;
    long long end; /* the partition's end after the last copy Kafka confirmed; -1: none */
} part;

typedef struct replay {
    const replay_config *cfg;
    opsrun *run;
    kafka_consumer *reader; /* the run's */
    char *topic;
    long long from_ms;   /* from_time; -1 with from_offset */
    long long expiry_ms; /* commands issued before are not replayed */
    part *parts;
    opsrun_range *ranges;
    size_t nparts;
} replay;

static part *find_part(replay *rp, int partition)
{
    for (size_t i = 0; i < rp->nparts; i++) {
        if (rp->parts[i].id == partition)
            return &rp->parts[i];
    }
    return NULL;
}

/* Confirmed copies move their partition's end. */
static void on_delivered(int partition, long long offset, void *arg)
{
    part *p = find_part(arg, partition);
    if (p && offset + 1 > p->end)
        p->end = offset + 1;
}

/* The options that cannot be checked one by one. */
static int check_options(replay *rp, char *err, size_t errlen)
{
    const replay_config *c = rp->cfg;
    bool by_time = c->from_time && *c->from_time;
    rp->from_ms = -1;
    if (by_time == (c->from_offset >= 0)) {
        snprintf(err, errlen, "from_offset, from_time: give exactly one of them");
        return -1;
    }
    if (by_time && !rfc3339_parse(c->from_time, &rp->from_ms)) {
        snprintf(err, errlen, "from_time: '%s' is not an RFC 3339 date-time", c->from_time);
        return -1;
    }
    if (c->to_offset >= 0 && c->from_offset > c->to_offset) {
        snprintf(err, errlen, "to_offset: %lld is before from_offset %lld", c->to_offset,
                 c->from_offset);
        return -1;
    }
    rp->expiry_ms = ids_now_ms() - c->retention_s * 1000LL + EXPIRY_MARGIN_MS;
    return 0;
}

/* Each partition's range from its watermarks and the options. */
static int plan(replay *rp, char *err, size_t errlen)
{
    const replay_config *c = rp->cfg;
    int timeout = (int)c->timeout_ms;
    int count = kafka_consumer_partition_count(rp->reader, timeout);
    if (count <= 0) {
        snprintf(err, errlen,
                 "topic %s: no partitions known (does it exist? is Kafka at "
                 "kafka.bootstrap.servers?)",
                 rp->topic);
        return -1;
    }
    if (c->partition >= count) {
        snprintf(err, errlen, "partition: %lld is out of range: %s has %d partitions", c->partition,
                 rp->topic, count);
        return -1;
    }
    rp->nparts = c->partition >= 0 ? 1 : (size_t)count;
    rp->parts = xcalloc(rp->nparts, sizeof(part));
    rp->ranges = xcalloc(rp->nparts, sizeof(opsrun_range));
    int *ids = xcalloc(rp->nparts, sizeof(int));
    long long *by_time = xcalloc(rp->nparts, sizeof(long long));
    int rc = -1;
    for (size_t i = 0; i < rp->nparts; i++)
        ids[i] = rp->parts[i].id = rp->ranges[i].partition =
            c->partition >= 0 ? (int)c->partition : (int)i;
    if (rp->from_ms >= 0 &&
        kafka_consumer_offsets_for_time(rp->reader, ids, rp->nparts, rp->from_ms, by_time, timeout,
                                        err, errlen) != 0)
        goto out;
    for (size_t i = 0; i < rp->nparts; i++) {
        opsrun_range *g = &rp->ranges[i];
        long long low, high;
        if (kafka_consumer_query_watermarks(rp->reader, g->partition, &low, &high, timeout, err,
                                            errlen) != 0)
            goto out;
        g->to = c->to_offset >= 0 && c->to_offset < high ? c->to_offset : high;
        if (rp->from_ms < 0)
            g->from = c->from_offset;
        else /* KAFKA_OFFSET_BEGINNING: the broker could not say, the partition is scanned */
            g->from = by_time[i] == KAFKA_OFFSET_BEGINNING ? low : by_time[i];
        if (g->from < low)
            g->from = low; /* older messages are gone */
        if (g->from > g->to)
            g->from = g->to;
        g->done = g->from >= g->to;
        rp->parts[i].started = rp->from_ms < 0;
        rp->parts[i].first = rp->from_ms < 0 ? g->from : -1;
        rp->parts[i].end = -1;
    }
    rc = 0;
out:
    free(ids);
    free(by_time);
    return rc;
}

static void on_decided(const pgconn_result *r, void *arg)
{
    for (int i = 0; i < pgconn_result_ntuples(r); i++)
        strmap_put(arg, pgconn_result_value(r, i, 0), arg); /* a set: any non-NULL value */
}

/* Adds to decided the ids (n of them) that PostgreSQL holds a decision for. */
static int lookup(replay *rp, char (*ids)[IDS_UUID_LEN], size_t n, strmap *decided, char *err,
                  size_t errlen)
{
    char *list = xmalloc(n * IDS_UUID_LEN + 3);
    size_t len = 0;
    list[len++] = '{';
    for (size_t i = 0; i < n; i++) {
        memcpy(list + len, ids[i], IDS_UUID_LEN - 1);
        len += IDS_UUID_LEN - 1;
        list[len++] = i + 1 < n ? ',' : '}';
    }
    list[len] = '\0';
    const char *v[] = {list};
    int rc = opsrun_query(rp->run,
                          "SELECT id::text FROM commands WHERE id = ANY($1::uuid[]) AND "
                          "status <> 'accepted'",
                          1, v, on_decided, decided, err, errlen);
    free(list);
    return rc;
}

/* Sorts one message of the range into the counts; true when it is to be replayed. */
static bool take(replay *rp, part *p, const kafka_message *m, char id[IDS_UUID_LEN])
{
    if (rp->from_ms >= 0 && !p->started) {
        if (m->timestamp_ms < rp->from_ms)
            return false; /* before the time, in a partition read from its beginning */
        p->started = true;
        p->first = m->offset;
    }
    p->messages++;
    if (!cmdcopy_id(m->headers, m->nheaders, id)) {
        p->no_id++; /* dead-lettered without a record when first read: a copy adds nothing */
        return false;
    }
    for (char *c = id; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    if (cmdcopy_time_ms(m->headers, m->nheaders, m->timestamp_ms) < rp->expiry_ms) {
        p->expired++;
        return false;
    }
    return true;
}

/* Copies one message back to its partition, marked with where it came from. */
static int copy(replay *rp, const kafka_message *m, char *err, size_t errlen)
{
    char mark[48];
    snprintf(mark, sizeof(mark), "%d/%lld", m->partition, m->offset);
    header h[CMDCOPY_MAX_HEADERS];
    size_t nh = cmdcopy_headers(m->headers, m->nheaders, CMDCOPY_REPLAY_MARK, mark, h);
    return opsrun_produce(rp->run, rp->topic, m->partition, m->key, m->key_len, m->value, m->len, h,
                          nh, err, errlen);
}

/* One polled batch of the ranges: sorted, looked up in PostgreSQL, copied (unless a dry run). */
static int process(const kafka_message *const *msgs, size_t n, void *arg, char *err, size_t errlen)
{
    replay *rp = arg;
    size_t *which = xcalloc(n, sizeof(size_t));
    char(*ids)[IDS_UUID_LEN] = xcalloc(n, IDS_UUID_LEN);
    size_t nc = 0;
    for (size_t i = 0; i < n; i++) {
        if (take(rp, find_part(rp, msgs[i]->partition), msgs[i], ids[nc]))
            which[nc++] = i;
    }
    strmap *decided = strmap_new();
    int rc = nc > 0 ? lookup(rp, ids, nc, decided, err, errlen) : 0;
    for (size_t k = 0; k < nc && rc == 0; k++) {
        const kafka_message *m = msgs[which[k]];
        part *p = find_part(rp, m->partition);
        p->replayed++;
        if (strmap_get(decided, ids[k]))
            p->decided++;
        else
            p->undecided++;
        if (!rp->cfg->dry_run)
            rc = copy(rp, m, err, errlen);
    }
    strmap_free(decided);
    free(which);
    free(ids);
    return rc;
}

static void add_counts(json_t *row, const part *p)
{
    json_object_set_new(row, "messages", json_integer(p->messages));
    json_object_set_new(row, "replayed", json_integer(p->replayed));
    json_object_set_new(row, "already_decided", json_integer(p->decided));
    json_object_set_new(row, "not_decided", json_integer(p->undecided));
    json_object_set_new(row, "expired", json_integer(p->expired));
    json_object_set_new(row, "no_command_id", json_integer(p->no_id));
}

static void report(const replay *rp, bool text)
{
    static const char *const columns[] = {
        "partition",   "from_offset", "to_offset",     "messages",   "replayed", "already_decided",
        "not_decided", "expired",     "no_command_id", "end_offset", NULL};
    opsout *o = opsout_new(stdout, "replay", columns, text);
    bool dry = rp->cfg->dry_run;
    part total = {0};
    for (size_t i = 0; i < rp->nparts; i++) {
        const part *p = &rp->parts[i];
        const opsrun_range *g = &rp->ranges[i];
        json_t *row = json_pack("{s:i, s:I, s:I}", "partition", p->id, "from_offset",
                                (json_int_t)(p->first >= 0 ? p->first : g->to), "to_offset",
                                (json_int_t)g->to);
        add_counts(row, p);
        json_object_set_new(row, "end_offset", p->end >= 0 ? json_integer(p->end) : json_null());
        json_object_set_new(row, "dry_run", json_boolean(dry));
        opsout_row(o, row);
        json_decref(row);
        total.messages += p->messages, total.replayed += p->replayed;
        total.decided += p->decided, total.undecided += p->undecided;
        total.expired += p->expired, total.no_id += p->no_id;
    }
    json_t *row = json_pack("{s:s}", "partition", "total");
    add_counts(row, &total);
    json_object_set_new(row, "dry_run", json_boolean(dry));
    opsout_row(o, row);
    json_decref(row);
    if (dry)
        opsout_note(o,
                    "dry run: %lld of %lld messages of %s would be replayed (%lld already "
                    "decided, %lld not decided); nothing was published",
                    total.replayed, total.messages, rp->topic, total.decided, total.undecided);
    else
        opsout_note(o,
                    "replayed %lld of %lld messages of %s (%lld already decided, %lld not "
                    "decided); the processors apply them once they reach end_offset",
                    total.replayed, total.messages, rp->topic, total.decided, total.undecided);
    if (total.expired > 0)
        opsout_note(o,
                    "%lld not replayed: their commands are older than idempotency.retention_s "
                    "(less 5 minutes), whose records may be purged: a copy could apply twice",
                    total.expired);
    opsout_free(o);
}

static int run(replay *rp, const config_props *kafka, bool text, char *err, size_t errlen)
{
    rp->run =
        opsrun_new(rp->cfg->pg_conninfo, kafka, rp->cfg->timeout_ms, on_delivered, rp, err, errlen);
    if (!rp->run)
        return -1;
    rp->reader = opsrun_reader(rp->run, kafka, rp->topic, err, errlen);
    if (!rp->reader || plan(rp, err, errlen) != 0 ||
        opsrun_read(rp->run, rp->ranges, rp->nparts, process, rp, err, errlen) != 0)
        return -1;
    if (!rp->cfg->dry_run && opsrun_flush(rp->run, err, errlen) != 0)
        return -1;
    report(rp, text);
    return 0;
}

int replay_main(int argc, char **argv)
{
    replay_config cfg = {0};
    config_props kafka = {0};
    replay rp = {.cfg = &cfg};
    char err[512];
    int rc = EXIT_FAILURE;
    char **args = xcalloc((size_t)argc + 1, sizeof(char *));
    args[0] = "state-processor replay"; /* the usage line names the subcommand */
    for (int i = 1; i < argc; i++)
        args[i] = argv[i];
    if (!service_setup("replay",
                       "Copies a range of the commands topic back into it, each message to its "
                       "partition and in its order; the processors apply once what PostgreSQL "
                       "lost and deduplicate the rest. Runs beside the processors.",
                       replay_config_table, &cfg, &kafka, argc, args, &rc))
        goto out;
    rc = EXIT_FAILURE;
    bool text = false;
    if (!opsout_mode(cfg.output, &text)) {
        snprintf(err, sizeof(err), "output: '%s' is not auto, text or json", cfg.output);
        log_kv(LOG_FATAL, "bad configuration", LOG_FIELDS("error", err));
        goto out;
    }
    if (check_options(&rp, err, sizeof(err)) != 0) {
        log_kv(LOG_FATAL, "bad configuration", LOG_FIELDS("error", err));
        goto out;
    }
    rp.topic = xasprintf("%scommands", cfg.topic_prefix);
    if (run(&rp, &kafka, text, err, sizeof(err)) != 0) {
        log_kv(LOG_FATAL, "replay failed", LOG_FIELDS("error", err));
        goto out;
    }
    rc = EXIT_SUCCESS;
out:
    opsrun_free(rp.run);
    free(rp.parts);
    free(rp.ranges);
    free(rp.topic);
    config_free(replay_config_table, &cfg);
    config_props_free(&kafka);
    free(args);
    return rc;
}
