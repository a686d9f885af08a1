/* waitfor.c: bounded waits on a condition (waitfor.h). */
#include "waitfor.h"

#include "core/ids.h"

#include <event2/event.h>
#include <unistd.h>

bool waitfor(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
    long long deadline = ids_monotonic_ms() + timeout_ms;
    for (;;) {
        if (cond(arg))
            return true;
        if (ids_monotonic_ms() >= deadline)
            return false;
        usleep(WAITFOR_POLL_MS * 1000);
    }
}

bool waitfor_loop(struct event_base *base, bool (*cond)(void *arg), void *arg, int timeout_ms)
{
    long long deadline = ids_monotonic_ms() + timeout_ms;
    for (;;) {
        if (cond(arg))
            return true;
        if (ids_monotonic_ms() >= deadline)
            return false;
        struct timeval tv = {0, WAITFOR_POLL_MS * 1000L};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
}
