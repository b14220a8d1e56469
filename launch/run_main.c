/* dinfer-run: offline generation. Runs a batch of token prompts through the model and prints the
 * generated tokens (or JSON lines), or with --bench measures prefill and decode speed. An MPI
 * program: under mpirun the model is split over tp x pp ranks and the answers are the same. */
#include <float.h>
#include <getopt.h>
#include <math.h>
#include <mpi.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "launch/cli.h"
#include "launch/job.h"
#include "partition/plan.h"
#include "runtime/backend.h"
#include "runtime/generate.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"
#include "runtime/text/tokenizer.h"
#ifdef DINFER_HAVE_CUDA
#include "runtime/cuda/cuda_device.h"
#endif

typedef struct run_args {
    job_flags job;     /* the model, its split, where and how it computes */
    int n_prompts;
    int32_t **prompts; /* (n_prompts) the ids of each prompt (a --prompt's once rank 0 encoded it) */
    int *prompt_lens;
    char **texts;      /* (n_prompts) a --prompt's text; NULL for --tokens */
    int max_tokens;
    rt_sampling sampling;
    bool ignore_eos, logprobs, json, bench;
    int batch, prompt_len, gen_len; /* --bench */
} run_args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dinfer-run --model DIR --prompt TEXT | --tokens 1,5,9 [--prompt ... --tokens ...] [options]\n"
            "       dinfer-run --model DIR --bench [--batch B --prompt-len P --gen-len G]\n"
            "  --max-tokens N        tokens to generate per prompt (default 16)\n"
            "  --temperature F       0 = greedy (default 0)\n"
            "  --top-k N --top-p F   sampling filters (default off)\n"
            "  --seed S              per-prompt random seed (default 0)\n"
            "  --ignore-eos          do not stop at the end-of-sequence token\n"
            "  --logprobs            print the logprob of each generated token\n"
            "  --json                one JSON object per prompt: tokens, logprobs, finish_reason (and\n"
            "                        text, with the model's tokenizer.json)\n"
            "  --prompt TEXT is encoded with DIR/tokenizer.json (with its BOS); the output is decoded\n"
            "  with it whenever the folder has one.\n");
    job_flags_usage_split(f);
    job_flags_usage_compute(f);
}

/* A --tokens prompt (text NULL) or a --prompt (ids filled in by rank 0 once the tokenizer loads). */
static int add_prompt(run_args *a, const char *s, bool text, base_err *err)
{
    int32_t *toks = NULL;
    int n = 0;
    if (!text && cli_int_list("--tokens", s, &toks, &n, err))
        return -1;
    char *t = text ? strdup(s) : NULL;
    int32_t **np = realloc(a->prompts, (size_t)(a->n_prompts + 1) * sizeof *np);
    if (np)
        a->prompts = np;
    int *nl = np ? realloc(a->prompt_lens, (size_t)(a->n_prompts + 1) * sizeof *nl) : NULL;
    if (nl)
        a->prompt_lens = nl;
    char **nt = nl ? realloc(a->texts, (size_t)(a->n_prompts + 1) * sizeof *nt) : NULL;
    if (nt)
        a->texts = nt;
    if (!np || !nl || !nt || (text && !t)) {
        free(toks), free(t);
        return base_errf(err, "out of memory");
    }
    a->prompts[a->n_prompts] = toks;
    a->texts[a->n_prompts] = t;
    a->prompt_lens[a->n_prompts++] = n;
    return 0;
}

