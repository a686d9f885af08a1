/*
 * offsetlog.h: stored offsets bound to the log they count (ADR 0022).
 *
 * An offset in consumer_offsets counts messages of one partition of one cluster's topic. Against
 * another log (a replaced cluster, a topic deleted and created again, a partition truncated by an
 * unclean leader election) it means nothing: trusted, it skips messages of the new log or waits
 * for offsets that do not exist. The processor and the projector keep one offsetlog per consumer:
 *   - each stored offset is written with the cluster id; at assignment an offset stored under
 *     another cluster is not used (offsetlog_choose());
 *   - the first message of a started partition tells whether Kafka had to move the position: one
 *     below the offset asked for means the stored offset lay beyond the log's end
 *     (offsetlog_check());
 * and either way the policy decides: reset (start that partition from its beginning and let the
 * command ids, idempotency records and version guards deduplicate) or fail (stop for an
 * operator). Each case is logged as an error naming the partition and counted.
 */
#ifndef CQRS_OFFSETLOG_H
#define CQRS_OFFSETLOG_H

#include "kafka/kafka.h"
#include "core/metrics.h"
#include "pg/pgconn.h"

#include <stdbool.h>
#include <stddef.h>

typedef enum { OFFSETLOG_RESET, OFFSETLOG_FAIL } offsetlog_policy;

/* "reset" or "fail"; returns -1 for anything else. */
int offsetlog_policy_parse(const char *s, offsetlog_policy *out);

typedef struct offsetlog offsetlog;

/*
 * A tracker for the partitions of topic read by group; its counter is
 * <service>_offset_resets_total{reason="cluster"|"out_of_range"} in m.
 */
offsetlog *offsetlog_new(const char *service, const char *group, const char *topic,
                         offsetlog_policy policy, metrics *m);
void offsetlog_free(offsetlog *l);

/*
 * Sets the cluster id of the log being read from what consumer c last learnt of its cluster,
 * without waiting; returns -1 (and changes nothing) while c has had no metadata.
 */
int offsetlog_learn_cluster(offsetlog *l, kafka_consumer *c);
/* The cluster id set last, or NULL. */
const char *offsetlog_cluster(const offsetlog *l);

/*
 * Chooses where partitions[i] start into offsets[i], from r, the rows (partition, next_offset,
 * cluster_id) stored for them: no row, the beginning; a row of this cluster or of none named, its
 * offset; a row of another cluster, the beginning under policy reset (the row is distrusted until
 * the partition's next commit). Under policy fail that last case returns -1 with err naming the
 * partition. Remembers each start for offsetlog_check().
 */
int offsetlog_choose(offsetlog *l, const int *partitions, size_t n, const pgconn_result *r,
                     long long *offsets, char *err, size_t errlen);

/*
 * Checks the offset of a consumed message of partition against where the partition was started.
 * The first message below the start means the position was reset by Kafka because the stored
 * offset is beyond the log's end: under policy reset the partition's stored offset is distrusted
 * until its next commit and true is returned; under policy fail, false with err. A first message
 * above the start (messages removed by retention before they were read) is logged as a warning.
 */
bool offsetlog_check(offsetlog *l, int partition, long long offset, char *err, size_t errlen);

/*
 * True when the offset stored for partition, under stored_cluster (NULL: none named), is not to
 * be used: another cluster's, or one Kafka had to reset.
 */
bool offsetlog_distrusted(const offsetlog *l, int partition, const char *stored_cluster);

/* An offset stored under stored_cluster counts another log than cluster's: both are named and
   differ (an offset stored before clusters were recorded counts any). */
bool offsetlog_other_cluster(const char *stored_cluster, const char *cluster);

/* The partition's offset was committed under the current cluster: trusted again. */
void offsetlog_committed(offsetlog *l, int partition);

/* The partitions were revoked: whoever owns them next decides for itself. */
void offsetlog_revoked(offsetlog *l, const int *partitions, size_t n);

#endif
