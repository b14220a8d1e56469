/* kl_divergence: how far each quantized form of a model moves its next-token distributions from the
 * float model's, on one rank (docs/PERFORMANCE.md's quality table for the synthetic 8B shape).
 *
 *   kl_divergence --model DIR [--device cpu|cuda] [--dtype bf16|f16|f32] [--prompts N] [--len L]
 *                 [--seed S] FORMAT...
 *
 * FORMAT: fp8, int8 or int4 (--quantize as the model loads), or kv-fp8 (float weights, an FP8 KV
 * cache). N prompts (default 8) of L tokens (default 64) drawn uniformly from the vocabulary with
 * seed S; every position of every prompt is scored. For each format, prints the mean KL divergence
 * KL(float || format) in nats over all positions, its largest value, and the share of positions
 * whose most likely token is the float model's. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/backend.h"
#include "runtime/config.h"
#include "runtime/forward.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"
#include "runtime/sampler.h"
#include "tests/tools/lse.h"

static int fail(const char *what, const base_err *err)
{
    fprintf(stderr, "kl_divergence: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    return 1;
}

/* In place: a row of logits (V) to log-probabilities. */
static void log_softmax(float *l, int V)
{
    const float lse = (float)row_lse(l, V);
    for (int v = 0; v < V; v++)
        l[v] -= lse;
}

typedef struct run_opts {
    const char *model;
    bool cuda;
    rt_dtype dt;
    int prompts, len;
    const int32_t *ids; /* (prompts, len) */
} run_opts;

/* lp (prompts * len, V) = the log-probabilities after every position of every prompt, the model
 * loaded with cfg. */
static int score(const run_opts *o, const rt_config *cfg, float *lp, base_err *err)
{
    rt_backend *be = NULL;
#ifdef DINFER_HAVE_CUDA
    if (o->cuda)
        be = rt_cuda_backend_create(0, o->dt, 0, err);
#endif
    if (!o->cuda)
        be = rt_cpu_backend_create(0);
    if (!be)
        return o->cuda ? -1 : base_errf(err, "cannot create the backend");
    rt_model m;
    rt_shard s;
    rt_shard_whole(&s, cfg);
    const int bs = 16, nb = rt_kv_blocks_for(o->len, bs), V = cfg->vocab_size;
    rt_kv_cache kv;
    rt_forward *fw = NULL;
    rt_forward_limits lim = {.max_tokens = o->len, .max_seqs = 1, .max_blocks = nb, .max_logits = o->len,
                             .host_logits = true};
    int32_t *pos = malloc(sizeof *pos * (size_t)o->len), *seq = calloc((size_t)o->len, sizeof *seq);
    int32_t *blocks = malloc(sizeof *blocks * (size_t)nb);
    rt_step_sampling *rows = calloc((size_t)o->len, sizeof *rows);
    rt_sample_out *out = calloc((size_t)o->len, sizeof *out);
    int rc = !pos || !seq || !blocks || !rows || !out ? base_errf(err, "out of host memory") : 0;
    for (int i = 0; !rc && i < o->len; i++)
        pos[i] = i, rows[i].params.top_p = 1.0f;
    for (int i = 0; !rc && i < nb; i++)
        blocks[i] = i;
    bool loaded = false, cached = false;
    if (!rc && !(rc = rt_model_load(&m, cfg, &s, o->model, be, err)))
        loaded = true;
    if (!rc && !(rc = rt_kv_cache_for_model(&kv, &m, nb, bs, err)))
        cached = true;
    if (!rc)
        rc = rt_forward_create(&fw, &m, &kv, &lim, NULL, err);
    for (int p = 0; !rc && p < o->prompts; p++) {
        rt_batch b = {.n_tokens = o->len, .tokens = o->ids + (size_t)p * o->len, .pos = pos, .seq = seq, .n_seqs = 1,
                      .block_tables = blocks, .max_blocks = nb, .n_logits = o->len, .logit_rows = pos};
        if ((rc = rt_forward_step(fw, &b, rows, out, err)))
            break;
        const float *l = rt_forward_host_logits(fw);
        if (!l) {
            rc = base_errf(err, "the step left no logits on the host");
            break;
        }
        float *dst = lp + (size_t)p * o->len * V;
        memcpy(dst, l, (size_t)o->len * V * sizeof *dst);
        for (int i = 0; i < o->len; i++)
            log_softmax(dst + (size_t)i * V, V);
    }
    rt_forward_destroy(fw);
    if (cached)
        rt_kv_cache_destroy(&kv);
    if (loaded)
        rt_model_free(&m);
    be->ops->destroy(be);
    free(pos), free(seq), free(blocks), free(rows), free(out);
    return rc;
}

