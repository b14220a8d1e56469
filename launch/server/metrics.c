/* Prometheus's text exposition format for dinfer-server's metrics (see metrics.h). */
#include "launch/server/metrics.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* latency buckets (seconds): vLLM's choices, so dashboards built for it read ours alike */
static const double ttft_bounds[] = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
                                     0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0};
static const double tpot_bounds[] = {0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05,
                                     0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5};
static const double e2e_bounds[] = {0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0,
                                    20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0};
static const double step_bounds[] = {0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.03,
                                     0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0};
/* tokens an engine step computes (vLLM's iteration-token buckets) */
static const double iter_bounds[] = {1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384};

#define N_OF(a) ((int)(sizeof(a) / sizeof *(a)))
_Static_assert(N_OF(ttft_bounds) <= SRV_HIST_MAX && N_OF(tpot_bounds) <= SRV_HIST_MAX &&
               N_OF(e2e_bounds) <= SRV_HIST_MAX && N_OF(step_bounds) <= SRV_HIST_MAX &&
                   N_OF(iter_bounds) <= SRV_HIST_MAX, "bucket bounds fit");

void srv_metrics_init(srv_metrics *m)
{
    memset(m, 0, sizeof *m);
    m->ttft = (srv_hist){.bounds = ttft_bounds, .n = N_OF(ttft_bounds)};
    m->tpot = (srv_hist){.bounds = tpot_bounds, .n = N_OF(tpot_bounds)};
    m->e2e = (srv_hist){.bounds = e2e_bounds, .n = N_OF(e2e_bounds)};
    m->step = (srv_hist){.bounds = step_bounds, .n = N_OF(step_bounds)};
    m->iter_tokens = (srv_hist){.bounds = iter_bounds, .n = N_OF(iter_bounds)};
}

void srv_hist_observe(srv_hist *h, double v)
{
    if (!(v >= 0)) /* NaN or negative: not a duration or a count */
        return;
    int b = 0;
    while (b < h->n && v > h->bounds[b])
        b++;
    h->counts[b]++;
    h->count++;
    h->sum += v;
}

typedef struct out {
    char *p;
    size_t len, cap;
    int bad;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...)
{
    if (o->bad)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const int k = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (k < 0) {
            o->bad = 1;
            return;
        }
        if ((size_t)k < o->cap - o->len) {
            o->len += (size_t)k;
            return;
        }
        size_t cap = o->cap * 2 > o->len + (size_t)k + 1 ? o->cap * 2 : o->len + (size_t)k + 1;
        char *np = realloc(o->p, cap);
        if (!np) {
            o->bad = 1;
            return;
        }
        o->p = np, o->cap = cap;
    }
}

static void head(out *o, const char *name, const char *type, const char *help)
{
    put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void hist(out *o, const char *name, const char *help, const srv_hist *h)
{
    head(o, name, "histogram", help);
    uint64_t cum = 0;
    for (int b = 0; b < h->n; b++) {
        cum += h->counts[b];
        put(o, "%s_bucket{le=\"%g\"} %llu\n", name, h->bounds[b], (unsigned long long)cum);
    }
    put(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
    put(o, "%s_sum %.9g\n%s_count %llu\n", name, h->sum, name, (unsigned long long)h->count);
}

char *srv_metrics_render(const srv_metrics *m, const srv_gauges *g, size_t *len)
{
    out o = {.cap = 8192};
    if (!(o.p = malloc(o.cap)))
        return NULL;
    o.p[0] = '\0';
    head(&o, "dinfer_requests_running", "gauge", "Requests in the running batch.");
    put(&o, "dinfer_requests_running %d\n", g->running);
    head(&o, "dinfer_requests_waiting", "gauge", "Requests queued for their first step.");
    put(&o, "dinfer_requests_waiting %d\n", g->waiting);
    head(&o, "dinfer_kv_cache_usage_ratio", "gauge", "Share of the KV cache blocks in use (0 to 1).");
    put(&o, "dinfer_kv_cache_usage_ratio %.6f\n", g->kv_usage);
    head(&o, "dinfer_client_connections", "gauge", "Open protocol-socket client connections.");
    put(&o, "dinfer_client_connections %d\n", g->connections);
    head(&o, "dinfer_engine_steps_in_flight", "gauge",
         "Engine steps started and not yet taken back (up to --pipeline-depth with pipeline parallelism).");
    put(&o, "dinfer_engine_steps_in_flight %d\n", g->in_flight);
    head(&o, "dinfer_engine_steps_total", "counter", "Engine steps run.");
    put(&o, "dinfer_engine_steps_total %llu\n", (unsigned long long)g->steps);
    head(&o, "dinfer_engine_steps_overlapped_total", "counter",
         "Engine steps started while another was in flight (pipeline parallelism keeping stages busy).");
    put(&o, "dinfer_engine_steps_overlapped_total %llu\n", (unsigned long long)g->overlapped);
    head(&o, "dinfer_prompt_tokens_total", "counter", "Prompt tokens of finished requests.");
    put(&o, "dinfer_prompt_tokens_total %llu\n", (unsigned long long)m->prompt_tokens);
    head(&o, "dinfer_generation_tokens_total", "counter", "Tokens generated.");
    put(&o, "dinfer_generation_tokens_total %llu\n", (unsigned long long)m->generation_tokens);
    head(&o, "dinfer_preemptions_total", "counter", "Sequences preempted (their KV blocks freed, recomputed later).");
    put(&o, "dinfer_preemptions_total %llu\n", (unsigned long long)g->preemptions);
    static const char *reasons[SRV_FINISH_KINDS] = {"stop", "length", "cancelled", "error"};
    head(&o, "dinfer_requests_finished_total", "counter", "Requests ended, by reason.");
    for (int r = 0; r < SRV_FINISH_KINDS; r++)
        put(&o, "dinfer_requests_finished_total{reason=\"%s\"} %llu\n", reasons[r], (unsigned long long)m->finished[r]);
    hist(&o, "dinfer_time_to_first_token_seconds", "From arrival to the first generated token.", &m->ttft);
    hist(&o, "dinfer_time_per_output_token_seconds", "Mean time per generated token after the first, per request.",
         &m->tpot);
    hist(&o, "dinfer_e2e_request_latency_seconds", "From arrival to the last token.", &m->e2e);
    hist(&o, "dinfer_step_duration_seconds",
         "One engine call: a whole step, or with pipeline parallelism starting one or taking one back.", &m->step);
    hist(&o, "dinfer_iteration_tokens", "Tokens per engine step, prompt and decode (one observation a step started).",
         &m->iter_tokens);
    if (o.bad) {
        free(o.p);
        return NULL;
    }
    *len = o.len;
    return o.p;
}
