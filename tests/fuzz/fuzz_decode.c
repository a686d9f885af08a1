/*
 * fuzz_decode.c: libFuzzer harness of the state-processor's message decoding and application:
 * Kafka headers and value -> envelope -> command and payload checks -> the domain rules and the
 * version checks (batch_decode, batch_apply), then every row and reply built from the outcome.
 *
 * Input: up to 4 messages separated by a line "===". A message is header lines "name: value",
 * an empty line, then the value. A header "x-state: <json>" also loads an aggregate at version 1
 * with that state for the message's subject, so that commands on existing aggregates run too.
 */
#include "processor/batch.h"
#include "domain/domain.h"
#include "fuzz_domains.h"
#include "core/log.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MSGS 4

static domain_registry *reg;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    reg = fuzz_load_domains("fuzz_decode");
    return 0;
}

/* Splits one message (text is modified in place); returns the x-state value or NULL. */
static const char *parse_message(char *text, kafka_message *m, int index)
{
    memset(m, 0, sizeof(*m));
    m->topic = "commands";
    m->partition = index % 2;
    m->offset = index;
    const char *state = NULL;
    char *line = text;
    while (line && *line && *line != '\n') {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        char *colon = strstr(line, ": ");
        if (colon && m->nheaders < KAFKA_MAX_HEADERS) {
            *colon = 0;
            if (strcmp(line, "x-state") == 0) {
                state = colon + 2;
            } else {
                m->headers[m->nheaders++] = (header){line, colon + 2, strlen(colon + 2)};
                if (strcmp(line, "ce_subject") == 0) {
                    m->key = colon + 2;
                    m->key_len = strlen(colon + 2);
                }
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    if (line && *line == '\n')
        line++;
    if (line) {
        m->value = line;
        m->len = strlen(line);
    }
    return state;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    kafka_message msgs[MAX_MSGS];
    const char *states[MAX_MSGS] = {NULL};
    size_t n = 0;
    for (char *part = text; part && n < MAX_MSGS; n++) {
        char *sep = strstr(part, "\n===\n");
        if (sep)
            *sep = 0;
        states[n] = parse_message(part, &msgs[n], (int)n);
        part = sep ? sep + 5 : NULL;
    }
    batch b;
    memset(&b, 0, sizeof(b));
    batch_decode(&b, reg, msgs, n, "fuzz", "default");
    for (size_t i = 0; i < b.n && i < n; i++) { /* one item per message */
        const batch_item *it = &b.items[i];
        if (states[i] && !it->dead_reason && it->cmd)
            (void)batch_load_aggregate(&b, it->tenant, domain_command_aggregate(it->cmd),
                                       it->env.subject, 1, states[i], false);
    }
    batch_apply(&b);
    size_t count;
    free(batch_aggregate_rows(&b, &count));
    free(batch_command_rows(&b, &count));
    free(batch_outbox_rows(&b, &count));
    free(batch_offset_rows(&b, &count));
    for (size_t i = 0; i < b.n; i++)
        free(batch_reply(&b.items[i]));
    batch_clear(&b);
    free(text);
    return 0;
}