int main(int argc, char **argv)
{
    run_opts o = {.dt = RT_BF16, .prompts = 8, .len = 64};
    uint64_t seed = 1;
    const char *formats[8];
    int n_formats = 0;
    const char *usage = "usage: kl_divergence --model DIR [--device cpu|cuda] [--dtype bf16|f16|f32] [--prompts N] "
                        "[--len L] [--seed S] fp8|int8|int4|kv-fp8...";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--model") == 0 && v)
            o.model = v, i++;
        else if (strcmp(a, "--device") == 0 && v)
            o.cuda = strcmp(v, "cuda") == 0, i++;
        else if (strcmp(a, "--dtype") == 0 && v)
            o.dt = strcmp(v, "f32") == 0 ? RT_F32 : strcmp(v, "f16") == 0 ? RT_F16 : RT_BF16, i++;
        else if (strcmp(a, "--prompts") == 0 && v)
            o.prompts = atoi(v), i++;
        else if (strcmp(a, "--len") == 0 && v)
            o.len = atoi(v), i++;
        else if (strcmp(a, "--seed") == 0 && v)
            seed = strtoull(v, NULL, 10), i++;
        else if (a[0] != '-' && n_formats < 8)
            formats[n_formats++] = a;
        else
            return fail(usage, NULL);
    }
    if (!o.model || n_formats == 0 || o.prompts < 1 || o.len < 1)
        return fail(usage, NULL);
    if (!o.cuda)
        o.dt = RT_F32;
    base_err err = {{0}};
    rt_config cfg;
    if (rt_config_load(&cfg, o.model, &err))
        return fail("config", &err);
    if (o.len > cfg.max_pos)
        return fail("--len is past the model's context", NULL);
    const int V = cfg.vocab_size;
    const size_t rows = (size_t)o.prompts * o.len;
    int32_t *ids = malloc(rows * sizeof *ids);
    float *ref = malloc(rows * V * sizeof *ref), *got = malloc(rows * V * sizeof *got);
    if (!ids || !ref || !got)
        return fail("out of host memory", NULL);
    rt_rng rng;
    rt_rng_seed(&rng, seed);
    for (size_t i = 0; i < rows; i++)
        ids[i] = (int32_t)(rt_rng_uniform(&rng) * (float)V) % V;
    o.ids = ids;
    if (score(&o, &cfg, ref, &err))
        return fail("the float model", &err);
    printf("%s: %d prompts x %d tokens on %s (%s), KL(float || format) over %zu positions\n", o.model, o.prompts,
           o.len, o.cuda ? "cuda" : "cpu", rt_dtype_name(o.dt), rows);
    for (int f = 0; f < n_formats; f++) {
        rt_config c = cfg;
        if (strcmp(formats[f], "kv-fp8") == 0)
            c.kv_fp8 = true;
        else if (rt_quant_for_load(&c.quant, formats[f]))
            return fail("a format is fp8, int8, int4 or kv-fp8", NULL);
        if (score(&o, &c, got, &err))
            return fail(formats[f], &err);
        double kl = 0, worst = 0;
        size_t same = 0;
        for (size_t r = 0; r < rows; r++) {
            const float *p = ref + r * V, *q = got + r * V;
            double k = 0;
            int ap = 0, aq = 0;
            for (int v = 0; v < V; v++) {
                k += exp((double)p[v]) * ((double)p[v] - q[v]);
                ap = p[v] > p[ap] ? v : ap;
                aq = q[v] > q[aq] ? v : aq;
            }
            kl += k;
            worst = k > worst ? k : worst;
            same += ap == aq;
        }
        printf("  %-7s mean KL %.6f nats, largest %.6f, most likely token the float model's at %.2f%% of positions\n",
               formats[f], kl / (double)rows, worst, 100.0 * (double)same / (double)rows);
    }
    free(ids), free(ref), free(got);
    return 0;
}
