/*
 * nemesis.h: seeded fault injection for the end-to-end checker. It owns the cluster's service
 * processes and, one fault at a time at seeded random moments, kills one with SIGKILL, pauses one
 * with SIGSTOP past the Kafka session timeout, kills PostgreSQL (pg_ctl -m immediate), fails
 * PostgreSQL over to its synchronous standby (when the runner made one), kills a Kafka broker node
 * with SIGKILL (real Kafka), or kills the whole stack with its data kept; every fault is healed
 * (the victim restarted or continued, a new standby made) before the next. Each step is logged with
 * its time for the failure report.
 */
#ifndef CQRS_TEST_NEMESIS_H
#define CQRS_TEST_NEMESIS_H

#include "cluster.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#define NEMESIS_MAX_PROCS 8
#define NEMESIS_MAX_EXTRA 12

typedef enum nemesis_fault {
    NEMESIS_KILL,       /* SIGKILL one service process, restart it */
    NEMESIS_PAUSE,      /* SIGSTOP one service process past the session timeout, SIGCONT */
    NEMESIS_PG,         /* PostgreSQL stopped -m immediate, started again */
    NEMESIS_KAFKA_NODE, /* SIGKILL one Kafka broker node, start it again (real Kafka only) */
    NEMESIS_STACK,      /* SIGKILL every service (and Kafka node), PostgreSQL -m immediate, all
                           started again on their data */
    NEMESIS_FAILOVER,   /* SIGKILL PostgreSQL's primary, promote its standby, make the old one
                           its standby (cluster_pg_failover(); only with a standby) */
    NEMESIS_FAULTS
} nemesis_fault;

typedef struct nemesis_proc {
    char name[32];    /* "gateway-0": in the log */
    char service[32]; /* as cluster_start() takes it */
    int idx;          /* cluster_start()'s idx: the log file */
    char extra[NEMESIS_MAX_EXTRA][160];
    size_t nextra;
    pid_t pid; /* 0 while down */
} nemesis_proc;

typedef struct nemesis {
    cluster *cl; /* failovers swap its primary and standby */
    nemesis_proc procs[NEMESIS_MAX_PROCS];
    size_t nprocs;
    const char *kafka_dir; /* CQRS_TEST_KAFKA_DIR: real Kafka run by deploy/kafka/kafka.sh */
    int kafka_nodes;
    uint64_t rng;
    long long t0_us;  /* the time origin of the log (and of the checker's history) */
    int pause_ms;     /* how long a pause lasts at least: past the session timeout */
    char (*log)[200]; /* the steps, "t=12.345 kill -9 processor-1 (pid 4242)" */
    size_t nlog, caplog;
    int done[NEMESIS_FAULTS]; /* faults injected, by kind */
    int crashed;              /* processes found dead that the nemesis had not killed */
    nemesis_fault deck[2 * NEMESIS_FAULTS];
    size_t ndeck;
} nemesis;

/* Sets up an empty nemesis over cl with seed; the time origin is now. */
void nemesis_init(nemesis *n, cluster *cl, uint64_t seed, int pause_ms);
/* Adds and starts a service process (see cluster_start()); extra is NULL-terminated. */
void nemesis_add(nemesis *n, const char *name, const char *service, int idx,
                 const char *const *extra);
/* Milliseconds since the time origin. */
long long nemesis_now_ms(const nemesis *n);
/*
 * Injects faults until *stop is set or run_ms pass: a seeded pause of 1–4 s, then one fault
 * (every kind in turn, in a seeded order, then again), healed before the next.
 */
void nemesis_run(nemesis *n, int run_ms, const atomic_bool *stop);
/* Ends every fault: continues every process, restarts what is down, PostgreSQL, Kafka nodes. */
void nemesis_heal(nemesis *n);
/* Appends a line to the log, prefixed with its time. */
void nemesis_note(nemesis *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Prints the log. */
void nemesis_print(const nemesis *n, FILE *f);
/* Stops the processes (cluster_finish) and frees the log; returns cluster_finish()'s answer. */
bool nemesis_finish(nemesis *n, cluster *cl, bool failed);

#endif
