/* dinfer-server's Prometheus metrics: counters and histograms the engine loop observes (into its
 * own copy, handed to the shared state after each step), rendered in Prometheus's text format
 * (version 0.0.4) with the gauges of the latest snapshot. Names carry the `dinfer_` prefix, their
 * unit, and `_total` on counters, as Prometheus's naming rules ask. */
#ifndef DINFER_LAUNCH_SERVER_METRICS_H
#define DINFER_LAUNCH_SERVER_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define SRV_HIST_MAX 20 /* finite bucket bounds; +Inf is implicit */

typedef struct srv_hist {
    const double *bounds; /* (n) ascending upper bounds: seconds, or tokens for the step sizes */
    int n;
    uint64_t counts[SRV_HIST_MAX + 1]; /* per bucket (not cumulative); the last is above every bound */
    uint64_t count;
    double sum;
} srv_hist;

/* Why requests ended. */
typedef enum srv_finish {
    SRV_FINISH_STOP,      /* an end-of-sequence token, a stop token or a stop string */
    SRV_FINISH_LENGTH,    /* max_tokens or the context */
    SRV_FINISH_CANCELLED, /* the client cancelled or went away */
    SRV_FINISH_ERROR,     /* refused or failed (deadline, shutdown, ...) */
    SRV_FINISH_KINDS
} srv_finish;

typedef struct srv_metrics {
    uint64_t prompt_tokens, generation_tokens; /* of requests that finished / of every token sampled */
    uint64_t finished[SRV_FINISH_KINDS];
    srv_hist ttft, tpot, e2e, step; /* time to first token, per output token after it, request, engine step */
    srv_hist iter_tokens;           /* tokens of each engine step started */
} srv_metrics;

void srv_metrics_init(srv_metrics *m);
void srv_hist_observe(srv_hist *h, double v);

/* The gauges rendered with the counters. */
typedef struct srv_gauges {
    int running, waiting;
    double kv_usage; /* used KV blocks / all, 0..1 */
    uint64_t preemptions;
    int connections;
    int in_flight;               /* engine steps in flight */
    uint64_t steps, overlapped;  /* engine steps, and those started while another was in flight */
} srv_gauges;

/* The exposition text (malloc'd, NUL-terminated, *len its length), or NULL when out of memory. */
char *srv_metrics_render(const srv_metrics *m, const srv_gauges *g, size_t *len);

#endif
