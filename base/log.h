/* Log lines on stderr: "2026-11-25T03:40:01.123Z rank R: message", one write each, flushed. */
#ifndef DINFER_BASE_LOG_H
#define DINFER_BASE_LOG_H

#include <stdint.h>

void base_log(int rank, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Rate limiting for lines a client can provoke at will (refused connections, bad frames): at most
 * `burst` lines per `interval` seconds; the lines held back are counted and reported with the
 * next line that is let through. Zero-initialise, then set burst and interval. */
typedef struct base_ratelimit {
    double interval;
    int burst;
    double window_start;
    int in_window;
    uint64_t suppressed;
} base_ratelimit;

/* True when a line may be written now; *suppressed (may be NULL) gets the count held back since
 * the last line let through. */
int base_ratelimit_ok(base_ratelimit *r, double now, uint64_t *suppressed);

#endif
