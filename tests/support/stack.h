/* stack.h: starts and stops the whole system through deploy/local/run.sh, for end-to-end tests. */
#ifndef CQRS_TEST_STACK_H
#define CQRS_TEST_STACK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct stack {
    pid_t pid;        /* run.sh */
    pid_t mock_kafka; /* the mock cluster this stack started itself, or 0 */
    int http_port;
    int pg_port;
    bool real_kafka; /* on the shared Apache Kafka broker of tests/run.sh */
    char run_dir[256];
    char conninfo[256];    /* the stack's PostgreSQL */
    char bootstrap[256];   /* the stack's Kafka */
    char topic_prefix[32]; /* on the shared real broker: its own topics and groups, kept across
                              stack_restart() */
} stack;

/*
 * Starts run.sh in a fresh folder on free ports and waits (up to 90 s) until /readyz answers 200.
 * Kafka: the real broker of tests/run.sh when CQRS_TEST_KAFKA_MODE=real, else a mock cluster —
 * run.sh's own, or one started here when own_mock is true (so a test can signal it).
 * Returns 0, or -1 after printing the logs.
 */
int stack_start(stack *s, bool own_mock);
/*
 * Starts run.sh as stack_start() does, without waiting for anything: its output goes to
 * <run_dir>/run.sh.log. Returns 0, or -1.
 */
int stack_launch(stack *s, bool own_mock);
/*
 * Starts run.sh again in the folder of a stack that stack_stop() stopped, on the same ports, with
 * the data it kept (PostgreSQL; a real broker keeps its log, run.sh's own mock cluster is a new
 * one, as for `make run` run twice). Waits as stack_start() does; returns 0 or -1.
 */
int stack_restart(stack *s);
/* Sends SIGINT to run.sh and reaps it; returns its exit status, or -1 after 60 s. */
int stack_stop(stack *s);
/* Removes the run folder (after a successful test). */
void stack_remove(stack *s);
/* Prints the last lines of every log of the stack to stderr. */
void stack_show_logs(const stack *s);
/*
 * Takes Kafka down (false) or brings it back (true); waits until it is back when up. On a 3-node
 * cluster, one node: a fault the cluster should ride out.
 */
int stack_kafka_set(stack *s, bool up);
/* As stack_kafka_set, but every node of a cluster: Kafka away whatever its size. */
int stack_kafka_set_all(stack *s, bool up);
/* True if a line of the file at path contains needle (false when it cannot be read). */
bool file_mentions(const char *path, const char *needle);
/* How many lines of the file at path contain needle (0 when it cannot be read). */
int file_lines_mentioning(const char *path, const char *needle);
/* True if some process's command line contains needle; who gets a description. */
bool stack_process_mentions(const char *needle, char *who, size_t wholen);
/* The pid of the stack's state-processor (found by its command line), or -1. */
pid_t stack_processor_pid(const stack *s);
/*
 * False if a sanitizer reported an error in a service log (under `make test-asan` the services
 * are sanitized too); the reports are printed.
 */
bool stack_logs_clean(const stack *s);
/* A free TCP port on 127.0.0.1. */
int stack_free_port(void);

#endif
