#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

void base_log(int rank, const char *fmt, ...)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32], msg[1024];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ rank %d: %s\n", when, ts.tv_nsec / 1000000, rank, msg);
    fflush(stderr);
}

int base_ratelimit_ok(base_ratelimit *r, double now, uint64_t *suppressed)
{
    if (now - r->window_start >= r->interval) {
        r->window_start = now;
        r->in_window = 0;
    }
    if (r->in_window >= r->burst) {
        r->suppressed++;
        return 0;
    }
    r->in_window++;
    if (suppressed)
        *suppressed = r->suppressed;
    r->suppressed = 0;
    return 1;
}
