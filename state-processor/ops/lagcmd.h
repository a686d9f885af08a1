/*
 * lagcmd.h: `state-processor lag`: per partition, for the processor group on the commands topic
 * and the projector group on the events topic, the offset stored in PostgreSQL (where each group
 * resumes: consumer_offsets, ADR 0007), the high watermark in Kafka, and the lag between them;
 * then the commands not decided: how many are accepted, the oldest, and the abandoned claims.
 */
#ifndef CQRS_LAGCMD_H
#define CQRS_LAGCMD_H

#include "core/config.h"
#include "loop/procconfig.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

/* The lag command's configuration: the keys it shares with the processor, then its own. */
typedef struct lag_config {
    processor_config proc; /* first, so that the shared rows' offsets are processor_config's */
    char *output;          /* auto, text or json */
    bool json;             /* deprecated: the same as output=json */
    long long timeout_ms;
} lag_config;

/* The configuration table of the lag command (ended by a NULL row), filling a lag_config. */
extern const config_row lag_config_table[];

/* One partition of one group: stored is -1 when PostgreSQL holds no offset for it. */
typedef struct lagcmd_row {
    int partition;
    long long stored, low, high;
    bool other_log; /* the stored offset counts another log: another cluster's (ADR 0022) */
} lagcmd_row;

/*
 * What the group still has to consume on the partition: high - stored, or high - low when
 * nothing is stored or what is stored counts another log (another cluster's, or beyond the
 * partition's end: the group then reads the partition from its beginning); never below 0.
 */
long long lagcmd_lag(const lagcmd_row *row);
/*
 * The JSON of one group: {"role", "group", "topic", "lag" (the sum), "partitions": [{"partition",
 * "stored_offset" (null when none), "stored_counts_this_log", "low_watermark", "high_watermark",
 * "lag"}]}. Caller decrefs.
 */
json_t *lagcmd_group_json(const char *role, const char *group, const char *topic,
                          const lagcmd_row *rows, size_t n);
/* Writes a group's rows as table lines (no header), then its total line. */
void lagcmd_print_table(FILE *f, const char *role, const char *group, const char *topic,
                        const lagcmd_row *rows, size_t n);

/* Commands not decided: those still accepted, the oldest of them, and the abandoned claims. */
typedef struct lagcmd_commands {
    long long accepted;
    long long oldest_s;  /* age of the oldest accepted command; 0 when none */
    char oldest_id[40];  /* its id, "" when none */
    long long abandoned; /* claims marked abandoned (idempotency.abandon_after_s) */
} lagcmd_commands;

/* {"accepted", "oldest_accepted_s", "oldest_accepted_id" (null when none), "abandoned"}. */
json_t *lagcmd_commands_json(const lagcmd_commands *c);
/* One table line: "commands: N accepted, the oldest for S s (ID); M abandoned". */
void lagcmd_print_commands(FILE *f, const lagcmd_commands *c);

/*
 * Prints the lag of both groups, then the commands not decided: argv[0] is "lag", the rest are its
 * --key=value flags (--help lists them). A table, or JSON with --json, on stdout. Returns the exit
 * status.
 */
int lagcmd_main(int argc, char **argv);

#endif
