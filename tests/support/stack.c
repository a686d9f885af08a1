/* stack.c: the test harness around deploy/local/run.sh. */
#include "stack.h"

#include "core/ids.h"
#include "httpc.h"
#include "waitfor.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static bool port_binds(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/*
 * Below the kernel's ephemeral range: the servers the tests stop and start again (PostgreSQL,
 * the gateway) keep their port while down, and there no outgoing connection and no bind to port
 * 0 can take it in the meantime.
 */
int stack_free_port(void)
{
    static unsigned seed;
    if (!seed)
        seed = (unsigned)getpid() ^ (unsigned)time(NULL);
    int low = 32768;
    FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    if (f) {
        if (fscanf(f, "%d", &low) != 1)
            low = 32768;
        fclose(f);
    }
    if (low <= 12000)
        low = 60000;
    for (int i = 0; i < 1000; i++) {
        int port = 10000 + (int)(rand_r(&seed) % (unsigned)(low - 10000));
        if (port_binds(port))
            return port;
    }
    abort();
}

void stack_show_logs(const stack *s)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "tail -n 40 %s/*.log 1>&2", s->run_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "(no logs in %s)\n", s->run_dir);
}

/* Starts build/mock-kafka writing its bootstrap into the run folder. */
static int start_mock(stack *s, const char *build)
{
    char bin[512], file[400], log[400];
    snprintf(bin, sizeof(bin), "%s/mock-kafka", build);
    snprintf(file, sizeof(file), "%s/own-kafka.bootstrap", s->run_dir);
    snprintf(log, sizeof(log), "%s/own-mock-kafka.log", s->run_dir);
    s->mock_kafka = fork();
    if (s->mock_kafka == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execl(bin, "mock-kafka", "--bootstrap-file", file, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 100; i++) {
        FILE *f = fopen(file, "r");
        if (f) {
            bool ok = fgets(s->bootstrap, sizeof(s->bootstrap), f) != NULL;
            fclose(f);
            s->bootstrap[strcspn(s->bootstrap, "\n")] = '\0';
            if (ok && *s->bootstrap)
                return 0;
        }
        usleep(100000);
    }
    fprintf(stderr, "mock-kafka did not start\n");
    return -1;
}

static int spawn_run_sh(stack *s, const char *build);

int stack_launch(stack *s, bool own_mock)
{
    memset(s, 0, sizeof(*s));
    const char *build = getenv("CQRS_BUILD");
    build = build ? build : "build";
    const char *mode = getenv("CQRS_TEST_KAFKA_MODE");
    const char *real_bootstrap = getenv("CQRS_TEST_KAFKA_BOOTSTRAP");
    s->real_kafka = mode && strcmp(mode, "real") == 0 && real_bootstrap;
    snprintf(s->run_dir, sizeof(s->run_dir), "/tmp/cqrs-stack-XXXXXX");
    if (!mkdtemp(s->run_dir) || chmod(s->run_dir, 0755) != 0)
        return -1;
    s->http_port = stack_free_port();
    s->pg_port = stack_free_port();
    snprintf(s->conninfo, sizeof(s->conninfo), "host=127.0.0.1 port=%d user=postgres dbname=cqrs",
             s->pg_port);
    if (s->real_kafka) {
        snprintf(s->bootstrap, sizeof(s->bootstrap), "%s", real_bootstrap);
        /* Own topics and groups on a cluster other tests share; the same ones after a restart. */
        static int launched;
        snprintf(s->topic_prefix, sizeof(s->topic_prefix), "t%d-%d-", (int)getpid(), launched++);
    } else if (own_mock && start_mock(s, build) != 0)
        return -1;
    return spawn_run_sh(s, build);
}

/* Waits (up to 90 s) until /readyz answers 200; learns the bootstrap of run.sh's mock. */
static int wait_ready(stack *s)
{
    /* Ready: PostgreSQL reachable, Kafka healthy, reply partitions owned. */
    for (long long deadline = ids_monotonic_ms() + 90000; ids_monotonic_ms() < deadline;) {
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid) {
            fprintf(stderr, "run.sh exited during start-up\n");
            s->pid = 0;
            stack_show_logs(s);
            return -1;
        }
        httpc_response r = httpc_request(s->http_port, "GET", "/readyz", NULL, NULL, 1000);
        int st = r.status;
        httpc_free(&r);
        if (st == 200) {
            if (!*s->bootstrap) { /* run.sh's own mock cluster */
                char path[400];
                snprintf(path, sizeof(path), "%s/kafka.bootstrap", s->run_dir);
                FILE *f = fopen(path, "r");
                if (f && fgets(s->bootstrap, sizeof(s->bootstrap), f))
                    s->bootstrap[strcspn(s->bootstrap, "\n")] = '\0';
                if (f)
                    fclose(f);
            }
            return 0;
        }
        usleep(WAITFOR_POLL_MS * 1000);
    }
    fprintf(stderr, "the stack was not ready within 90 s\n");
    stack_show_logs(s);
    return -1;
}

