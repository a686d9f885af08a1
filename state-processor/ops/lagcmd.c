/* lagcmd.c: state-processor lag: stored offsets from PostgreSQL, watermarks from Kafka, the lag. */
#include "ops/lagcmd.h"

#include "kafka/kafka.h"
#include "core/log.h"
#include "loop/offsetlog.h"
#include "pg/pgconn.h"
#include "ops/opsout.h"
#include "ops/pgwait.h"
#include "core/service.h"
#include "core/xalloc.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char stored_sql[] =
    "SELECT partition, next_offset, cluster_id FROM consumer_offsets WHERE group_id = $1 AND "
    "topic = $2 ORDER BY partition";

static bool counts_this_log(const lagcmd_row *row)
{
    return row->stored >= 0 && !row->other_log && row->stored <= row->high;
}

long long lagcmd_lag(const lagcmd_row *row)
{
    long long from = counts_this_log(row) ? row->stored : row->low;
    return row->high > from ? row->high - from : 0;
}

json_t *lagcmd_group_json(const char *role, const char *group, const char *topic,
                          const lagcmd_row *rows, size_t n)
{
    json_t *parts = json_array();
    long long total = 0;
    for (size_t i = 0; i < n; i++) {
        const lagcmd_row *r = &rows[i];
        long long lag = lagcmd_lag(r);
        total += lag;
        json_array_append_new(parts,
                              json_pack("{s:i, s:o, s:b, s:I, s:I, s:I}", "partition", r->partition,
                                        "stored_offset",
                                        r->stored >= 0 ? json_integer(r->stored) : json_null(),
                                        "stored_counts_this_log", counts_this_log(r),
                                        "low_watermark", (json_int_t)r->low, "high_watermark",
                                        (json_int_t)r->high, "lag", (json_int_t)lag));
    }
    return json_pack("{s:s, s:s, s:s, s:I, s:o}", "role", role, "group", group, "topic", topic,
                     "lag", (json_int_t)total, "partitions", parts);
}

#define TABLE_ROW "%-10s %-24s %-24s %9s %12s %12s %10s\n"

void lagcmd_print_table(FILE *f, const char *role, const char *group, const char *topic,
                        const lagcmd_row *rows, size_t n)
{
    long long stored = 0, high = 0, lag = 0;
    for (size_t i = 0; i < n; i++) {
        char part[16], st[24], hi[24], lg[24];
        snprintf(part, sizeof(part), "%d", rows[i].partition);
        snprintf(st, sizeof(st), rows[i].stored >= 0 ? "%lld" : "-", rows[i].stored);
        snprintf(hi, sizeof(hi), "%lld", rows[i].high);
        snprintf(lg, sizeof(lg), "%lld", lagcmd_lag(&rows[i]));
        fprintf(f, TABLE_ROW, role, group, topic, part, st, hi, lg);
        stored += rows[i].stored >= 0 ? rows[i].stored : 0;
        high += rows[i].high;
        lag += lagcmd_lag(&rows[i]);
    }
    char st[24], hi[24], lg[24];
    snprintf(st, sizeof(st), "%lld", stored);
    snprintf(hi, sizeof(hi), "%lld", high);
    snprintf(lg, sizeof(lg), "%lld", lag);
    fprintf(f, TABLE_ROW, role, group, topic, "total", st, hi, lg);
}

static const char commands_sql[] =
    "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at)), 0)::bigint, "
    "(SELECT id FROM commands WHERE status = 'accepted' ORDER BY created_at LIMIT 1), "
    "(SELECT count(*) FROM commands WHERE status = 'abandoned') FROM commands "
    "WHERE status = 'accepted'";

json_t *lagcmd_commands_json(const lagcmd_commands *c)
{
    return json_pack("{s:I, s:I, s:o, s:I}", "accepted", (json_int_t)c->accepted,
                     "oldest_accepted_s", (json_int_t)c->oldest_s, "oldest_accepted_id",
                     *c->oldest_id ? json_string(c->oldest_id) : json_null(), "abandoned",
                     (json_int_t)c->abandoned);
}

void lagcmd_print_commands(FILE *f, const lagcmd_commands *c)
{
    if (c->accepted > 0)
        fprintf(f, "commands: %lld accepted, the oldest for %lld s (%s); %lld abandoned\n",
                c->accepted, c->oldest_s, c->oldest_id, c->abandoned);
    else
        fprintf(f, "commands: 0 accepted; %lld abandoned\n", c->abandoned);
}

/* One group on one topic, as looked up. */
typedef struct source {
    const char *role;
    char *group;
    char *topic;
    lagcmd_row *rows;
    size_t n;
} source;