static int parse_args(run_args *a, int argc, char **argv, base_err *err)
{
    enum { O_TOKENS = 256, O_PROMPT, O_MAXTOK, O_TEMP, O_TOPK, O_TOPP, O_SEED, O_IGNORE, O_LOGP, O_JSON, O_BENCH,
           O_BATCH, O_PLEN, O_GLEN };
    static const struct option opts[] = {
        JOB_FLAG_OPTIONS, {"tokens", required_argument, 0, O_TOKENS}, {"prompt", required_argument, 0, O_PROMPT},
        {"max-tokens", required_argument, 0, O_MAXTOK}, {"temperature", required_argument, 0, O_TEMP},
        {"top-k", required_argument, 0, O_TOPK}, {"top-p", required_argument, 0, O_TOPP},
        {"seed", required_argument, 0, O_SEED}, {"ignore-eos", no_argument, 0, O_IGNORE},
        {"logprobs", no_argument, 0, O_LOGP}, {"json", no_argument, 0, O_JSON},
        {"bench", no_argument, 0, O_BENCH}, {"batch", required_argument, 0, O_BATCH},
        {"prompt-len", required_argument, 0, O_PLEN}, {"gen-len", required_argument, 0, O_GLEN},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    *a = (run_args){.max_tokens = 16, .sampling = {.top_p = 1.0f}, .batch = 1, .prompt_len = 128, .gen_len = 128};
    job_flags_init(&a->job);
    int o, li = 0, shared;
    long v;
    double d;
    while ((o = getopt_long(argc, argv, "m:h", opts, &li)) != -1) {
        const char *s = optarg;
        char f[40];
        snprintf(f, sizeof f, "--%s", opts[li].name);
        if ((shared = job_flags_parse(&a->job, o == 'm' ? JF_MODEL : o, s, err)) != 0) {
            if (shared < 0)
                return -1;
            continue;
        }
        switch (o) {
        case O_TOKENS: if (add_prompt(a, s, false, err)) return -1; break;
        case O_PROMPT: if (add_prompt(a, s, true, err)) return -1; break;
        case O_MAXTOK: if (cli_int(f, s, 1, 1 << 24, &v, err)) return -1; a->max_tokens = (int)v; break;
        case O_TEMP: if (cli_float(f, s, 0, FLT_MAX, &d, err)) return -1; a->sampling.temperature = (float)d; break;
        case O_TOPK: if (cli_int(f, s, 0, INT32_MAX, &v, err)) return -1; a->sampling.top_k = (int)v; break;
        case O_TOPP:
            if (cli_float(f, s, 0, 1, &d, err)) return -1;
            if (d <= 0) return base_errf(err, "--top-p: must be in (0, 1]");
            a->sampling.top_p = (float)d;
            break;
        case O_SEED: if (cli_u64(f, s, &a->sampling.seed, err)) return -1; break;
        case O_IGNORE: a->ignore_eos = true; break;
        case O_LOGP: a->logprobs = true; break;
        case O_JSON: a->json = true; break;
        case O_BENCH: a->bench = true; break;
        case O_BATCH: if (cli_int(f, s, 1, 4096, &v, err)) return -1; a->batch = (int)v; break;
        case O_PLEN: if (cli_int(f, s, 1, 1 << 20, &v, err)) return -1; a->prompt_len = (int)v; break;
        case O_GLEN: if (cli_int(f, s, 1, 1 << 20, &v, err)) return -1; a->gen_len = (int)v; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return base_errf(err, "unknown or incomplete option (see above)");
        }
    }
    if (optind < argc)
        return base_errf(err, "unexpected argument \"%.64s\"", argv[optind]);
    if (job_flags_check(&a->job, err))
        return -1;
    if (!a->bench && a->n_prompts == 0)
        return base_errf(err, "give at least one prompt with --prompt or --tokens, or --bench");
    return 0;
}

/* The generated text as a JSON string (escaped), or NULL. */
static char *json_text(const char *text)
{
    cJSON *s = text ? cJSON_CreateString(text) : NULL;
    char *out = s ? cJSON_PrintUnformatted(s) : NULL;
    cJSON_Delete(s);
    return out;
}

static void print_json(const rt_gen_result *r, const char *text)
{
    printf("{\"tokens\": [");
    for (int i = 0; i < r->n_tokens; i++)
        printf("%s%d", i ? ", " : "", r->tokens[i]);
    printf("], \"logprobs\": [");
    for (int i = 0; i < r->n_tokens; i++) /* JSON has no NaN or infinity: a model with NaN weights gives null */
        printf(isfinite(r->logprobs[i]) ? "%s%.9g" : "%snull", i ? ", " : "", r->logprobs[i]);
    printf("], \"finish_reason\": \"%s\"", r->finish_reason);
    char *t = json_text(text);
    if (t)
        printf(", \"text\": %s", t);
    free(t);
    printf("}\n");
}

static void print_text(int k, const int32_t *prompt, int plen, const char *prompt_text, const rt_gen_result *r,
                       bool logprobs, const char *text)
{
    printf("prompt %d (%d tokens):", k, plen);
    for (int i = 0; i < plen; i++)
        printf(" %d", prompt[i]);
    if (prompt_text)
        printf("\n  prompt text: %s", prompt_text);
    printf("\n  output (%d tokens, %s):", r->n_tokens, r->finish_reason);
    for (int i = 0; i < r->n_tokens; i++) {
        if (logprobs)
            printf(" %d(%.4f)", r->tokens[i], r->logprobs[i]);
        else
            printf(" %d", r->tokens[i]);
    }
    if (text)
        printf("\n  text: %s", text);
    printf("\n");
}

/* Rank 0: the model folder's tokenizer (NULL when it has none), and each --prompt's ids. A
 * --prompt without a usable tokenizer.json is refused; --tokens alone works without one. */
static int prepare_text(run_args *a, rt_config *cfg, rt_tokenizer **tok, base_err *err)
{
    *tok = NULL;
    bool any_text = false;
    for (int i = 0; i < a->n_prompts; i++)
        any_text |= a->texts[i] != NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", a->job.model);
    if (a->bench || (!any_text && access(path, F_OK) != 0))
        return 0;
    base_err e;
    *tok = rt_tokenizer_load(a->job.model, &e);
    if (!*tok) {
        if (any_text)
            return base_errf(err, "--prompt needs the model's tokenizer.json: %s", e.msg);
        fprintf(stderr, "dinfer-run: the output stays ids: %s\n", e.msg);
        return 0;
    }
    int32_t eos; /* generation stops at tokenizer_config.json's EOS too, as transformers' does */
    const int has_eos = rt_tokenizer_config_eos(*tok, a->job.model, &eos, &e);
    if (has_eos < 0)
        return base_err_copy(err, &e);
    if (has_eos == 0 && rt_config_add_eos(cfg, eos))
        return base_errf(err, "tokenizer_config.json's eos_token %d: too many end-of-sequence ids", eos);
    for (int i = 0; i < a->n_prompts; i++) {
        if (!a->texts[i])
            continue;
        int32_t *ids = NULL;
        const int n = rt_tokenizer_encode(*tok, a->texts[i], strlen(a->texts[i]), true, &ids, &e);
        if (n < 0)
            return base_errf(err, "--prompt %d: %s", i, e.msg);
        if (n == 0)
            return base_errf(err, "--prompt %d: the text encodes to no tokens", i);
        a->prompts[i] = ids;
        a->prompt_lens[i] = n;
    }
    return 0;
}

static double params_of(const rt_config *c)
{
    rt_shard s;
    rt_shard_whole(&s, c);
    return (double)rt_shard_weight_bytes(c, &s, RT_F32) / 4.0;
}

static void print_speed(FILE *f, const rt_gen_stats *st)
{
    fprintf(f, "prefill: %ld tokens in %.1f ms (%.1f tokens/s)\n", st->prefill_tokens, st->prefill_seconds * 1e3,
            st->prefill_seconds > 0 ? (double)st->prefill_tokens / st->prefill_seconds : 0.0);
    fprintf(f, "decode:  %ld tokens in %.1f ms (%.1f tokens/s)\n", st->decode_tokens, st->decode_seconds * 1e3,
            st->decode_seconds > 0 ? (double)st->decode_tokens / st->decode_seconds : 0.0);
    if (st->steps_overlapped > 0)
        fprintf(f, "%s: %ld of %d steps started while another was in flight\n",
                st->run_ahead ? "run-ahead" : "pipeline", st->steps_overlapped, st->steps);
}

/* Bytes a decode step reads on rank 0 (every weight once, but only a row of an untied embedding,
 * and each sequence's KV cache at its mean context), over the step's time; on a GPU also as a
 * share of the measured device-to-device copy bandwidth. */
static void print_bandwidth(const job_model *jm, const run_args *a, int n, double step_seconds)
{
    const rt_config *c = &jm->cfg;
    const rt_shard *s = &jm->model.shard;
    const size_t es = rt_dtype_size(jm->dtype);
    size_t weights = rt_shard_weight_bytes(c, s, jm->dtype);
    if (s->first_stage && !rt_shard_head_is_embedding(c, s))
        weights -= (size_t)(s->vocab_end - s->vocab_begin) * (size_t)c->dim * es;
    double ctx = a->prompt_len + a->gen_len / 2.0;
    double kv = ctx * n * (double)rt_kv_bytes_per_token(s->layer_end - s->layer_begin, s->n_kv_heads, c->head_dim,
                                                        jm->dtype, rt_kv_kind_of(c));
    double gbs = ((double)weights + kv) / step_seconds / 1e9;
    printf("decode reads %.3f GB per step (weights %.3f, KV %.3f): %.1f GB/s", ((double)weights + kv) / 1e9,
           (double)weights / 1e9, kv / 1e9, gbs);
#ifdef DINFER_HAVE_CUDA
    if (jm->on_gpu) {
        double copy = rt_cuda_copy_bandwidth() / 1e9;
        printf(", %.0f%% of the measured device-to-device copy bandwidth (%.0f GB/s)", copy > 0 ? 100 * gbs / copy : 0,
               copy);
    }
#endif
    printf("\n");
}

/* Rank 0: the requests of this run (the bench's random prompts, or the --tokens prompts). */
static int make_requests(const run_args *a, const rt_config *cfg, rt_gen_request **out, int *n,
                         int32_t **bench_tokens, base_err *err)
{
    *n = a->bench ? a->batch : a->n_prompts;
    rt_gen_request *reqs = calloc((size_t)*n, sizeof *reqs);
    if (!reqs)
        return base_errf(err, "out of memory");
    if (a->bench) {
        /* random prompts, a fixed number of new tokens each: EOS ignored so every run is alike */
        *bench_tokens = malloc((size_t)*n * (size_t)a->prompt_len * sizeof **bench_tokens);
        if (!*bench_tokens) {
            free(reqs);
            return base_errf(err, "out of memory");
        }
        rt_rng rng;
        rt_rng_seed(&rng, 1234);
        for (size_t i = 0; i < (size_t)*n * (size_t)a->prompt_len; i++)
            (*bench_tokens)[i] = (int32_t)(rt_rng_next(&rng) % (uint64_t)cfg->vocab_size);
        for (int i = 0; i < *n; i++)
            reqs[i] = (rt_gen_request){.prompt = *bench_tokens + (size_t)i * a->prompt_len,
                                       .prompt_len = a->prompt_len, .max_tokens = a->gen_len,
                                       .sampling = a->sampling, .ignore_eos = true};
    } else {
        for (int i = 0; i < *n; i++)
            reqs[i] = (rt_gen_request){.prompt = a->prompts[i], .prompt_len = a->prompt_lens[i],
                                       .max_tokens = a->max_tokens, .sampling = a->sampling,
                                       .ignore_eos = a->ignore_eos};
    }
    *out = reqs;
    return 0;
}

/* Rank 0 checks the requests and sizes the KV pool to hold them all; every rank learns the size
 * (the rest of the geometry every rank built alike in job_load). A bad request stops every rank. */
static int share_kv_blocks(comm *c, const rt_config *cfg, const rt_gen_request *reqs, int n, rt_engine_geometry *g,
                           base_err *err)
{
    int32_t w[2] = {0, 0};
    if (comm_topo(c)->rank == 0)
        w[0] = rt_gen_kv_blocks(cfg, reqs, n, g->block_size, &w[1], err) ? -1 : 0;
    if (comm_bcast(comm_topo(c)->world, w, 2, COMM_I32, 0, err))
        return -1;
    if (w[0] != 0) {
        if (comm_topo(c)->rank != 0)
            base_errf(err, "rank 0 refused the requests");
        return -1;
    }
    g->n_blocks = w[1];
    return 0;
}

static void print_traffic(comm *c, rt_engine *e, const plan *p, const rt_config *cfg)
{
    rt_engine_traffic tr = rt_engine_get_traffic(e);
    const comm_topology *t = comm_topo(c);
    char line[256];
    double n = tr.decode_tokens ? (double)tr.decode_tokens : 1.0;
    snprintf(line, sizeof line,
             "rank %d (stage %d, tp %d): per decode token sent %.0f B tensor-parallel + %.0f B pipeline "
             "(plan: %zu B), %.0f B control",
             t->rank, t->stage, t->tp_rank, (double)tr.tp_bytes / n, (double)tr.pp_bytes / n,
             plan_comm_bytes_per_token(p, cfg, t->rank), (double)tr.world_bytes / n);
    job_print_by_rank(c, stdout, line);
}

static int run(run_args *a, comm *c, base_err *err)
{
    const char *prog = "dinfer-run";
    const comm_topology *t = comm_topo(c);
    const bool root = t->rank == 0;
    job_model jm;
    const int n_req = a->bench ? a->batch : a->n_prompts;
    job_flags f = a->job; /* every prompt decodes in one step: at least one token each */
    f.max_batch_tokens = f.max_batch_tokens < n_req ? n_req : f.max_batch_tokens;
    if (job_load(c, prog, &f, n_req, &jm))
        return -2; /* already reported */
    const rt_config cfg = jm.cfg;
    int rc = 0;
    rt_gen_request *reqs = NULL;
    rt_gen_result *res = NULL;
    int32_t *bench_tokens = NULL;
    int n = 0;
    rt_engine_geometry g = jm.geo;
    rt_engine *e = NULL;
    rt_tokenizer *tok = NULL;
    if (root && (rc = prepare_text(a, &jm.model.cfg, &tok, err)) == 0 && (rc = make_requests(a, &cfg, &reqs, &n, &bench_tokens, err)) == 0 &&
        !(res = calloc((size_t)n, sizeof *res)))
        rc = base_errf(err, "out of memory");
    if (job_agree(c, prog, rc, err) || share_kv_blocks(c, &cfg, reqs, n, &g, err)) {
        rc = -1;
        goto out;
    }
    rc = rt_engine_create(&e, &jm.model, c, &g, err);
    if (job_agree(c, prog, rc, err)) {
        rc = -2;
        goto out;
    }
    rt_gen_stats st;
    if (!root) {
        if (rt_engine_follow(e, err))
            job_abort(c, prog, err);
    } else {
        if (a->bench) {
            /* warm-up, the batch itself for two tokens: thread pools, first-touch page faults, the
             * first use of each of the batch's kernels (a library's kernel loads then) and the
             * capture of its decode step stay out of the figures, as a server's start-up */
            rt_gen_request *w = malloc((size_t)n * sizeof *w);
            if (!w) {
                base_errf(err, "out of memory");
                job_abort(c, prog, err);
            }
            for (int i = 0; i < n; i++) {
                w[i] = reqs[i];
                w[i].max_tokens = 2;
            }
            if (rt_generate(e, w, n, job_flags_depth(&a->job), res, &st, err))
                job_abort(c, prog, err);
            free(w);
            for (int i = 0; i < n; i++)
                rt_gen_result_free(&res[i]);
        }
        if (rt_generate(e, reqs, n, job_flags_depth(&a->job), res, &st, err) || rt_engine_finish(e, err))
            job_abort(c, prog, err);
        if (a->bench) {
            printf("bench: %s (%.1fM parameters), %s, tp=%d x pp=%d, batch %d, prompt %d, generate %d\n", a->job.model,
                   params_of(&cfg) / 1e6, jm.device, a->job.tp, a->job.pp, n, a->prompt_len, a->gen_len);
            print_speed(stdout, &st);
            if (st.decode_seconds > 0) {
                double step = st.decode_seconds * n / (double)st.decode_tokens;
                printf("decode step: %.2f ms for %d sequences (%.1f tokens/s per sequence)\n", step * 1e3, n,
                       (double)st.decode_tokens / n / st.decode_seconds);
                print_bandwidth(&jm, a, n, step);
            }
        } else {
            for (int i = 0; i < n; i++) {
                base_err de;
                char *text = tok ? rt_tokenizer_decode_after(tok, a->prompts[i], a->prompt_lens[i], res[i].tokens,
                                                             res[i].n_tokens, true, NULL, &de)
                                 : NULL;
                if (tok && !text)
                    fprintf(stderr, "dinfer-run: prompt %d's output stays ids: %s\n", i, de.msg);
                if (a->json)
                    print_json(&res[i], text);
                else
                    print_text(i, a->prompts[i], a->prompt_lens[i], a->texts[i], &res[i], a->logprobs, text);
                free(text);
            }
            print_speed(a->json ? stderr : stdout, &st);
        }
        fflush(stdout);
    }
    if ((a->job.verbose || a->bench) && t->world_size > 1)
        print_traffic(c, e, &jm.plan, &cfg);
    rc = 0;
out:
    rt_engine_destroy(e);
    for (int i = 0; res && i < n; i++)
        rt_gen_result_free(&res[i]);
    free(res);
    free(reqs);
    free(bench_tokens);
    rt_tokenizer_free(tok);
    job_model_free(&jm);
    return rc;
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    run_args a;
    base_err err = {{0}};
    comm *c = NULL;
    /* every rank parses the same command line and reaches the same verdict; rank 0 reports it */
    int rc = parse_args(&a, argc, argv, &err), stage = 0, tp_rank = 0;
    if (rc == 0)
        plan_place(a.job.tp, rank, &stage, &tp_rank);
    if (rc == 0 && comm_mpi_create(&c, a.job.tp, a.job.pp, stage, tp_rank, &err) != 0)
        rc = -1;
    if (rc == 0)
        rc = run(&a, c, &err);
    for (int i = 0; i < a.n_prompts; i++)
        free(a.prompts[i]), free(a.texts[i]);
    free(a.prompts);
    free(a.texts);
    free(a.prompt_lens);
    job_flags_free(&a.job);
    if (rc == -1 && rank == 0)
        fprintf(stderr, "dinfer-run: %s\n", err.msg);
    comm_destroy(c);
    MPI_Finalize();
    return rc < 0 ? 1 : 0;
}
