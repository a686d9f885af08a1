/*
 * fuzz_intake.c: libFuzzer harness of the gateway's request intake: headers and body -> JSON ->
 * command envelope -> the command's schema (intake_parse), then the request fingerprint.
 *
 * Input: up to five header values, one per line (Idempotency-Key, If-Match, Prefer, traceparent,
 * tracestate; an empty line means the header is absent), a line "--", then the body. Without a
 * "--" line the whole input is the body.
 */
#include "domain/domain.h"
#include "fuzz_domains.h"
#include "intake.h"
#include "core/log.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static domain_registry *reg;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    reg = fuzz_load_domains("fuzz_intake");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    memcpy(text, data, size);
    text[size] = 0;
    const char *values[5] = {NULL};
    const char *body = text;
    size_t body_len = size;
    char *sep = strstr(text, "\n--\n");
    if (sep) {
        *sep = 0;
        body = sep + 4;
        body_len = size - (size_t)(body - text);
        char *line = text;
        for (size_t i = 0; i < 5 && line; i++) {
            char *nl = strchr(line, '\n');
            if (nl)
                *nl = 0;
            values[i] = *line ? line : NULL;
            line = nl ? nl + 1 : NULL;
        }
    }
    intake_headers h = {.idempotency_key = values[0],
                        .if_match = values[1],
                        .prefer = values[2],
                        .traceparent = values[3],
                        .tracestate = values[4]};
    intake in;
    json_t *problem = intake_parse(&in, reg, body, body_len, &h);
    if (problem) {
        char *dump = json_dumps(problem, JSON_COMPACT);
        if (!dump)
            abort(); /* every problem must serialize */
        free(dump);
        json_decref(problem);
    } else {
        char fp[IDS_UUID_LEN];
        intake_fingerprint(&in, fp);
        intake_clear(&in);
    }
    free(text);
    return 0;
}
