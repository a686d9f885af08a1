/* nemesis.c: seeded fault injection over the cluster's processes, PostgreSQL and Kafka nodes. */
#include "nemesis.h"

#include "core/ids.h"

#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *const fault_names[NEMESIS_FAULTS] = {
    [NEMESIS_KILL] = "kill -9 a process",        [NEMESIS_PAUSE] = "pause a process",
    [NEMESIS_PG] = "PostgreSQL -m immediate",    [NEMESIS_KAFKA_NODE] = "kill -9 a Kafka node",
    [NEMESIS_STACK] = "restart the whole stack", [NEMESIS_FAILOVER] = "PostgreSQL failover",
};

/* xorshift64*: the same seed gives the same schedule. */
static uint64_t rnd(nemesis *n)
{
    n->rng ^= n->rng >> 12;
    n->rng ^= n->rng << 25;
    n->rng ^= n->rng >> 27;
    return n->rng * 2685821657736338717ULL;
}

static int between(nemesis *n, int lo, int hi)
{
    return lo + (int)(rnd(n) % (uint64_t)(hi - lo + 1));
}

void nemesis_init(nemesis *n, cluster *cl, uint64_t seed, int pause_ms)
{
    memset(n, 0, sizeof(*n));
    n->cl = cl;
    n->rng = seed ^ 0x9e3779b97f4a7c15ULL;
    if (n->rng == 0)
        n->rng = 1;
    n->t0_us = ids_monotonic_us();
    n->pause_ms = pause_ms;
    const char *mode = getenv("CQRS_TEST_KAFKA_MODE");
    const char *dir = getenv("CQRS_TEST_KAFKA_DIR");
    const char *nodes = getenv("CQRS_TEST_KAFKA_NODES");
    if (mode && strcmp(mode, "real") == 0 && dir && *dir) {
        n->kafka_dir = dir;
        n->kafka_nodes = nodes && atoi(nodes) > 0 ? atoi(nodes) : 1;
    }
}

long long nemesis_now_ms(const nemesis *n)
{
    return (ids_monotonic_us() - n->t0_us) / 1000;
}

void nemesis_note(nemesis *n, const char *fmt, ...)
{
    if (n->nlog == n->caplog) {
        n->caplog = n->caplog ? 2 * n->caplog : 64;
        n->log = realloc(n->log, n->caplog * sizeof(*n->log));
        if (!n->log)
            abort();
    }
    char *line = n->log[n->nlog++];
    int len = snprintf(line, sizeof(*n->log), "t=%8.3f s  ", (double)nemesis_now_ms(n) / 1000);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + len, sizeof(*n->log) - (size_t)len, fmt, ap);
    va_end(ap);
    fprintf(stderr, "nemesis: %s\n", line);
}

void nemesis_print(const nemesis *n, FILE *f)
{
    for (size_t i = 0; i < n->nlog; i++)
        fprintf(f, "  %s\n", n->log[i]);
}

static void start_proc(nemesis *n, nemesis_proc *p)
{
    const char *extra[NEMESIS_MAX_EXTRA + 1] = {0};
    for (size_t i = 0; i < p->nextra; i++)
        extra[i] = p->extra[i];
    p->pid = cluster_start(n->cl, p->service, p->idx, extra);
}

void nemesis_add(nemesis *n, const char *name, const char *service, int idx,
                 const char *const *extra)
{
    if (n->nprocs == NEMESIS_MAX_PROCS)
        abort();
    nemesis_proc *p = &n->procs[n->nprocs++];
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "%s", name);
    snprintf(p->service, sizeof(p->service), "%s", service);
    p->idx = idx;
    for (size_t i = 0; extra && extra[i] && p->nextra < NEMESIS_MAX_EXTRA; i++)
        snprintf(p->extra[p->nextra++], sizeof(p->extra[0]), "%s", extra[i]);
    start_proc(n, p);
}

/* Sleeps ms, in slices, returning early (false) when *stop is set. */
static bool nap(int ms, const atomic_bool *stop)
{
    for (int slept = 0; slept < ms; slept += 50) {
        if (stop && atomic_load(stop))
            return false;
        usleep((useconds_t)(ms - slept < 50 ? ms - slept : 50) * 1000);
    }
    return true;
}