int stack_start(stack *s, bool own_mock)
{
    if (stack_launch(s, own_mock) != 0)
        return -1;
    return wait_ready(s);
}

int stack_restart(stack *s)
{
    const char *build = getenv("CQRS_BUILD");
    build = build ? build : "build";
    if (!s->real_kafka && s->mock_kafka == 0)
        s->bootstrap[0] = '\0'; /* run.sh's own mock cluster died with it: it starts another */
    if (spawn_run_sh(s, build) != 0)
        return -1;
    return wait_ready(s);
}

/* Runs run.sh in s->run_dir, its output appended to run.sh.log there. */
static int spawn_run_sh(stack *s, const char *build)
{
    char log_path[400];
    snprintf(log_path, sizeof(log_path), "%s/run.sh.log", s->run_dir);
    s->pid = fork();
    if (s->pid == 0) {
        char port[16], pgp[16];
        snprintf(port, sizeof(port), "%d", s->http_port);
        snprintf(pgp, sizeof(pgp), "%d", s->pg_port);
        setenv("RUN_DIR", s->run_dir, 1);
        setenv("HTTP_PORT", port, 1);
        setenv("PROCESSOR_HTTP_PORT", "0", 1);
        setenv("PROJECTOR_HTTP_PORT", "0", 1);
        setenv("PG_PORT", pgp, 1);
        setenv("BUILD", build, 1);
        if (*s->bootstrap)
            setenv("KAFKA_BOOTSTRAP", s->bootstrap, 1);
        if (s->mock_kafka > 0)
            setenv("KAFKA_IS_MOCK", "1", 1);
        if (*s->topic_prefix)
            setenv("TOPIC_PREFIX", s->topic_prefix, 1);
        int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execl("/bin/bash", "bash", "deploy/local/run.sh", (char *)NULL);
        _exit(127);
    }
    return s->pid > 0 ? 0 : -1;
}

int stack_stop(stack *s)
{
    int status = -1;
    if (s->pid > 0) {
        kill(s->pid, SIGINT);
        pid_t got = 0;
        for (int i = 0; i < 600 && got == 0; i++) {
            got = waitpid(s->pid, &status, WNOHANG);
            if (got == 0)
                usleep(100000);
        }
        if (got != s->pid) {
            kill(s->pid, SIGKILL);
            waitpid(s->pid, NULL, 0);
            status = -1;
        }
        s->pid = 0;
    }
    if (s->mock_kafka > 0) {
        kill(s->mock_kafka, SIGTERM);
        waitpid(s->mock_kafka, NULL, 0);
        s->mock_kafka = 0;
    }
    return status;
}

void stack_remove(stack *s)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", s->run_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", s->run_dir);
}

bool stack_logs_clean(const stack *s)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd),
             "grep -A30 -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' %s/*.log >&2",
             s->run_dir);
    return system(cmd) != 0;
}

static int kafka_nodes_set(stack *s, bool up, const char *nodes)
{
    if (s->mock_kafka > 0)
        return kill(s->mock_kafka, up ? SIGUSR2 : SIGUSR1);
    const char *dir = getenv("CQRS_TEST_KAFKA_DIR");
    const char *repo = getenv("CQRS_REPO");
    if (!s->real_kafka || !dir)
        return -1;
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "%s/deploy/kafka/kafka.sh %s '%s' %s >&2", repo ? repo : ".",
             up ? "start-node" : "stop-node", dir, nodes);
    return system(cmd) == 0 ? 0 : -1;
}

int stack_kafka_set(stack *s, bool up)
{
    return kafka_nodes_set(s, up, "1");
}

int stack_kafka_set_all(stack *s, bool up)
{
    const char *nodes = getenv("CQRS_TEST_KAFKA_NODES");
    return kafka_nodes_set(s, up, nodes && atoi(nodes) == 3 ? "1 2 3" : "1");
}

int file_lines_mentioning(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) >= 0)
        n += strstr(line, needle) != NULL;
    free(line);
    fclose(f);
    return n;
}

bool file_mentions(const char *path, const char *needle)
{
    return file_lines_mentioning(path, needle) > 0;
}

pid_t stack_processor_pid(const stack *s)
{
    char needle[160], who[4096];
    snprintf(needle, sizeof(needle), "state-processor --pg.conninfo=host=127.0.0.1 port=%d ",
             s->pg_port);
    if (!stack_process_mentions(needle, who, sizeof(who)))
        return -1;
    return (pid_t)atoi(who + strlen("pid "));
}

bool stack_process_mentions(const char *needle, char *who, size_t wholen)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    bool found = false;
    while (d && (e = readdir(d)) && !found) {
        if (atoi(e->d_name) <= 0 || atoi(e->d_name) == getpid())
            continue;
        char path[300], buf[4096];
        snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
            continue;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\0')
                buf[i] = ' ';
        }
        buf[n] = '\0';
        if (strstr(buf, needle)) {
            snprintf(who, wholen, "pid %.16s: %.3000s", e->d_name, buf);
            found = true;
        }
    }
    if (d)
        closedir(d);
    return found;
}
