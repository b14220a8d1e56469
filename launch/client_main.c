/* dinfer: the command-line client of a dinfer-server.
 *   dinfer generate --server HOST:PORT --tokens 1,5,9 [--max-tokens 32 ...]
 *   dinfer health|stats --server HOST:PORT
 *   dinfer bench --server HOST:PORT --concurrency C --requests N --prompt-len P --gen-len G */
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "launch/cli.h"
#include "base/clock.h"
#include "proto/client.h"
#include "runtime/text/tokenizer.h"
#include "base/err.h"

typedef struct args {
    const char *cmd, *host, *token_file;
    int port;
    int32_t *tokens;
    int n_tokens;
    dinfer_params p;
    const char *stops[16]; /* --stop */
    const char *tokenizer; /* bench: text prompts, drawn with this tokenizer.json */
    bool json;
    int concurrency, requests, prompt_len, gen_len, vocab;
} args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dinfer generate --server HOST:PORT --prompt TEXT | --tokens 1,5,9 [--max-tokens N]\n"
            "                       [--temperature F] [--top-k K] [--top-p P] [--seed S] [--stop-ids 2,7]\n"
            "                       [--stop STRING ...] [--ignore-eos]\n"
            "                       [--logprobs N] [--deadline-ms D] [--json]\n"
            "       dinfer health --server HOST:PORT [--json]\n"
            "       dinfer stats --server HOST:PORT [--json]\n"
            "       dinfer bench --server HOST:PORT [--concurrency 8] [--requests 64] [--prompt-len 128]\n"
            "                    [--gen-len 128] [--tokenizer DIR_OR_FILE] [--json]\n"
            "  bench --tokenizer: text prompts of --prompt-len tokens (random tokens of that tokenizer,\n"
            "  decoded), sent as text for the server to encode\n"
            "  --auth-token-file F   send the token in F with every request\n"
            "  (--server defaults to 127.0.0.1:7070)\n");
}

static int parse_server(const char *s, args *a, base_err *err)
{
    const char *colon = strrchr(s, ':');
    long port;
    if (!colon || colon == s)
        return base_errf(err, "--server: \"%.64s\" is not HOST:PORT", s);
    if (cli_int("--server", colon + 1, 1, 65535, &port, err))
        return -1;
    static char host[256];
    snprintf(host, sizeof host, "%.*s", (int)(colon - s), s);
    a->host = host;
    a->port = (int)port;
    return 0;
}