/* A process that died without the nemesis's doing is a crash: noted, counted, restarted. */
static void reap_crashed(nemesis *n)
{
    for (size_t i = 0; i < n->nprocs; i++) {
        nemesis_proc *p = &n->procs[i];
        int st;
        if (p->pid > 0 && waitpid(p->pid, &st, WNOHANG) == p->pid) {
            n->crashed++;
            nemesis_note(n, "CRASH: %s (pid %d) exited on its own (%s %d); restarting it", p->name,
                         (int)p->pid, WIFSIGNALED(st) ? "signal" : "status",
                         WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
            start_proc(n, p);
        }
    }
}

static void kill_proc(nemesis_proc *p)
{
    if (p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
}

/* The pid of Kafka node k (1-based) from kafka.sh's pid file; 0 when it has none. */
static pid_t kafka_pid(const nemesis *n, int k)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/node%d/pid", n->kafka_dir, k);
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (f) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return (pid_t)pid;
}

/* True while pid runs (a zombie that nobody reaped has stopped running). */
static bool running(pid_t pid)
{
    char path[64], state = 'X';
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
        state = 'X';
    fclose(f);
    return state != 'Z' && state != 'X';
}

/* SIGKILLs Kafka node k (1-based) and waits until it is gone. */
static void kafka_kill(nemesis *n, int k)
{
    pid_t pid = kafka_pid(n, k);
    if (pid <= 0 || !running(pid))
        return;
    kill(pid, SIGKILL);
    for (int i = 0; i < 200 && running(pid); i++)
        usleep(50 * 1000);
}

/* Starts the Kafka nodes that are down, together (a KRaft node waits for its quorum). */
static void kafka_start_down(nemesis *n)
{
    if (!n->kafka_dir)
        return;
    const char *repo = getenv("CQRS_REPO");
    char cmd[4096];
    size_t len = (size_t)snprintf(cmd, sizeof(cmd), "(");
    int down = 0;
    for (int k = 1; k <= n->kafka_nodes; k++) {
        pid_t pid = kafka_pid(n, k);
        if (pid > 0 && running(pid))
            continue;
        down++;
        len += (size_t)snprintf(cmd + len, sizeof(cmd) - len,
                                "'%s/deploy/kafka/kafka.sh' start-node '%s' %d & ",
                                repo ? repo : ".", n->kafka_dir, k);
    }
    if (!down)
        return;
    snprintf(cmd + len, sizeof(cmd) - len, "wait) >>'%s/nemesis-kafka.log' 2>&1", n->cl->dir);
    long long t = nemesis_now_ms(n);
    int rc = system(cmd);
    nemesis_note(n, "  %d Kafka node(s) started again in %.1f s%s", down,
                 (double)(nemesis_now_ms(n) - t) / 1000, rc == 0 ? "" : " (kafka.sh failed)");
}

/* Starts PostgreSQL, retrying: a start right after an immediate stop may find the port busy
   (pg_ctl's failure is the condition; the half second between tries lets the port free). */
static void pg_start(nemesis *n)
{
    for (int i = 0; i < 5; i++) {
        if (cluster_pg(n->cl, "start") == 0)
            return;
        usleep(500 * 1000);
    }
    nemesis_note(n, "  PostgreSQL did not start again");
}

static nemesis_fault next_fault(nemesis *n)
{
    if (n->ndeck == 0) { /* a new deck: every kind once, a kill twice, in a seeded order */
        n->deck[n->ndeck++] = NEMESIS_KILL;
        n->deck[n->ndeck++] = NEMESIS_KILL;
        n->deck[n->ndeck++] = NEMESIS_PAUSE;
        n->deck[n->ndeck++] = NEMESIS_PG;
        n->deck[n->ndeck++] = NEMESIS_STACK;
        if (n->kafka_dir)
            n->deck[n->ndeck++] = NEMESIS_KAFKA_NODE;
        if (n->cl->standby_port)
            n->deck[n->ndeck++] = NEMESIS_FAILOVER;
        for (size_t i = n->ndeck - 1; i > 0; i--) {
            size_t j = rnd(n) % (i + 1);
            nemesis_fault t = n->deck[i];
            n->deck[i] = n->deck[j];
            n->deck[j] = t;
        }
    }
    return n->deck[--n->ndeck];
}

/*
 * Injects fault f. The sleeps here are not waits for a condition: each is the fault's duration,
 * drawn from the seed, during which the clients keep writing; what must hold afterwards is
 * checked by the caller, on conditions.
 */
static void step(nemesis *n, nemesis_fault f)
{
    n->done[f]++;
    switch (f) {
    case NEMESIS_KILL: {
        nemesis_proc *p = &n->procs[rnd(n) % n->nprocs];
        int down = between(n, 100, 2000);
        nemesis_note(n, "kill -9 %s (pid %d), down %d ms", p->name, (int)p->pid, down);
        kill_proc(p);
        usleep((useconds_t)down * 1000);
        start_proc(n, p);
        nemesis_note(n, "  %s started again (pid %d)", p->name, (int)p->pid);
        break;
    }
    case NEMESIS_PAUSE: {
        nemesis_proc *p = &n->procs[rnd(n) % n->nprocs];
        int paused = n->pause_ms + between(n, 0, 3000);
        nemesis_note(n, "SIGSTOP %s (pid %d) for %d ms", p->name, (int)p->pid, paused);
        kill(p->pid, SIGSTOP);
        usleep((useconds_t)paused * 1000);
        kill(p->pid, SIGCONT);
        nemesis_note(n, "  SIGCONT %s", p->name);
        break;
    }
    case NEMESIS_PG: {
        int down = between(n, 500, 4000);
        nemesis_note(n, "PostgreSQL stopped -m immediate, down %d ms", down);
        if (cluster_pg(n->cl, "kill") != 0)
            nemesis_note(n, "  pg_ctl stop -m immediate failed");
        usleep((useconds_t)down * 1000);
        pg_start(n);
        nemesis_note(n, "  PostgreSQL started again");
        break;
    }
    case NEMESIS_KAFKA_NODE: {
        int k = between(n, 1, n->kafka_nodes);
        int down = between(n, 500, 4000);
        nemesis_note(n, "kill -9 Kafka node %d (pid %d), down %d ms", k, (int)kafka_pid(n, k),
                     down);
        kafka_kill(n, k);
        usleep((useconds_t)down * 1000);
        kafka_start_down(n);
        break;
    }
    case NEMESIS_STACK: {
        int down = between(n, 200, 1500);
        nemesis_note(n,
                     "whole stack killed (every service -9, PostgreSQL -m immediate%s), down "
                     "%d ms",
                     n->kafka_dir ? ", every Kafka node -9" : "", down);
        for (size_t i = 0; i < n->nprocs; i++)
            kill_proc(&n->procs[i]);
        if (cluster_pg(n->cl, "kill") != 0)
            nemesis_note(n, "  pg_ctl stop -m immediate failed");
        for (int k = 1; n->kafka_dir && k <= n->kafka_nodes; k++)
            kafka_kill(n, k);
        usleep((useconds_t)down * 1000);
        kafka_start_down(n);
        pg_start(n);
        for (size_t i = 0; i < n->nprocs; i++)
            start_proc(n, &n->procs[i]);
        nemesis_note(n, "  whole stack started again on its data");
        break;
    }
    case NEMESIS_FAILOVER: {
        long long asked_us = ids_monotonic_us(), killed_us = 0, promoted_us = 0;
        nemesis_note(n,
                     "failover: once the standby (port %d) has all the primary flushed, kill -9 "
                     "PostgreSQL's primary (port %d) and promote the standby",
                     n->cl->standby_port, n->cl->pg_port);
        if (cluster_pg_failover(n->cl, &killed_us, &promoted_us) != 0) {
            nemesis_note(n, "  failover failed (see the test's output)");
            break;
        }
        nemesis_note(n,
                     "  standby in step after %lld ms; promoted %.1f s after the kill; the old "
                     "primary streams as the new one's synchronous standby (port %d)",
                     (killed_us - asked_us) / 1000, (double)(promoted_us - killed_us) / 1e6,
                     n->cl->standby_port);
        break;
    }
    case NEMESIS_FAULTS:
        break;
    }
}

void nemesis_run(nemesis *n, int run_ms, const atomic_bool *stop)
{
    long long end = nemesis_now_ms(n) + run_ms;
    while (!atomic_load(stop) && nemesis_now_ms(n) < end) {
        reap_crashed(n);
        if (!nap(between(n, 1000, 4000), stop) || nemesis_now_ms(n) >= end)
            break;
        reap_crashed(n);
        step(n, next_fault(n));
    }
    reap_crashed(n);
}

void nemesis_heal(nemesis *n)
{
    nemesis_note(n, "heal: every process continued, everything down started");
    for (size_t i = 0; i < n->nprocs; i++) {
        if (n->procs[i].pid > 0)
            kill(n->procs[i].pid, SIGCONT);
    }
    reap_crashed(n);
    for (size_t i = 0; i < n->nprocs; i++) {
        if (n->procs[i].pid <= 0)
            start_proc(n, &n->procs[i]);
    }
    pg_start(n);
    kafka_start_down(n);
    char done[300];
    size_t len = 0;
    for (int f = 0; f < NEMESIS_FAULTS; f++)
        len += (size_t)snprintf(done + len, sizeof(done) - len, "%s%s: %d", f ? ", " : "",
                                fault_names[f], n->done[f]);
    nemesis_note(n, "faults injected: %s; crashes: %d", done, n->crashed);
}

bool nemesis_finish(nemesis *n, cluster *cl, bool failed)
{
    pid_t pids[NEMESIS_MAX_PROCS];
    for (size_t i = 0; i < n->nprocs; i++)
        pids[i] = n->procs[i].pid;
    failed = cluster_finish(cl, pids, n->nprocs, failed);
    free(n->log);
    n->log = NULL;
    return failed;
}
