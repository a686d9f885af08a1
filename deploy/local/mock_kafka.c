/*
 * mock_kafka.c: runs librdkafka's mock Kafka cluster (rdkafka_mock.h) as a standalone process on
 * loopback, for `make run` and the tests. Prints and writes the bootstrap servers, then waits for
 * SIGINT or SIGTERM.
 */
#include <errno.h>
#include <pthread.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f, const char *prog)
{
    fprintf(f,
            "usage: %s [--brokers N] [--partitions N] [--topics a,b,...] [--bootstrap-file PATH]\n"
            "Runs librdkafka's mock Kafka cluster on 127.0.0.1 until SIGINT or SIGTERM.\n"
            "SIGUSR1 takes all brokers down, SIGUSR2 brings them back up.\n"
            "  --brokers         number of brokers (default 1)\n"
            "  --partitions      partitions per topic (default 4)\n"
            "  --topics          topics to create (default commands,events,replies,commands.dlq)\n"
            "  --bootstrap-file  write the bootstrap servers here once the cluster is up\n",
            prog);
}

static int parse_count(const char *arg, const char *name, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(arg, &end, 10);
    if (errno || *end || v < 1 || v > 1000) {
        fprintf(stderr, "mock-kafka: %s: '%s' is not a number in [1, 1000]\n", name, arg);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int main(int argc, char **argv)
{
    int brokers = 1, partitions = 4;
    const char *topics = "commands,events,replies,commands.dlq";
    const char *bootstrap_file = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0) {
            usage(stdout, argv[0]);
            return 0;
        }
        /* Both --name=value and --name value. */
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!v || strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "mock-kafka: unexpected argument '%s'\n", a);
            usage(stderr, argv[0]);
            return 2;
        }
        if (nlen == 9 && strncmp(a, "--brokers", nlen) == 0) {
            if (parse_count(v, "--brokers", &brokers))
                return 2;
        } else if (nlen == 12 && strncmp(a, "--partitions", nlen) == 0) {
            if (parse_count(v, "--partitions", &partitions))
                return 2;
        } else if (nlen == 8 && strncmp(a, "--topics", nlen) == 0) {
            topics = v;
        } else if (nlen == 16 && strncmp(a, "--bootstrap-file", nlen) == 0) {
            bootstrap_file = v;
        } else {
            fprintf(stderr, "mock-kafka: unknown option '%.*s'\n", (int)nlen, a);
            usage(stderr, argv[0]);
            return 2;
        }
    }

    /* Block the stop signals before librdkafka starts its threads, so sigwait() gets them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGHUP);
    sigaddset(&stop, SIGUSR1);
    sigaddset(&stop, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* This handle only hosts the cluster; it never connects, so silence its config warning. */
    rd_kafka_conf_set(conf, "log_level", "3", errstr, sizeof(errstr));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "mock-kafka: %s\n", errstr);
        return 1;
    }
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
    if (!mc) {
        fprintf(stderr, "mock-kafka: cannot create the mock cluster\n");
        rd_kafka_destroy(rk);
        return 1;
    }
    char *list = strdup(topics), *save = NULL;
    for (char *t = strtok_r(list, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int rf = brokers < 3 ? brokers : 3;
        rd_kafka_resp_err_t e = rd_kafka_mock_topic_create(mc, t, partitions, rf);
        if (e) {
            fprintf(stderr, "mock-kafka: topic %s: %s\n", t, rd_kafka_err2str(e));
            free(list);
            return 1;
        }
    }
    free(list);

    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    if (bootstrap_file) {
        /* Write then rename, so a reader never sees half a line. */
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.tmp", bootstrap_file);
        FILE *f = fopen(tmp, "w");
        if (!f || fprintf(f, "%s\n", bootstraps) < 0 || fclose(f) != 0 ||
            rename(tmp, bootstrap_file) != 0) {
            fprintf(stderr, "mock-kafka: cannot write %s: %s\n", bootstrap_file, strerror(errno));
            return 1;
        }
    }
    printf("mock-kafka: %d broker(s), %d partitions per topic (%s), bootstrap=%s\n", brokers,
           partitions, topics, bootstraps);
    fflush(stdout);

    /* SIGUSR1 takes every broker down (connections dropped, new ones refused), SIGUSR2 brings
       them back: the fault tests use this to play a broker outage. */
    int sig = 0;
    while (sigwait(&stop, &sig) == 0 && (sig == SIGUSR1 || sig == SIGUSR2)) {
        for (int id = 1; id <= brokers; id++) {
            rd_kafka_resp_err_t e = sig == SIGUSR1 ? rd_kafka_mock_broker_set_down(mc, id)
                                                   : rd_kafka_mock_broker_set_up(mc, id);
            if (e)
                fprintf(stderr, "mock-kafka: broker %d: %s\n", id, rd_kafka_err2str(e));
        }
        printf("mock-kafka: brokers %s\n", sig == SIGUSR1 ? "down" : "up");
        fflush(stdout);
    }
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    if (bootstrap_file)
        remove(bootstrap_file);
    return 0;
}