static int parse(args *a, int argc, char **argv, base_err *err)
{
    enum { O_SERVER = 256, O_TOKENS, O_PROMPT, O_STOPSTR, O_MAX, O_TEMP, O_TOPK, O_TOPP, O_SEED, O_STOP, O_IGNORE, O_LOGP, O_DEADLINE,
           O_JSON, O_CONC, O_REQS, O_PLEN, O_GLEN, O_TOKEN, O_TOKENIZER };
    static const struct option opts[] = {
        {"server", required_argument, 0, O_SERVER}, {"tokens", required_argument, 0, O_TOKENS},
        {"prompt", required_argument, 0, O_PROMPT}, {"stop", required_argument, 0, O_STOPSTR},
        {"max-tokens", required_argument, 0, O_MAX}, {"temperature", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK}, {"top-p", required_argument, 0, O_TOPP},
        {"seed", required_argument, 0, O_SEED}, {"stop-ids", required_argument, 0, O_STOP},
        {"ignore-eos", no_argument, 0, O_IGNORE}, {"logprobs", required_argument, 0, O_LOGP},
        {"deadline-ms", required_argument, 0, O_DEADLINE}, {"json", no_argument, 0, O_JSON},
        {"concurrency", required_argument, 0, O_CONC}, {"requests", required_argument, 0, O_REQS},
        {"prompt-len", required_argument, 0, O_PLEN}, {"gen-len", required_argument, 0, O_GLEN},
        {"auth-token-file", required_argument, 0, O_TOKEN}, {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    memset(a, 0, sizeof *a);
    a->host = "127.0.0.1";
    a->port = 7070;
    a->concurrency = 8, a->requests = 64, a->prompt_len = 128, a->gen_len = 128;
    dinfer_params_init(&a->p);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 1;
    }
    if (argc < 2 || argv[1][0] == '-') {
        usage(stderr);
        return argc < 2 ? base_errf(err, "give a command: generate, health, stats or bench")
                        : base_errf(err, "unknown option \"%.32s\" before the command (generate, health, stats, bench)",
                                    argv[1]);
    }
    a->cmd = argv[1];
    if (strcmp(a->cmd, "generate") && strcmp(a->cmd, "health") && strcmp(a->cmd, "stats") && strcmp(a->cmd, "bench"))
        return base_errf(err, "unknown command \"%.32s\" (generate, health, stats, bench)", a->cmd);
    optind = 2;
    int o, li = 0;
    long v;
    double d;
    uint64_t u;
    int32_t *stop = NULL;
    int n_stop = 0;
    while ((o = getopt_long(argc, argv, "h", opts, &li)) != -1) {
        char f[40];
        snprintf(f, sizeof f, "--%s", opts[li].name);
        const char *s = optarg;
        switch (o) {
        case O_SERVER: if (parse_server(s, a, err)) return -1; break;
        case O_TOKENS: free(a->tokens); if (cli_int_list(f, s, &a->tokens, &a->n_tokens, err)) return -1; break;
        case O_PROMPT: a->p.prompt_text = s; break;
        case O_STOPSTR:
            if (a->p.n_stop_strings == 16)
                return base_errf(err, "--stop: at most 16 stop strings");
            a->stops[a->p.n_stop_strings++] = s;
            break;
        case O_MAX: if (cli_int(f, s, 0, 1 << 24, &v, err)) return -1; a->p.max_tokens = (uint32_t)v; break;
        case O_TEMP: if (cli_float(f, s, -1e6, 1e6, &d, err)) return -1; a->p.temperature = (float)d; break;
        case O_TOPK: if (cli_int(f, s, -1, 1 << 24, &v, err)) return -1; a->p.top_k = (int32_t)v; break;
        case O_TOPP: if (cli_float(f, s, -10, 10, &d, err)) return -1; a->p.top_p = (float)d; break;
        case O_SEED: if (cli_u64(f, s, &u, err)) return -1; a->p.has_seed = true, a->p.seed = u; break;
        case O_STOP: free(stop); if (cli_int_list(f, s, &stop, &n_stop, err)) return -1; break;
        case O_IGNORE: a->p.ignore_eos = true; break;
        case O_LOGP: if (cli_int(f, s, 0, 1000, &v, err)) return -1; a->p.logprobs = (uint32_t)v; break;
        case O_DEADLINE: if (cli_int(f, s, 0, 1L << 31, &v, err)) return -1; a->p.deadline_ms = (uint32_t)v; break;
        case O_JSON: a->json = true; break;
        case O_CONC: if (cli_int(f, s, 1, 4096, &v, err)) return -1; a->concurrency = (int)v; break;
        case O_REQS: if (cli_int(f, s, 1, 1 << 24, &v, err)) return -1; a->requests = (int)v; break;
        case O_PLEN: if (cli_int(f, s, 1, 1 << 20, &v, err)) return -1; a->prompt_len = (int)v; break;
        case O_GLEN: if (cli_int(f, s, 1, 1 << 20, &v, err)) return -1; a->gen_len = (int)v; break;
        case O_TOKEN: a->token_file = s; break;
        case O_TOKENIZER: a->tokenizer = s; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return base_errf(err, "unknown or incomplete option (see above)");
        }
    }
    if (optind < argc)
        return base_errf(err, "unexpected argument \"%.64s\"", argv[optind]);
    a->p.stop_ids = stop;
    a->p.n_stop = (size_t)n_stop;
    a->p.stop = a->stops;
    if (strcmp(a->cmd, "generate") == 0 && !a->tokens == !a->p.prompt_text)
        return base_errf(err, "generate needs exactly one of --prompt and --tokens");
    a->p.prompt = a->tokens;
    a->p.prompt_len = (size_t)a->n_tokens;
    return 0;
}

static char *text_or_json(const char *s, bool json);

static int print_chunk(void *ctx, const Dinfer__V1__TokenChunk *ch)
{
    const args *a = ctx;
    if (a->p.prompt_text) { /* the text as it streams */
        if (ch->text)
            fputs(ch->text, stdout);
        fflush(stdout);
        return 0;
    }
    for (size_t i = 0; i < ch->n_tokens; i++) {
        if (a->json)
            continue;
        printf(" %d", ch->tokens[i]);
        if (a->p.logprobs && i < ch->n_logprobs)
            printf("(%.4f)", ch->logprobs[i]);
    }
    if (!a->json)
        fflush(stdout);
    return 0;
}

typedef struct collected {
    int32_t *tokens;
    float *logprobs;
    size_t n, cap;
    char *text; /* the chunks' texts joined; NULL when the server sent none */
    size_t text_len;
} collected;

static int collect_chunk(void *ctx, const Dinfer__V1__TokenChunk *ch)
{
    collected *c = ctx;
    if (ch->text) {
        const size_t k = strlen(ch->text);
        char *t = realloc(c->text, c->text_len + k + 1);
        if (!t)
            return 1;
        memcpy(t + c->text_len, ch->text, k + 1);
        c->text = t, c->text_len += k;
    }
    for (size_t i = 0; i < ch->n_tokens; i++) {
        if (c->n == c->cap) {
            c->cap = c->cap ? 2 * c->cap : 64;
            c->tokens = realloc(c->tokens, c->cap * sizeof *c->tokens);
            c->logprobs = realloc(c->logprobs, c->cap * sizeof *c->logprobs);
            if (!c->tokens || !c->logprobs)
                return 1;
        }
        c->tokens[c->n] = ch->tokens[i];
        c->logprobs[c->n++] = i < ch->n_logprobs ? ch->logprobs[i] : 0.0f;
    }
    return 0;
}

static int cmd_generate(args *a, dinfer_client *c, base_err *err)
{
    dinfer_result r;
    collected col = {0};
    int rc;
    if (a->json) {
        rc = dinfer_generate(c, &a->p, collect_chunk, &col, &r, err);
    } else {
        if (a->p.prompt_text) /* the prompt, then its continuation as it streams */
            fputs(a->p.prompt_text, stdout);
        else
            printf("tokens:");
        rc = dinfer_generate(c, &a->p, print_chunk, a, &r, err);
        printf("\n");
    }
    if (rc || r.status) {
        free(col.tokens), free(col.logprobs), free(col.text);
        return rc ? -1 : base_errf(err, "%s: %s", wire_status_name(r.status), r.message);
    }
    if (a->json) {
        printf("{\"tokens\": [");
        for (size_t i = 0; i < col.n; i++)
            printf("%s%d", i ? ", " : "", col.tokens[i]);
        printf("], \"logprobs\": [");
        for (size_t i = 0; i < col.n; i++) /* JSON has no NaN: a model with NaN weights gives null */
            printf(isfinite(col.logprobs[i]) ? "%s%.9g" : "%snull", i ? ", " : "", col.logprobs[i]);
        printf("], \"finish_reason\": \"%s\", \"prompt_tokens\": %u, \"completion_tokens\": %u, \"ttft_ms\": %.3f, "
               "\"total_ms\": %.3f", r.finish_reason, r.prompt_tokens, r.completion_tokens, r.ttft_ms, r.total_ms);
        char *t = col.text ? text_or_json(col.text, true) : NULL;
        if (t)
            printf(", \"text\": %s", t);
        free(t);
        printf("}\n");
    } else {
        printf("finish: %s, %u prompt + %u generated tokens, TTFT %.1f ms, total %.1f ms\n", r.finish_reason,
               r.prompt_tokens, r.completion_tokens, r.ttft_ms, r.total_ms);
    }
    free(col.tokens), free(col.logprobs), free(col.text);
    return 0;
}

/* s as it is (text), or as a quoted, escaped JSON string (--json); free the result. */
static char *text_or_json(const char *s, bool json)
{
    if (!json)
        return strdup(s ? s : "");
    cJSON *j = cJSON_CreateString(s ? s : "");
    char *out = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return out ? out : strdup("\"\"");
}

static int cmd_unary(args *a, dinfer_client *c, bool health, base_err *err)
{
    wire_frame *f;
    if ((health ? dinfer_health(c, &f, err) : dinfer_stats(c, &f, err)) != 0)
        return -1;
    int rc = 0;
    if (f->body_case == DINFER__V1__FRAME__BODY_ERROR) {
        rc = base_errf(err, "%s: %s", wire_status_name(f->error->code), f->error->message ? f->error->message : "");
    } else if (health && f->body_case == DINFER__V1__FRAME__BODY_HEALTH_RESPONSE) {
        const Dinfer__V1__HealthResponse *h = f->health_response;
        char *model = text_or_json(h->model, a->json), *arch = text_or_json(h->architecture, a->json);
        printf(a->json ? "{\"ready\": %s, \"model\": %s, \"architecture\": %s, \"tp\": %u, \"pp\": %u, "
                         "\"world_size\": %u, \"vocab_size\": %u, \"max_context\": %u}\n"
                       : "ready: %s\nmodel: %s (%s)\ntp: %u, pp: %u, world size: %u\nvocabulary: %u, context: %u\n",
               h->ready ? (a->json ? "true" : "yes") : (a->json ? "false" : "no"), model, arch, h->tp,
               h->pp, h->world_size, h->vocab_size, h->max_context);
        free(model), free(arch);
        rc = h->ready ? 0 : base_errf(err, "the server is not ready");
    } else if (!health && f->body_case == DINFER__V1__FRAME__BODY_STATS_RESPONSE) {
        const Dinfer__V1__StatsResponse *s = f->stats_response;
        char *device = text_or_json(s->device, a->json);
        printf(a->json ? "{\"queue_length\": %u, \"running\": %u, \"kv_blocks_used\": %u, \"kv_blocks_free\": %u, "
                         "\"kv_block_size\": %u, \"tokens_per_second\": %.2f, \"ttft_p50_ms\": %.3f, \"ttft_p99_ms\": %.3f, "
                         "\"tpot_p50_ms\": %.3f, \"tpot_p99_ms\": %.3f, \"requests_finished\": %llu, \"steps\": %llu, "
                         "\"avg_tokens_per_step\": %.2f, \"preemptions\": %llu, \"connections\": %u, \"device\": %s, "
                         "\"weight_bytes\": %llu, \"workspace_bytes\": %llu, \"kv_cache_bytes\": %llu}\n"
                       : "queue: %u, running: %u\nKV blocks: %u used, %u free (%u tokens each)\n"
                         "tokens/s (last 10 s): %.2f\nTTFT p50 %.3f ms, p99 %.3f ms\nTPOT p50 %.3f ms, p99 %.3f ms\n"
                         "finished requests: %llu, steps: %llu, tokens per step: %.2f, preemptions: %llu\n"
                         "connections: %u\ndevice: %s\nmemory: weights %llu bytes, workspace %llu, KV cache %llu\n",
               s->queue_length, s->running, s->kv_blocks_used, s->kv_blocks_free, s->kv_block_size,
               s->tokens_per_second, s->ttft_p50_ms, s->ttft_p99_ms, s->tpot_p50_ms, s->tpot_p99_ms,
               (unsigned long long)s->requests_finished, (unsigned long long)s->steps, s->avg_tokens_per_step,
               (unsigned long long)s->preemptions, s->connections, device,
               (unsigned long long)s->weight_bytes, (unsigned long long)s->workspace_bytes,
               (unsigned long long)s->kv_cache_bytes);
        free(device);
    } else {
        rc = base_errf(err, "unexpected reply (frame body %d)", (int)f->body_case);
    }
    wire_frame_free(f);
    return rc;
}

/* ---- bench: `concurrency` streams multiplexed on one connection until `requests` are done ---- */

typedef struct stream {
    double start, first, last;
    int n;
} stream;

static int cmp_d(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static double pct(double *v, int n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    return v[(int)((n - 1) * p + 0.5)];
}

static int server_steps(dinfer_client *c, uint64_t *steps, uint64_t *tokens, double *avg)
{
    wire_frame *f;
    if (dinfer_stats(c, &f, NULL) != 0 || f->body_case != DINFER__V1__FRAME__BODY_STATS_RESPONSE)
        return -1;
    *steps = f->stats_response->steps;
    *avg = f->stats_response->avg_tokens_per_step;
    *tokens = (uint64_t)llround(f->stats_response->avg_tokens_per_step * (double)f->stats_response->steps);
    wire_frame_free(f);
    return 0;
}

/* n text prompts of up to len tokens each (BOS included) for tok: random tokens, decoded (special
 * ones left out), shortened until they encode within len. */
static char **text_prompts(const char *path, int n, int len, base_err *err)
{
    rt_tokenizer *tok = rt_tokenizer_load(path, err);
    if (!tok)
        return NULL;
    char **texts = calloc((size_t)n, sizeof *texts);
    int32_t *ids = malloc((size_t)len * sizeof *ids);
    uint64_t x = 88172645463325252ULL;
    for (int r = 0; texts && ids && r < n; r++) {
        for (int i = 0; i < len; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17; /* xorshift64 */
            ids[i] = (int32_t)(x % (uint64_t)rt_tokenizer_n_ids(tok));
        }
        for (int k = len; k > 0 && !texts[r]; k = k * 9 / 10) {
            char *t = rt_tokenizer_decode(tok, ids, k, true, NULL, err);
            int32_t *back = NULL;
            const int m = t ? rt_tokenizer_encode(tok, t, strlen(t), true, &back, err) : -1;
            free(back);
            if (m >= 0 && m <= len)
                texts[r] = t;
            else
                free(t);
        }
        if (!texts[r]) {
            base_errf(err, "--tokenizer: no text of at most %d tokens came out", len);
            for (int i = 0; i < r; i++)
                free(texts[i]);
            free(texts);
            texts = NULL;
        }
    }
    free(ids);
    rt_tokenizer_free(tok);
    if (!texts && err->msg[0] == '\0')
        base_errf(err, "out of memory");
    return texts;
}

static void free_texts(char **texts, int n)
{
    for (int i = 0; texts && i < n; i++)
        free(texts[i]);
    free(texts);
}

static int cmd_bench(args *a, dinfer_client *c, base_err *err)
{
    wire_frame *hf;
    if (dinfer_health(c, &hf, err) != 0)
        return -1;
    if (hf->body_case != DINFER__V1__FRAME__BODY_HEALTH_RESPONSE) {
        wire_frame_free(hf);
        return base_errf(err, "health check failed");
    }
    int vocab = (int)hf->health_response->vocab_size;
    wire_frame_free(hf);
    int N = a->requests, C = a->concurrency < N ? a->concurrency : N;
    char **texts = NULL;
    if (a->tokenizer && !(texts = text_prompts(a->tokenizer, N, a->prompt_len, err)))
        return -1;
    stream *st = calloc((size_t)N, sizeof *st);
    int32_t *prompt = malloc((size_t)a->prompt_len * sizeof *prompt);
    double *ttft = malloc((size_t)N * sizeof *ttft), *tpot = malloc((size_t)N * sizeof *tpot);
    if (!st || !prompt || !ttft || !tpot) {
        free(st), free(prompt), free(ttft), free(tpot);
        free_texts(texts, N);
        return base_errf(err, "out of memory");
    }
    uint64_t s0 = 0, t0s = 0, s1 = 0, t1s = 0;
    double avg;
    server_steps(c, &s0, &t0s, &avg);
    dinfer_params p = a->p;
    p.prompt = prompt;
    p.prompt_len = (size_t)a->prompt_len;
    p.max_tokens = (uint32_t)a->gen_len;
    p.ignore_eos = true;
    int sent = 0, done = 0, failed = 0, n_tpot = 0;
    long total_tokens = 0;
    double begin = base_now();
    int rc = 0;
    while (done < N && rc == 0) {
        while (sent < N && sent - done < C) {
            for (int i = 0; i < a->prompt_len; i++) /* a different prompt per request */
                prompt[i] = (int32_t)((sent * 7919u + (unsigned)i * 104729u) % (unsigned)vocab);
            if (texts)
                p.prompt = NULL, p.prompt_len = 0, p.prompt_text = texts[sent];
            st[sent].start = base_now();
            if (dinfer_send_generate(c, (uint64_t)sent + 1, &p, err) != 0) {
                rc = -1;
                break;
            }
            sent++;
        }
        wire_frame *f;
        if (rc || dinfer_next_frame(c, -1, &f, err) <= 0) {
            rc = -1;
            break;
        }
        uint64_t id = f->request_id;
        if (id == 0 && f->body_case == DINFER__V1__FRAME__BODY_ERROR) {
            rc = base_errf(err, "%s: %s", wire_status_name(f->error->code), f->error->message ? f->error->message : "");
            if (f->error->code == DINFER__V1__STATUS_CODE__STATUS_UNAVAILABLE) {
                wire_frame_free(f);
                break;
            }
            rc = 0; /* a complaint about a frame: not the end */
        }
        if (id >= 1 && id <= (uint64_t)N) {
            stream *s = &st[id - 1];
            double now = base_now();
            if (f->body_case == DINFER__V1__FRAME__BODY_CHUNK) {
                if (s->n == 0)
                    s->first = now;
                s->last = now;
                s->n += (int)f->chunk->n_tokens;
            } else {
                if (f->body_case == DINFER__V1__FRAME__BODY_ERROR) {
                    failed++;
                    if (failed == 1)
                        fprintf(stderr, "dinfer bench: request %llu: %s: %s\n", (unsigned long long)id,
                                wire_status_name(f->error->code), f->error->message);
                } else {
                    ttft[done - failed] = (s->first - s->start) * 1e3;
                    if (s->n > 1)
                        tpot[n_tpot++] = (s->last - s->first) / (s->n - 1) * 1e3;
                    total_tokens += s->n;
                }
                done++;
            }
        }
        wire_frame_free(f);
    }
    double wall = base_now() - begin;
    if (rc == 0 && server_steps(c, &s1, &t1s, &avg) == 0 && s1 > s0)
        avg = (double)(t1s - t0s) / (double)(s1 - s0);
    else
        avg = 0;
    int ok = done - failed;
    double t50 = pct(ttft, ok, 0.5), t99 = pct(ttft, ok, 0.99), p50 = pct(tpot, n_tpot, 0.5), p99 = pct(tpot, n_tpot, 0.99);
    double tps = wall > 0 ? (double)total_tokens / wall : 0;
    if (rc == 0) {
        if (a->json)
            printf("{\"concurrency\": %d, \"requests\": %d, \"failed\": %d, \"prompt_len\": %d, \"gen_len\": %d, "
                   "\"ttft_p50_ms\": %.3f, \"ttft_p99_ms\": %.3f, \"tpot_p50_ms\": %.3f, \"tpot_p99_ms\": %.3f, "
                   "\"tokens_per_second\": %.2f, \"seconds\": %.3f, \"server_tokens_per_step\": %.2f}\n",
                   C, N, failed, a->prompt_len, a->gen_len, t50, t99, p50, p99, tps, wall, avg);
        else
            printf("bench: %d requests (%d failed), concurrency %d, prompt %d, generate %d, %.2f s\n"
                   "TTFT p50 %.1f ms, p99 %.1f ms\nTPOT p50 %.2f ms, p99 %.2f ms\n"
                   "throughput: %.1f generated tokens/s\nserver: %.1f tokens per step\n",
                   N, failed, C, a->prompt_len, a->gen_len, wall, t50, t99, p50, p99, tps, avg);
    }
    free(st), free(prompt), free(ttft), free(tpot);
    free_texts(texts, N);
    if (rc == 0 && failed)
        rc = base_errf(err, "%d of %d requests failed", failed, N);
    return rc;
}

int main(int argc, char **argv)
{
    args a;
    base_err err = {{0}};
    int rc = parse(&a, argc, argv, &err);
    dinfer_client *c = NULL;
    char *token = NULL;
    if (rc == 0 && a.token_file) {
        FILE *f = fopen(a.token_file, "r");
        char line[1024] = "";
        if (!f || !fgets(line, sizeof line, f))
            rc = base_errf(&err, "%s: cannot read the auth token", a.token_file);
        if (f)
            fclose(f);
        line[strcspn(line, "\r\n")] = 0;
        if (rc == 0 && !(token = strdup(line)))
            rc = base_errf(&err, "out of memory");
    }
    if (rc == 0 && dinfer_connect(&c, a.host, a.port, token, &err) != 0)
        rc = -1;
    if (rc == 0) {
        if (strcmp(a.cmd, "generate") == 0)
            rc = cmd_generate(&a, c, &err);
        else if (strcmp(a.cmd, "health") == 0)
            rc = cmd_unary(&a, c, true, &err);
        else if (strcmp(a.cmd, "stats") == 0)
            rc = cmd_unary(&a, c, false, &err);
        else
            rc = cmd_bench(&a, c, &err);
    }
    dinfer_close(c);
    free(token);
    free(a.tokens);
    free((void *)a.p.stop_ids);
    if (rc < 0) {
        fprintf(stderr, "dinfer: %s\n", err.msg);
        return 1;
    }
    return 0;
}