static void on_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    *(bool *)arg = true;
}

/* The commands not decided, within timeout_ms. */
static int look_up_commands(struct event_base *base, pgconn **pg, long long timeout_ms,
                            lagcmd_commands *c, char *err, size_t errlen)
{
    bool expired = false;
    struct event *deadline = evtimer_new(base, on_timeout, &expired);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = timeout_ms % 1000 * 1000};
    evtimer_add(deadline, &tv);
    pgwait w = {0};
    int got = pgwait_run(&w, base, *pg, commands_sql, 0, NULL, &expired);
    event_free(deadline);
    if (got != 0 || pgwait_rows(&w) != 1) {
        snprintf(err, errlen, "commands: %s", w.done ? w.error : "PostgreSQL unreachable");
        if (!w.done) { /* still queued: pgconn_free() answers it, and w must live until then */
            pgconn_free(*pg);
            *pg = NULL;
        }
        pgwait_clear(&w);
        return -1;
    }
    c->accepted = atoll(pgwait_cell(&w, 0, 0));
    c->oldest_s = atoll(pgwait_cell(&w, 0, 1));
    const char *id = pgwait_cell(&w, 0, 2);
    snprintf(c->oldest_id, sizeof(c->oldest_id), "%s", id ? id : "");
    c->abandoned = atoll(pgwait_cell(&w, 0, 3));
    pgwait_clear(&w);
    return 0;
}

/* The partitions and watermarks of s->topic, then the offsets PostgreSQL holds for s->group. */
static int look_up(struct event_base *base, pgconn **pg, const config_props *kafka,
                   long long timeout_ms, source *s, char *err, size_t errlen)
{
    int rc = -1;
    kafka_consumer *reader =
        kafka_consumer_new_reader(base, kafka, s->topic, NULL, NULL, err, errlen);
    if (!reader)
        return -1;
    int n = kafka_consumer_partition_count(reader, (int)timeout_ms);
    if (n <= 0) {
        snprintf(err, errlen, "topic %s: no partitions found within %lld ms (is Kafka reachable?)",
                 s->topic, timeout_ms);
        goto out;
    }
    s->n = (size_t)n;
    s->rows = xcalloc(s->n, sizeof(lagcmd_row));
    for (int i = 0; i < n; i++) {
        s->rows[i].partition = i;
        s->rows[i].stored = -1;
        if (kafka_consumer_query_watermarks(reader, i, &s->rows[i].low, &s->rows[i].high,
                                            (int)timeout_ms, err, errlen) != 0)
            goto out;
    }
    /* The wait is bounded: the pgconn retries a connection forever on its own. */
    bool expired = false;
    struct event *deadline = evtimer_new(base, on_timeout, &expired);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = timeout_ms % 1000 * 1000};
    evtimer_add(deadline, &tv);
    pgwait w = {0};
    const char *v[] = {s->group, s->topic};
    int got = pgwait_run(&w, base, *pg, stored_sql, 2, v, &expired);
    event_free(deadline);
    if (got != 0) {
        snprintf(err, errlen, "consumer_offsets: %s", w.done ? w.error : "PostgreSQL unreachable");
        if (!w.done) { /* still queued: pgconn_free() answers it, and w must live until then */
            pgconn_free(*pg);
            *pg = NULL;
        }
        pgwait_clear(&w);
        goto out;
    }
    char *cluster = kafka_consumer_cluster_id(reader); /* known: the watermarks came back */
    for (size_t i = 0; i < pgwait_rows(&w); i++) {
        int partition = atoi(pgwait_cell(&w, i, 0));
        const char *stored_cluster = pgwait_cell(&w, i, 2);
        if (partition >= 0 && partition < n) {
            s->rows[partition].stored = atoll(pgwait_cell(&w, i, 1));
            s->rows[partition].other_log = offsetlog_other_cluster(stored_cluster, cluster);
        } else
            log_kv(LOG_WARN, "consumer_offsets holds a partition the topic does not have",
                   LOG_FIELDS("group", s->group, "topic", s->topic, "partition",
                              pgwait_cell(&w, i, 0)));
    }
    free(cluster);
    pgwait_clear(&w);
    rc = 0;
out:
    kafka_consumer_free(reader);
    return rc;
}

