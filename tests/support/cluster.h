/*
 * cluster.h: the services as separate child processes (several processors, several gateways)
 * on the test runner's PostgreSQL, in a database of their own, and its Kafka, under a topic
 * prefix of their own; for the multi-process end-to-end tests.
 */
#ifndef CQRS_TEST_CLUSTER_H
#define CQRS_TEST_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/strmap.h"

typedef struct cluster {
    char dir[256];       /* service logs */
    char conninfo[512];  /* the cluster's database */
    char bootstrap[512]; /* Kafka */
    char prefix[40];     /* topic and group prefix */
    char pg_dir[256];    /* the runner's PostgreSQL, which a test may restart: the primary */
    int pg_port;
    char standby_dir[256]; /* its synchronous streaming standby, if the runner made one */
    int standby_port;      /* 0: none */
    bool mock;             /* Kafka is librdkafka's mock cluster */
} cluster;

/* Creates the database and the log folder from the runner's environment; -1 after a message. */
int cluster_init(cluster *c, const char *name);
/*
 * Starts build/<service> (state-processor, command-gateway, or "projector": state-processor
 * project) with the cluster's database,
 * Kafka, prefix and group, plus the NULL-terminated extra flags; its log is
 * <dir>/<service>-<idx>.log.
 */
pid_t cluster_start(const cluster *c, const char *service, int idx, const char *const *extra);
/* Polls GET /readyz on port until 200, for up to timeout_ms; true when ready. */
bool cluster_wait_ready(int port, int timeout_ms);
/*
 * Stops ("stop": pg_ctl -m fast, connections cut), kills ("kill": -m immediate, no shutdown
 * checkpoint, crash recovery at the next start) or starts ("start") the runner's PostgreSQL
 * through deploy/local/pg.sh. Returns 0, or -1 after a message.
 */
int cluster_pg(const cluster *c, const char *how);
/*
 * Fails over to the standby once it has received all the primary has flushed (up to 30 s; an HA
 * manager promotes only a standby in step): kill -9 of the primary's postmaster, pg_ctl promote
 * of the standby, then the old primary made again, from a base backup of the new one, its
 * synchronous standby (the two swap places in c; the conninfo names both,
 * target_session_attrs=read-write). Says when the kill began in *killed_us and when the
 * promotion was done in *promoted_us (ids_monotonic_us(); either may be NULL). Returns 0, or -1
 * after a message.
 */
int cluster_pg_failover(cluster *c, long long *killed_us, long long *promoted_us);
/*
 * Reads the cluster's events topic from the beginning, in a group of its own, until want distinct
 * ce_id values are seen or idle_ms pass without a message. ids (may be NULL) gets each ce_id
 * with the number of copies read as its value ((void *)(uintptr_t)n); *copies (may be NULL) the
 * number of messages read. Returns the number of distinct ids.
 */
size_t cluster_read_events(const cluster *c, strmap *ids, size_t want, int idle_ms, size_t *copies);
/*
 * Stops the n processes (SIGTERM, then reaps), prints the logs of a failed run, fails a run whose
 * logs hold a sanitizer report, keeps the folder of a failed run (or with CQRS_KEEP_TEST_DIR=1)
 * and removes it otherwise. Returns whether the run failed.
 */
bool cluster_finish(cluster *c, const pid_t *pids, size_t n, bool failed);

#endif
