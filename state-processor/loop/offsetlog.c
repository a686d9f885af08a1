/* offsetlog.c: stored offsets bound to the log they count (see offsetlog.h, ADR 0022). */
#include "loop/offsetlog.h"

#include "kafka/kafka.h"
#include "core/log.h"
#include "core/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct part {
    long long start; /* the offset the partition was started at; KAFKA_OFFSET_BEGINNING: none */
    bool started;    /* started, its first message not seen yet */
    bool distrusted; /* its stored offset is not to be used until its next commit */
} part;

struct offsetlog {
    char *service, *group, *topic;
    offsetlog_policy policy;
    char *cluster;
    part *parts; /* indexed by partition number */
    size_t nparts;
    metrics_counter *m_cluster, *m_range;
};

int offsetlog_policy_parse(const char *s, offsetlog_policy *out)
{
    if (s && strcmp(s, "reset") == 0)
        *out = OFFSETLOG_RESET;
    else if (s && strcmp(s, "fail") == 0)
        *out = OFFSETLOG_FAIL;
    else
        return -1;
    return 0;
}

offsetlog *offsetlog_new(const char *service, const char *group, const char *topic,
                         offsetlog_policy policy, metrics *m)
{
    offsetlog *l = xcalloc(1, sizeof(*l));
    l->service = xstrdup(service);
    l->group = xstrdup(group);
    l->topic = xstrdup(topic);
    l->policy = policy;
    char *name = xasprintf("%s_offset_resets_total", service);
    const char *help = "stored offsets not used because they count another log: of another "
                       "cluster, or beyond the end of the partition";
    l->m_cluster = metrics_counter_get(m, name, help, "reason=\"cluster\"");
    l->m_range = metrics_counter_get(m, name, help, "reason=\"out_of_range\"");
    free(name);
    return l;
}

void offsetlog_free(offsetlog *l)
{
    if (!l)
        return;
    free(l->service), free(l->group), free(l->topic), free(l->cluster), free(l->parts);
    free(l);
}

int offsetlog_learn_cluster(offsetlog *l, kafka_consumer *c)
{
    char *id = kafka_consumer_cluster_id(c);
    if (!id)
        return -1;
    free(l->cluster);
    l->cluster = id;
    return 0;
}

const char *offsetlog_cluster(const offsetlog *l)
{
    return l->cluster;
}

/* The state of partition, grown to fit; NULL for a negative partition. */
static part *part_of(offsetlog *l, int partition)
{
    if (partition < 0)
        return NULL;
    if ((size_t)partition >= l->nparts) {
        size_t n = (size_t)partition + 1;
        l->parts = xrealloc(l->parts, n * sizeof(*l->parts));
        for (size_t i = l->nparts; i < n; i++)
            l->parts[i] = (part){.start = KAFKA_OFFSET_BEGINNING};
        l->nparts = n;
    }
    return &l->parts[partition];
}

static const part *part_peek(const offsetlog *l, int partition)
{
    return partition >= 0 && (size_t)partition < l->nparts ? &l->parts[partition] : NULL;
}

bool offsetlog_other_cluster(const char *stored_cluster, const char *cluster)
{
    return stored_cluster && cluster && strcmp(stored_cluster, cluster) != 0;
}

int offsetlog_choose(offsetlog *l, const int *partitions, size_t n, const pgconn_result *r,
                     long long *offsets, char *err, size_t errlen)
{
    for (size_t i = 0; i < n; i++) {
        offsets[i] = KAFKA_OFFSET_BEGINNING; /* nothing stored: the whole partition */
        part *pt = part_of(l, partitions[i]);
        if (pt)
            pt->distrusted = false;
    }
    for (int row = 0; row < pgconn_result_ntuples(r); row++) {
        int partition = atoi(pgconn_result_value(r, row, 0));
        const char *next = pgconn_result_value(r, row, 1);
        const char *cluster = pgconn_result_value(r, row, 2);
        size_t i = 0;
        while (i < n && partitions[i] != partition)
            i++;
        if (i == n)
            continue;
        if (!offsetlog_other_cluster(cluster, l->cluster)) {
            offsets[i] = atoll(next);
            continue;
        }
        LOG_KV(
            LOG_ERROR, "stored offset counts another Kafka cluster's log",
            LOG_STR("group", l->group), LOG_STR("topic", l->topic), LOG_NUM("partition", partition),
            LOG_NUM("stored_offset", atoll(next)), LOG_STR("stored_cluster", cluster),
            LOG_STR("cluster", l->cluster),
            LOG_STR("action", l->policy == OFFSETLOG_RESET ? "start from the beginning" : "stop"));
        metrics_add(l->m_cluster, 1);
        if (l->policy == OFFSETLOG_FAIL) {
            snprintf(err, errlen,
                     "partition %d of %s: the offset %s stored for group %s counts the log of "
                     "cluster %s, not of cluster %s (offsets.on_mismatch=fail)",
                     partition, l->topic, next, l->group, cluster, l->cluster);
            return -1;
        }
        part_of(l, partition)->distrusted = true;
    }
    for (size_t i = 0; i < n; i++) {
        part *pt = part_of(l, partitions[i]);
        if (pt) {
            pt->start = offsets[i];
            pt->started = true;
        }
    }
    return 0;
}

bool offsetlog_check(offsetlog *l, int partition, long long offset, char *err, size_t errlen)
{
    part *pt = part_of(l, partition);
    if (!pt || !pt->started)
        return true;
    pt->started = false; /* only the first message says where Kafka started it */
    if (pt->start < 0 || offset == pt->start)
        return true;
    if (offset > pt->start) {
        LOG_KV(LOG_WARN, "messages below the first one read are no longer in the log (retention)",
               LOG_STR("group", l->group), LOG_STR("topic", l->topic),
               LOG_NUM("partition", partition), LOG_NUM("stored_offset", pt->start),
               LOG_NUM("first_offset", offset));
        return true;
    }
    LOG_KV(LOG_ERROR,
           "stored offset is beyond the end of the partition: the log was replaced or truncated",
           LOG_STR("group", l->group), LOG_STR("topic", l->topic), LOG_NUM("partition", partition),
           LOG_NUM("stored_offset", pt->start), LOG_NUM("first_offset", offset),
           LOG_STR("action", l->policy == OFFSETLOG_RESET ? "read the partition from its beginning"
                                                          : "stop"));
    metrics_add(l->m_range, 1);
    if (l->policy == OFFSETLOG_FAIL) {
        snprintf(err, errlen,
                 "partition %d of %s: the offset %lld stored for group %s is beyond the end of "
                 "the partition, whose first message is at %lld (offsets.on_mismatch=fail)",
                 partition, l->topic, pt->start, l->group, offset);
        return false;
    }
    pt->distrusted = true;
    return true;
}

bool offsetlog_distrusted(const offsetlog *l, int partition, const char *stored_cluster)
{
    const part *pt = part_peek(l, partition);
    return (pt && pt->distrusted) || offsetlog_other_cluster(stored_cluster, l->cluster);
}

void offsetlog_committed(offsetlog *l, int partition)
{
    part *pt = part_of(l, partition);
    if (pt)
        pt->distrusted = false;
}

void offsetlog_revoked(offsetlog *l, const int *partitions, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        part *pt = part_of(l, partitions[i]);
        if (pt)
            *pt = (part){.start = KAFKA_OFFSET_BEGINNING};
    }
}
