/* test_kafka.c: the parts of the Kafka wrapper that need no cluster but librdkafka's own mock. */
#include "checkrun.h"
#include "kafka/kafka.h"
#include "kafka/kafka_int.h"
#include "waitfor.h"

#include <check.h>
#include <librdkafka/rdkafka_mock.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

static const struct {
    int owned[6];
    size_t n;
    int revoked[4];
    size_t nrevoked;
    int want[6];
    size_t nwant;
} rcases[] = {
    {{1, 2, 3}, 3, {0}, 0, {1, 2, 3}, 3}, /* nothing revoked */
    {{1, 2, 3}, 3, {2}, 1, {1, 3}, 2},    /* one from the middle, order kept */
    {{1, 2, 3}, 3, {3, 1, 2}, 3, {0}, 0}, /* all, in another order */
    {{4, 5}, 2, {6, 7}, 2, {4, 5}, 2},    /* revoked ones not owned */
    {{0}, 0, {1}, 1, {0}, 0},             /* empty set */
    {{9, 8, 9, 7}, 4, {9}, 1, {8, 7}, 2}, /* every copy goes */
};

START_TEST(revoked_partitions_leave_the_set)
{
    int v[6];
    for (size_t i = 0; i < rcases[_i].n; i++)
        v[i] = rcases[_i].owned[i];
    size_t n = kafka_partitions_remove(v, rcases[_i].n, rcases[_i].revoked, rcases[_i].nrevoked);
    ck_assert_uint_eq(n, rcases[_i].nwant);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(v[i], rcases[_i].want[i]);
}
END_TEST

static void no_report(void *opaque, const kafka_delivery *d, void *arg)
{
    (void)opaque, (void)d, (void)arg;
}

/* Header sets of every size class: none, short values, values whose length takes two bytes. */
static const struct {
    size_t nh;
    size_t value_len;
    size_t key_len;
} size_cases[] = {{0, 0, 0}, {3, 10, 8}, {12, 200, 255}, {2, 20000, 1}};

/* kafka_message_size() is exactly what librdkafka holds against message.max.bytes. */
START_TEST(the_message_size_is_what_librdkafka_counts)
{
    enum { MAX = 60000 };
    struct event_base *base = event_base_new();
    config_props props = {0};
    config_props_set(&props, "message.max.bytes", "60000");
    char err[256];
    kafka_producer *p = kafka_producer_new(base, &props, no_report, NULL, err, sizeof(err));
    ck_assert_msg(p != NULL, "%s", err);
    static char values[12][20001];
    header h[12];
    static const char *const names[] = {"a", "ce_id", "ce_idempotencykey", "content-type"};
    for (size_t i = 0; i < size_cases[_i].nh; i++) {
        memset(values[i], 'v', size_cases[_i].value_len);
        h[i] = (header){names[i % 4], values[i], size_cases[_i].value_len};
    }
    static char key[256], value[MAX];
    memset(key, 'k', sizeof(key));
    size_t framing = kafka_message_size(size_cases[_i].key_len, 0, h, size_cases[_i].nh);
    ck_assert_uint_lt(framing, MAX);
    size_t fits = MAX - framing;
    ck_assert_uint_eq(kafka_message_size(size_cases[_i].key_len, fits, h, size_cases[_i].nh), MAX);
    /* No broker: what is not refused at once just waits in the queue. */
    ck_assert_int_eq(kafka_produce(p, "t", 0, key, size_cases[_i].key_len, value, fits, h,
                                   size_cases[_i].nh, NULL),
                     KAFKA_OK);
    ck_assert_int_eq(kafka_produce(p, "t", 0, key, size_cases[_i].key_len, value, fits + 1, h,
                                   size_cases[_i].nh, NULL),
                     KAFKA_ERROR);
    kafka_producer_purge(p);
    kafka_producer_free(p);
    config_props_free(&props);
    event_base_free(base);
}
END_TEST

typedef struct woken {
    struct event_base *base;
    rd_kafka_queue_t *q;
    wakeup *w;
    int served;
} woken;

static void on_woken(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    woken *wk = arg;
    kafka_wakeup_drain(wk->w);
    rd_kafka_event_t *ev;
    while ((ev = rd_kafka_queue_poll(wk->q, 0)) != NULL) {
        wk->served++;
        rd_kafka_event_destroy(ev);
    }
    if (wk->served > 0)
        event_base_loopbreak(wk->base);
}

/*
 * An op already queued when the wake-up is armed is served: librdkafka writes the pipe only when
 * the queue goes from empty to non-empty, an edge that op has passed, and with it unserved no
 * later op would write the pipe either (a producer whose broker refused the connection before
 * rd_kafka_new() returned never served a delivery report).
 */
