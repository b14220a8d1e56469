/* The load of tests/soak.sh: STREAMS concurrent generations against a dinfer-server for SECONDS,
 * spread over CONNS connections, each stream one of a fixed set of prompts (lengths 1 to 40,
 * greedy or seeded sampling, 1 to 48 new tokens). First every prompt runs alone to record its
 * tokens; then, under load, every finished stream must give exactly those tokens, and a new one
 * takes its place. One stream in 8 is cancelled once it has a random number of its tokens, one in
 * 16 carries a deadline of 1 to 40 ms: such a stream's tokens must be a prefix of its solo run's,
 * ended by CANCELLED / DEADLINE_EXCEEDED, or all of them when it finished first. Prints one line
 * per 30 s (streams done, mismatches, cancelled, expired) and exits 1 on any mismatch or error.
 *   soak_client HOST:PORT STREAMS CONNS SECONDS */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "proto/client.h"
#include "runtime/sampler.h"

#define N_PROMPTS 64
#define MAX_GEN 48

typedef struct prompt {
    int32_t tokens[40];
    int len, max_tokens;
    float temperature;
    uint64_t seed;
    int32_t want[MAX_GEN];
    int n_want;
} prompt;

typedef struct stream {
    int prompt;         /* -1: free */
    int32_t got[MAX_GEN];
    int n_got;
    int cancel_at;      /* cancel once this many tokens came; 0: never */
    bool cancel_sent, has_deadline;
    uint64_t late_cancel; /* a finished request whose cancel crossed its end: NOT_FOUND expected */
} stream;

static prompt prompts[N_PROMPTS];

static dinfer_params params_of(const prompt *p)
{
    dinfer_params q;
    dinfer_params_init(&q);
    q.prompt = p->tokens, q.prompt_len = (size_t)p->len, q.max_tokens = (uint32_t)p->max_tokens;
    q.temperature = p->temperature, q.has_seed = true, q.seed = p->seed, q.ignore_eos = true;
    if (p->temperature > 0)
        q.top_p = 0.9f;
    return q;
}