int lagcmd_main(int argc, char **argv)
{
    lag_config cfg = {0};
    config_props kafka = {0};
    char err[512];
    int rc = EXIT_FAILURE;
    char **args = xcalloc((size_t)argc + 1, sizeof(char *));
    args[0] = "state-processor lag";
    for (int i = 1; i < argc; i++)
        args[i] = argv[i];
    source src[2] = {{.role = "processor"}, {.role = "projector"}};
    struct event_base *base = NULL;
    pgconn *pg = NULL;

    if (!service_setup("lag",
                       "Shows, per partition, the offset each group resumes from (stored in "
                       "PostgreSQL), the high watermark in Kafka, and the lag between them; then "
                       "the commands accepted and not decided (the oldest, its age and id) and "
                       "the claims marked abandoned.",
                       lag_config_table, &cfg, &kafka, argc, args, &rc))
        goto out;
    rc = EXIT_FAILURE;
    bool text;
    if (!opsout_mode(cfg.output, &text)) {
        snprintf(err, sizeof(err), "output: '%s' is not auto, text or json", cfg.output);
        log_kv(LOG_FATAL, "bad configuration", LOG_FIELDS("error", err));
        goto out;
    }
    text = text && !cfg.json;
    const char *prefix = cfg.proc.topic_prefix;
    src[0].group = xstrdup(cfg.proc.group_id);
    src[0].topic = xasprintf("%scommands", prefix);
    src[1].group = cfg.proc.projector_group && *cfg.proc.projector_group
                       ? xstrdup(cfg.proc.projector_group)
                       : xasprintf("%sprojector", prefix);
    src[1].topic = xasprintf("%sevents", prefix);
    base = event_base_new();
    pg = pgconn_new(base, cfg.proc.pg_conninfo, NULL, NULL, err, sizeof(err));
    if (!pg) {
        log_kv(LOG_FATAL, "bad configuration", LOG_FIELDS("error", err));
        goto out;
    }
    pgconn_set_name(pg, "state-processor lag");
    for (size_t i = 0; i < 2; i++) {
        if (look_up(base, &pg, &kafka, cfg.timeout_ms, &src[i], err, sizeof(err)) != 0) {
            log_kv(LOG_ERROR, "lag unavailable", LOG_FIELDS("error", err));
            goto out;
        }
    }
    lagcmd_commands cmds = {0};
    if (look_up_commands(base, &pg, cfg.timeout_ms, &cmds, err, sizeof(err)) != 0) {
        log_kv(LOG_ERROR, "lag unavailable", LOG_FIELDS("error", err));
        goto out;
    }
    if (!text) {
        json_t *groups = json_array();
        for (size_t i = 0; i < 2; i++)
            json_array_append_new(groups, lagcmd_group_json(src[i].role, src[i].group, src[i].topic,
                                                            src[i].rows, src[i].n));
        json_t *j =
            json_pack("{s:o, s:o}", "groups", groups, "commands", lagcmd_commands_json(&cmds));
        char *s = json_dumps(j, JSON_COMPACT);
        printf("%s\n", s ? s : "{}");
        free(s);
        json_decref(j);
    } else {
        printf(TABLE_ROW, "ROLE", "GROUP", "TOPIC", "PARTITION", "STORED", "HIGH", "LAG");
        for (size_t i = 0; i < 2; i++)
            lagcmd_print_table(stdout, src[i].role, src[i].group, src[i].topic, src[i].rows,
                               src[i].n);
        lagcmd_print_commands(stdout, &cmds);
    }
    rc = EXIT_SUCCESS;
out:
    pgconn_free(pg);
    if (base)
        event_base_free(base);
    for (size_t i = 0; i < 2; i++) {
        free(src[i].group);
        free(src[i].topic);
        free(src[i].rows);
    }
    config_free(lag_config_table, &cfg);
    config_props_free(&kafka);
    free(args);
    return rc;
}

#define LAG_AT(field) offsetof(lag_config, field)
_Static_assert(offsetof(lag_config, proc) == 0, "lag_config starts with the shared keys");

const config_row lag_config_table[] = {
    {ROW_PG_CONNINFO},
    {ROW_TOPIC_PREFIX},
    {"group.id", CONFIG_STR, PROCCONFIG_AT(group_id), "state-processor", 0, 0,
     "consumer group of the processors (on the commands topic)"},
    {"projector.group", CONFIG_STR, PROCCONFIG_AT(projector_group), NULL, 0, 0,
     "consumer group of the projectors, on the events topic (empty: <topic.prefix>projector)"},
    {"output", CONFIG_STR, LAG_AT(output), "auto", 0, 0,
     "auto (a table on a terminal, else JSON), text or json"},
    {"json", CONFIG_BOOL, LAG_AT(json), "false", 0, 0, "deprecated: the same as --output=json"},
    {"timeout_ms", CONFIG_INT, LAG_AT(timeout_ms), "10000", 100, 600000,
     "how long each look-up in Kafka or PostgreSQL may take"},
    {ROW_LOG_LEVEL},
    {NULL, 0, 0, NULL, 0, 0, NULL},
};