START_TEST(the_wakeup_serves_what_was_queued_before)
{
    struct event_base *base = event_base_new();
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert_int_eq(
        rd_kafka_conf_set(conf, "bootstrap.servers", "127.0.0.1:1", errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_msg(rk != NULL, "%s", errstr);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    /* A request no controller answers: its result comes to q after its 100 ms timeout. */
    rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new("t", 1, 1, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_t *opt = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    ck_assert_int_eq(rd_kafka_AdminOptions_set_request_timeout(opt, 100, errstr, sizeof(errstr)),
                     RD_KAFKA_RESP_ERR_NO_ERROR);
    rd_kafka_CreateTopics(rk, &nt, 1, opt, q);
    for (int i = 0; i < 1000 && rd_kafka_queue_length(q) == 0; i++)
        usleep(10000);
    ck_assert_uint_eq(rd_kafka_queue_length(q), 1);

    wakeup w = {{-1, -1}, NULL};
    woken wk = {base, q, &w, 0};
    char err[128];
    ck_assert_int_eq(kafka_wakeup_init(&w, base, q, on_woken, &wk, err, sizeof(err)), 0);
    struct timeval limit = {3, 0}; /* a bound, not a wait: the loop breaks once served */
    event_base_loopexit(base, &limit);
    event_base_dispatch(base);
    ck_assert_int_eq(wk.served, 1);

    rd_kafka_queue_io_event_enable(q, -1, NULL, 0);
    kafka_wakeup_free(&w);
    rd_kafka_AdminOptions_destroy(opt);
    rd_kafka_NewTopic_destroy(nt);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    event_base_free(base);
}
END_TEST

typedef struct {
    kafka_consumer *c;
    long limit;
} queue_watch;

static bool queued_reaches(void *arg)
{
    const queue_watch *w = arg;
    return (long)kafka_consumer_queued(w->c) >= w->limit;
}

static bool queued_passes(void *arg)
{
    const queue_watch *w = arg;
    return (long)kafka_consumer_queued(w->c) > w->limit;
}

/*
 * A consumer fetches a bounded number of messages ahead of the application (ADR 0033), not a
 * whole backlog: with 60,000 waiting and none taken, it holds KAFKA_PREFETCH_MESSAGES and at
 * most one fetch response more (1 MiB of 100-byte messages is under 10,000).
 */
START_TEST(a_consumer_fetches_a_bounded_number_ahead)
{
    enum { BACKLOG = 60000, FETCH_SLACK = 10000 };
    const long bound = atol(KAFKA_PREFETCH_MESSAGES);
    char errstr[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_msg(rk != NULL, "%s", errstr);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, 1);
    ck_assert_ptr_nonnull(mc);
    ck_assert_int_eq(rd_kafka_mock_topic_create(mc, "backlog", 1, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);

    conf = rd_kafka_conf_new();
    ck_assert_int_eq(
        rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    rd_kafka_t *prod = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    ck_assert_msg(prod != NULL, "%s", errstr);
    char value[100];
    memset(value, 'v', sizeof(value));
    for (int i = 0; i < BACKLOG; i++)
        ck_assert_int_eq(
            rd_kafka_producev(prod, RD_KAFKA_V_TOPIC("backlog"), RD_KAFKA_V_PARTITION(0),
                              RD_KAFKA_V_VALUE(value, sizeof(value)),
                              RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
            RD_KAFKA_RESP_ERR_NO_ERROR);
    ck_assert_int_eq(rd_kafka_flush(prod, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);

    struct event_base *base = event_base_new();
    config_props props = {0};
    config_props_set(&props, "bootstrap.servers", bootstrap);
    char err[256];
    kafka_consumer *c =
        kafka_consumer_new_reader(base, &props, "backlog", NULL, NULL, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    const int partition = 0;
    const long long from = KAFKA_OFFSET_BEGINNING;
    ck_assert_int_eq(kafka_consumer_assign(c, &partition, &from, 1), 0);
    /* It fetches up to the bound... */
    queue_watch full = {c, bound};
    ck_assert(waitfor(queued_reaches, &full, 10000));
    /* ...and stops there: the 1.5 s is what is under test, longer than librdkafka's one-second
       pause of a partition whose queue is full; in it, it does not take the rest. */
    queue_watch past = {c, bound + FETCH_SLACK};
    ck_assert(!waitfor(queued_passes, &past, 1500));

    kafka_consumer_free(c);
    config_props_free(&props);
    event_base_free(base);
    rd_kafka_destroy(prod);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
}
END_TEST

static int assigned;

typedef struct {
    kafka_consumer *c;
    rd_kafka_t *reader;
    rd_kafka_topic_partition_list_t *list;
} commit_watch;

/* Serves the consumer's queue (its rebalances) and says whether all three partitions came. */
static bool all_assigned(void *arg)
{
    const commit_watch *w = arg;
    kafka_message msgs[4];
    kafka_consumer_poll(w->c, msgs, N(msgs));
    return assigned == 3;
}

/* Reads the group's committed offsets into w->list: the two given ones are there. */
static bool committed_shown(void *arg)
{
    commit_watch *w = arg;
    kafka_message msgs[4];
    kafka_consumer_poll(w->c, msgs, N(msgs));
    ck_assert_int_eq(rd_kafka_committed(w->reader, w->list, 5000), RD_KAFKA_RESP_ERR_NO_ERROR);
    return w->list->elems[0].offset == 5 && w->list->elems[2].offset == 7;
}

static bool on_assigned(const int *partitions, size_t n, bool is_assign, void *arg)
{
    (void)partitions, (void)arg;
    if (is_assign)
        assigned += (int)n;
    return false; /* the consumer starts them itself */
}

/* One commit carries every partition given an offset, and none given a negative one. */
START_TEST(a_commit_names_the_partitions_it_is_given)
{
    char errstr[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, rd_kafka_conf_new(), errstr, sizeof(errstr));
    ck_assert_msg(rk != NULL, "%s", errstr);
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, 1);
    ck_assert_ptr_nonnull(mc);
    ck_assert_int_eq(rd_kafka_mock_topic_create(mc, "positions", 3, 1), RD_KAFKA_RESP_ERR_NO_ERROR);
    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(mc);

    struct event_base *base = event_base_new();
    config_props props = {0};
    config_props_set(&props, "bootstrap.servers", bootstrap);
    char err[256];
    assigned = 0;
    kafka_consumer *c = kafka_consumer_new(base, &props, "positions-group", "positions", NULL,
                                           on_assigned, NULL, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    commit_watch w = {.c = c};
    ck_assert(waitfor(all_assigned, &w, 10000));
    const int partitions[] = {0, 1, 2};
    const long long next[] = {5, -1, 7};
    kafka_consumer_commit(c, partitions, next, N(partitions));

    /* Read back as the group's committed offsets, by a member that never joins it. */
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    ck_assert_int_eq(
        rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap, errstr, sizeof(errstr)),
        RD_KAFKA_CONF_OK);
    ck_assert_int_eq(rd_kafka_conf_set(conf, "group.id", "positions-group", errstr, sizeof(errstr)),
                     RD_KAFKA_CONF_OK);
    rd_kafka_t *reader = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    ck_assert_msg(reader != NULL, "%s", errstr);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(3);
    for (int i = 0; i < 3; i++)
        rd_kafka_topic_partition_list_add(l, "positions", i);
    w.reader = reader;
    w.list = l;
    waitfor(committed_shown, &w, 10000);
    ck_assert_int_eq(l->elems[0].offset, 5);
    ck_assert_int_eq(l->elems[1].offset, RD_KAFKA_OFFSET_INVALID);
    ck_assert_int_eq(l->elems[2].offset, 7);

    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_consumer_close(reader);
    rd_kafka_destroy(reader);
    kafka_consumer_free(c);
    config_props_free(&props);
    event_base_free(base);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
}
END_TEST

/* ---- the topic keeper's reading of CreateTopics answers ---- */

static const struct {
    rd_kafka_resp_err_t err;
    kafka_topics_state want;
} verdicts[] = {
    {RD_KAFKA_RESP_ERR_NO_ERROR, KAFKA_TOPICS_DONE},
    {RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS, KAFKA_TOPICS_DONE}, /* made before, by anyone */
    /* what passes: ask again */
    {RD_KAFKA_RESP_ERR_NOT_CONTROLLER, KAFKA_TOPICS_ASKING},
    {RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, KAFKA_TOPICS_ASKING},
    {RD_KAFKA_RESP_ERR__TIMED_OUT, KAFKA_TOPICS_ASKING},
    {RD_KAFKA_RESP_ERR__TRANSPORT, KAFKA_TOPICS_ASKING},
    /* more replicas than live brokers: one may come back */
    {RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR, KAFKA_TOPICS_ASKING},
    /* not allowed: asking again will not change it */
    {RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED, KAFKA_TOPICS_REFUSED},
    {RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED, KAFKA_TOPICS_REFUSED},
};

START_TEST(the_keeper_stops_only_when_created_or_not_allowed)
{
    ck_assert_msg(kafka_topics_verdict(verdicts[_i].err) == verdicts[_i].want, "%s: %d, not %d",
                  rd_kafka_err2name(verdicts[_i].err), kafka_topics_verdict(verdicts[_i].err),
                  verdicts[_i].want);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("kafka");
    TCase *tc = tcase_create("partitions");
    tcase_add_loop_test(tc, revoked_partitions_leave_the_set, 0, N(rcases));
    tcase_add_loop_test(tc, the_message_size_is_what_librdkafka_counts, 0, N(size_cases));
    tcase_add_test(tc, the_wakeup_serves_what_was_queued_before);
    tcase_add_test(tc, a_consumer_fetches_a_bounded_number_ahead);
    tcase_add_test(tc, a_commit_names_the_partitions_it_is_given);
    suite_add_tcase(s, tc);
    tcase_add_loop_test(tc, the_keeper_stops_only_when_created_or_not_allowed, 0, N(verdicts));
    return check_run(s, CK_FORK_GETENV) ? EXIT_FAILURE : EXIT_SUCCESS;
}