static int collect(void *ctx, const Dinfer__V1__TokenChunk *ch)
{
    prompt *p = ctx;
    for (size_t i = 0; i < ch->n_tokens && p->n_want < MAX_GEN; i++)
        p->want[p->n_want++] = ch->tokens[i];
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: soak_client HOST:PORT STREAMS CONNS SECONDS\n");
        return 2;
    }
    char host[256];
    const char *colon = strrchr(argv[1], ':');
    snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - argv[1]) : 0, argv[1]);
    const int port = colon ? atoi(colon + 1) : 0, n_streams = atoi(argv[2]), n_conns = atoi(argv[3]);
    const double seconds = atof(argv[4]);
    base_err err;
    dinfer_client *solo;
    if (dinfer_connect(&solo, host, port, NULL, &err)) {
        fprintf(stderr, "soak: %s\n", err.msg);
        return 1;
    }
    wire_frame *hf;
    if (dinfer_health(solo, &hf, &err) || hf->body_case != DINFER__V1__FRAME__BODY_HEALTH_RESPONSE) {
        fprintf(stderr, "soak: no health answer\n");
        return 1;
    }
    const uint32_t vocab = hf->health_response->vocab_size;
    wire_frame_free(hf);
    /* the prompts, and each one's tokens when it runs alone */
    rt_rng rng;
    rt_rng_seed(&rng, 77);
    for (int i = 0; i < N_PROMPTS; i++) {
        prompt *p = &prompts[i];
        p->len = 1 + (int)(rt_rng_next(&rng) % 40);
        for (int j = 0; j < p->len; j++)
            p->tokens[j] = (int32_t)(rt_rng_next(&rng) % vocab);
        p->max_tokens = 1 + (int)(rt_rng_next(&rng) % MAX_GEN);
        p->temperature = i % 2 ? 0.8f : 0.0f;
        p->seed = rt_rng_next(&rng);
        dinfer_params q = params_of(p);
        dinfer_result r;
        if (dinfer_generate(solo, &q, collect, p, &r, &err) || r.status || p->n_want != p->max_tokens) {
            fprintf(stderr, "soak: the solo run of prompt %d failed: %s %s\n", i, err.msg, r.message);
            return 1;
        }
    }
    dinfer_close(solo);
    dinfer_client **conns = calloc((size_t)n_conns, sizeof *conns);
    stream *st = calloc((size_t)n_streams, sizeof *st);
    struct pollfd *pfd = calloc((size_t)n_conns, sizeof *pfd);
    for (int c = 0; c < n_conns; c++)
        if (dinfer_connect(&conns[c], host, port, NULL, &err)) {
            fprintf(stderr, "soak: %s\n", err.msg);
            return 1;
        }
    /* stream s lives on connection s % n_conns with request ids s + 1, s + 1 + n_streams, ... */
    uint64_t done = 0, bad = 0, cancelled = 0, expired = 0, next_report = 30;
    uint64_t *rid = calloc((size_t)n_streams, sizeof *rid);
    const double t0 = base_now();
    bool stopping = false;
    int live = 0;
    for (;;) {
        double now = base_now() - t0;
        stopping = now >= seconds;
        for (int s = 0; s < n_streams && !stopping; s++)
            if (st[s].prompt < 0 || rid[s] == 0) { /* start one */
                stream *x = &st[s];
                x->prompt = (int)(rt_rng_next(&rng) % N_PROMPTS);
                x->n_got = 0;
                rid[s] = rid[s] ? rid[s] + (uint64_t)n_streams : (uint64_t)s + 1;
                const uint64_t draw = rt_rng_next(&rng);
                x->cancel_at = draw % 8 == 0 ? 1 + (int)(draw / 8 % (uint64_t)prompts[x->prompt].max_tokens) : 0;
                x->cancel_sent = false;
                x->has_deadline = draw % 16 == 1;
                dinfer_params q = params_of(&prompts[x->prompt]);
                if (x->has_deadline)
                    q.deadline_ms = 1 + (uint32_t)(draw / 16 % 40);
                if (dinfer_send_generate(conns[s % n_conns], rid[s], &q, &err)) {
                    fprintf(stderr, "soak: %s\n", err.msg);
                    return 1;
                }
                live++;
            }
        if (stopping && live == 0)
            break;
        for (int c = 0; c < n_conns; c++)
            pfd[c] = (struct pollfd){.fd = dinfer_fd(conns[c]), .events = POLLIN};
        poll(pfd, (nfds_t)n_conns, 100);
        for (int c = 0; c < n_conns; c++) {
            wire_frame *f;
            while (dinfer_next_frame(conns[c], 0, &f, &err) == 1) {
                int s = (int)((f->request_id - 1) % (uint64_t)n_streams);
                stream *x = &st[s];
                if (f->request_id != rid[s] || x->prompt < 0) {
                    if (f->request_id != x->late_cancel || f->body_case != DINFER__V1__FRAME__BODY_ERROR ||
                        f->error->code != DINFER__V1__STATUS_CODE__STATUS_NOT_FOUND) {
                        bad++;
                        fprintf(stderr, "soak: an unexpected frame (body %d) for request %llu\n", (int)f->body_case,
                                (unsigned long long)f->request_id);
                    }
                    x->late_cancel = 0;
                } else if (f->body_case == DINFER__V1__FRAME__BODY_CHUNK) {
                    for (size_t i = 0; i < f->chunk->n_tokens && x->n_got < MAX_GEN; i++)
                        x->got[x->n_got++] = f->chunk->tokens[i];
                    if (x->cancel_at && !x->cancel_sent && x->n_got >= x->cancel_at) {
                        if (dinfer_send_cancel(conns[c], f->request_id, &err)) {
                            fprintf(stderr, "soak: %s\n", err.msg);
                            return 1;
                        }
                        x->cancel_sent = true;
                    }
                } else {
                    const prompt *p = &prompts[x->prompt];
                    const int code = f->body_case == DINFER__V1__FRAME__BODY_ERROR ? (int)f->error->code : 0;
                    /* cut short: only by the cancel sent or the deadline given, and a prefix */
                    const bool cut = (code == DINFER__V1__STATUS_CODE__STATUS_CANCELLED && x->cancel_sent) ||
                                     (code == DINFER__V1__STATUS_CODE__STATUS_DEADLINE_EXCEEDED && x->has_deadline);
                    const bool whole = f->body_case == DINFER__V1__FRAME__BODY_DONE && x->n_got == p->n_want;
                    if ((!cut && !whole) || x->n_got > p->n_want ||
                        memcmp(x->got, p->want, (size_t)x->n_got * sizeof *p->want) != 0) {
                        bad++;
                        fprintf(stderr, "soak: stream %d (prompt %d) differs from its solo run (%s)\n", s, x->prompt,
                                f->body_case == DINFER__V1__FRAME__BODY_ERROR ? f->error->message : "tokens");
                    }
                    cancelled += code == DINFER__V1__STATUS_CODE__STATUS_CANCELLED;
                    expired += code == DINFER__V1__STATUS_CODE__STATUS_DEADLINE_EXCEEDED;
                    if (x->cancel_sent && code != DINFER__V1__STATUS_CODE__STATUS_CANCELLED)
                        x->late_cancel = f->request_id;
                    done++;
                    live--;
                    x->prompt = -1;
                }
                wire_frame_free(f);
            }
        }
        if (now >= (double)next_report) {
            printf("soak: %.0f s: %llu streams finished (%llu cancelled, %llu past their deadline), %llu differ from "
                   "their solo run, %d live\n",
                   now, (unsigned long long)done, (unsigned long long)cancelled, (unsigned long long)expired,
                   (unsigned long long)bad, live);
            fflush(stdout);
            next_report += 30;
        }
    }
    printf("soak: %llu streams in %.0f s (%llu cancelled, %llu past their deadline), %llu differ from their solo run\n",
           (unsigned long long)done, base_now() - t0, (unsigned long long)cancelled, (unsigned long long)expired,
           (unsigned long long)bad);
    for (int c = 0; c < n_conns; c++)
        dinfer_close(conns[c]);
    free(conns), free(st), free(pfd), free(rid);
    return bad ? 1 : 0;
}
