/*
 * fill.c: fills a commands topic for the processor benchmark, with the envelope the gateway
 * writes: ACCOUNTS account.open commands (bench-0, bench-1, ...), then DEPOSITS account.deposit
 * commands over those accounts in turn. With SPREAD, the deposits go to SPREAD accounts (opened
 * beforehand, by the caller) in a scattered order that reaches each of them once before any
 * twice: consecutive commands touch rows far apart, as unrelated clients would. Exits once Kafka
 * has confirmed every message.
 *
 * usage: fill BOOTSTRAP TOPIC PARTITIONS ACCOUNTS DEPOSITS [SPREAD]
 */
#include "core/config.h"
#include "domain/envelope.h"
#include "core/ids.h"
#include "kafka/kafka.h"
#include "core/log.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uuid/uuid.h>

static long long confirmed, failed;

static void on_delivery(void *opaque, const kafka_delivery *d, void *arg)
{
    (void)opaque, (void)arg;
    if (d->err && failed++ == 0)
        fprintf(stderr, "fill: delivery failed: %s\n", d->errstr);
    else if (!d->err)
        confirmed++;
}

static void produce(kafka_producer *p, struct event_base *base, const char *topic, const char *type,
                    const char *account, const char *payload)
{
    char id[IDS_UUID_LEN], key[IDS_UUID_LEN];
    ids_uuid(id); /* as the gateway assigns them: time-ordered */
    /* The key as a client chooses it: random, the worst case for its index. */
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, key);
    envelope e = {.id = id,
                  .source = "/bench",
                  .type = (char *)type,
                  .subject = (char *)account,
                  .tenant = "default",
                  .idempotency_key = key,
                  .expected_version = -1,
                  .reply_partition = -1};
    header h[ENVELOPE_MAX_HEADERS];
    char scratch[64];
    size_t nh = envelope_to_headers(&e, h, scratch);
    for (;;) {
        kafka_send_result r = kafka_produce(p, topic, -1, account, strlen(account), payload,
                                            strlen(payload), h, nh, NULL);
        if (r == KAFKA_OK)
            return;
        if (r == KAFKA_ERROR) {
            fprintf(stderr, "fill: produce failed\n");
            exit(1);
        }
        event_base_loop(base, EVLOOP_ONCE); /* queue full: let deliveries drain it */
    }
}

int main(int argc, char **argv)
{
    if (argc != 6 && argc != 7) {
        fprintf(stderr, "usage: fill BOOTSTRAP TOPIC PARTITIONS ACCOUNTS DEPOSITS [SPREAD]\n");
        return 2;
    }
    const char *topic = argv[2];
    int partitions = atoi(argv[3]);
    long long accounts = atoll(argv[4]), deposits = atoll(argv[5]);
    long long spread = argc == 7 ? atoll(argv[6]) : 0;
    if (partitions < 1 || accounts < 0 || deposits < 0 || spread < 0 ||
        (deposits > 0 && accounts == 0 && spread == 0)) {
        fprintf(stderr, "fill: bad arguments\n");
        return 2;
    }
    log_init("fill", LOG_WARN);
    struct event_base *base = event_base_new();
    config_props props = {0};
    config_props_set(&props, "bootstrap.servers", argv[1]);
    config_props_set(&props, "linger.ms", "5");
    char err[512];
    kafka_producer *p = kafka_producer_new(base, &props, on_delivery, NULL, err, sizeof(err));
    config_props_free(&props);
    if (!p) {
        fprintf(stderr, "fill: %s\n", err);
        return 1;
    }
    const char *topics[] = {topic};
    if (kafka_ensure_topics(p, topics, 1, partitions, -1, 10000, err, sizeof(err)) != 0) {
        fprintf(stderr, "fill: %s\n", err);
        return 1;
    }
    char account[32], payload[64];
    for (long long i = 0; i < accounts; i++) {
        snprintf(account, sizeof(account), "bench-%lld", i);
        snprintf(payload, sizeof(payload), "{\"owner\":\"owner %lld\"}", i);
        produce(p, base, topic, "account.open", account, payload);
    }
    for (long long i = 0; i < deposits; i++) {
        /* A multiplier that is prime (and larger than any spread) permutes 0..spread-1. */
        long long n =
            spread ? (long long)((unsigned long long)i * 2654435761ULL % (unsigned long long)spread)
                   : i % accounts;
        snprintf(account, sizeof(account), "bench-%lld", n);
        produce(p, base, topic, "account.deposit", account, "{\"amount\":1}");
    }
    int rc = kafka_producer_flush(p, 120000); /* serves the delivery reports */
    kafka_producer_free(p);
    event_base_free(base);
    if (rc != 0 || failed || confirmed != accounts + deposits) {
        fprintf(stderr, "fill: %lld of %lld messages not confirmed\n",
                accounts + deposits - confirmed, accounts + deposits);
        return 1;
    }
    printf("%lld\n", confirmed);
    return 0;
}
