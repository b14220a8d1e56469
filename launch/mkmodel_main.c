/* dinfer-mkmodel: writes a Hugging Face-style model folder (config.json + safetensors) with seeded
 * random weights, from a few KB to an 8B-shaped model, for demos, tests and benchmarks. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "launch/cli.h"
#include "base/clock.h"
#include "runtime/config.h"
#include "runtime/quant.h"
#include "runtime/sampler.h"
#include "runtime/st_writer.h"

typedef struct preset {
    const char *name;
    rt_config cfg;
} preset;

#define LLAMA3_ROPE(f, orig) \
    {.type = RT_ROPE_LLAMA3, .theta = 500000.0, .factor = (f), .low_freq_factor = 1.0, .high_freq_factor = 4.0, .orig_max_pos = (orig)}

static const preset presets[] = {
    {"tiny", {.arch = RT_ARCH_LLAMA, .dim = 64, .ffn_dim = 176, .n_layers = 4, .n_heads = 8, .n_kv_heads = 4,
              .head_dim = 8, .vocab_size = 512, .max_pos = 512, .norm_eps = 1e-5,
              .rope = {.theta = 10000.0, .factor = 1.0}, .bos_id = 1, .n_eos = 1, .eos_ids = {2}}},
    {"llama-100m", {.arch = RT_ARCH_LLAMA, .dim = 768, .ffn_dim = 2048, .n_layers = 12, .n_heads = 12,
                    .n_kv_heads = 4, .head_dim = 64, .vocab_size = 32000, .max_pos = 2048, .norm_eps = 1e-5,
                    .rope = {.theta = 10000.0, .factor = 1.0}, .bos_id = 1, .n_eos = 1, .eos_ids = {2}}},
    {"llama3-1b", {.arch = RT_ARCH_LLAMA, .dim = 2048, .ffn_dim = 8192, .n_layers = 16, .n_heads = 32,
                   .n_kv_heads = 8, .head_dim = 64, .vocab_size = 128256, .max_pos = 131072, .norm_eps = 1e-5,
                   .rope = LLAMA3_ROPE(32.0, 8192), .tie_embeddings = true, .bos_id = 128000, .n_eos = 1,
                   .eos_ids = {128001}, .dtype = RT_BF16}},
    {"llama3-8b", {.arch = RT_ARCH_LLAMA, .dim = 4096, .ffn_dim = 14336, .n_layers = 32, .n_heads = 32,
                   .n_kv_heads = 8, .head_dim = 128, .vocab_size = 128256, .max_pos = 131072, .norm_eps = 1e-5,
                   .rope = LLAMA3_ROPE(8.0, 8192), .bos_id = 128000, .n_eos = 1, .eos_ids = {128001},
                   .dtype = RT_BF16}},
};

typedef struct fill_ctx {
    uint64_t seed;
    const float *scale;  /* (n_tensors) half-width of the uniform distribution */
    const float *center; /* (n_tensors) its center */
    /* with --quantize: the written list's tensor i is float tensor src[i] of build_specs' list, or
     * the precomputed bytes packed[i] (a quantized weight's tensors) */
    const int *src;
    void *const *packed;
} fill_ctx;

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Element e of tensor i is a function of (seed, i, e) only, so chunks fill independently. */
static void fill_weights(void *ctx_, int index, const rt_st_spec *t, size_t off, void *dst, size_t n)
{
    const fill_ctx *ctx = ctx_;
    size_t es = rt_dtype_size(t->dtype), count = n / es, first = off / es;
    uint64_t base = mix64(ctx->seed * 0x9e3779b97f4a7c15ULL + (uint64_t)index * 0xd1b54a32d192ed03ULL);
    float sc = ctx->scale[index], ce = ctx->center[index];
    float buf[1024];
    for (size_t done = 0; done < count;) {
        size_t k = count - done < 1024 ? count - done : 1024;
        for (size_t j = 0; j < k; j++) {
            uint64_t r = mix64(base + (first + done + j) * 0x9e3779b97f4a7c15ULL);
            float u = (float)(r >> 40) * 0x1p-24f * 2.0f - 1.0f; /* [-1, 1) */
            buf[j] = ce + sc * u;
        }
        rt_convert_from_f32((char *)dst + done * es, buf, t->dtype, k);
        done += k;
    }
}

static void fill_written(void *ctx_, int index, const rt_st_spec *t, size_t off, void *dst, size_t n)
{
    const fill_ctx *ctx = ctx_;
    if (ctx->packed && ctx->packed[index])
        memcpy(dst, (const char *)ctx->packed[index] + off, n);
    else
        fill_weights(ctx_, ctx->src ? ctx->src[index] : index, t, off, dst, n);
}

static int add_spec(rt_st_spec *ts, float *scale, float *center, int *n, const char *name, rt_dtype dt,
                    int64_t rows, int64_t cols, float sc, float ce)
{
    rt_st_spec *t = &ts[*n];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->dtype = dt;
    t->n_dims = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    scale[*n] = sc;
    center[*n] = ce;
    return (*n)++;
}

/* Every tensor of the model in Hugging Face's names and order. Linear weights are uniform with
 * standard deviation 1 / sqrt(fan_in) so activations stay of order one through the layers. */
static int build_specs(const rt_config *c, rt_dtype dt, rt_st_spec *ts, float *sc, float *ce)
{
    int n = 0;
    const int64_t dim = c->dim, q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    const float s3 = sqrtf(3.0f);
    char name[128];
    add_spec(ts, sc, ce, &n, "model.embed_tokens.weight", dt, c->vocab_size, dim, s3, 0);
    for (int l = 0; l < c->n_layers; l++) {
#define L(suffix) (snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix), name)
        add_spec(ts, sc, ce, &n, L("input_layernorm.weight"), dt, dim, 0, 0.1f, 1.0f);
        add_spec(ts, sc, ce, &n, L("self_attn.q_proj.weight"), dt, q, dim, s3 / sqrtf((float)dim), 0);
        add_spec(ts, sc, ce, &n, L("self_attn.k_proj.weight"), dt, kv, dim, s3 / sqrtf((float)dim), 0);
        add_spec(ts, sc, ce, &n, L("self_attn.v_proj.weight"), dt, kv, dim, s3 / sqrtf((float)dim), 0);
        if (c->qkv_bias) {
            add_spec(ts, sc, ce, &n, L("self_attn.q_proj.bias"), dt, q, 0, 0.1f, 0);
            add_spec(ts, sc, ce, &n, L("self_attn.k_proj.bias"), dt, kv, 0, 0.1f, 0);
            add_spec(ts, sc, ce, &n, L("self_attn.v_proj.bias"), dt, kv, 0, 0.1f, 0);
        }
        add_spec(ts, sc, ce, &n, L("self_attn.o_proj.weight"), dt, dim, q, s3 / sqrtf((float)q), 0);
        if (c->o_bias)
            add_spec(ts, sc, ce, &n, L("self_attn.o_proj.bias"), dt, dim, 0, 0.1f, 0);
        add_spec(ts, sc, ce, &n, L("post_attention_layernorm.weight"), dt, dim, 0, 0.1f, 1.0f);
        add_spec(ts, sc, ce, &n, L("mlp.gate_proj.weight"), dt, c->ffn_dim, dim, s3 / sqrtf((float)dim), 0);
        add_spec(ts, sc, ce, &n, L("mlp.up_proj.weight"), dt, c->ffn_dim, dim, s3 / sqrtf((float)dim), 0);
        add_spec(ts, sc, ce, &n, L("mlp.down_proj.weight"), dt, dim, c->ffn_dim, s3 / sqrtf((float)c->ffn_dim), 0);
#undef L
    }
    add_spec(ts, sc, ce, &n, "model.norm.weight", dt, dim, 0, 0.1f, 1.0f);
    if (!c->tie_embeddings)
        add_spec(ts, sc, ce, &n, "lm_head.weight", dt, c->vocab_size, dim, s3 / sqrtf((float)dim), 0);
    return n;
}

/* --quantize's formats, as each published tool lays its checkpoints out. */
static int quant_format(const char *name, rt_quant *q)
{
    if (strcmp(name, "fp8") == 0) /* llm-compressor's FP8_DYNAMIC: a scale a row */
        *q = (rt_quant){.method = RT_QUANT_CT_FP8, .kind = RT_QK_FP8, .scale = RT_QSCALE_CHANNEL, .bits = 8};
    else if (strcmp(name, "fp8-block") == 0) /* transformers' fp8: 128 x 128 blocks */
        *q = (rt_quant){.method = RT_QUANT_FP8, .kind = RT_QK_FP8, .scale = RT_QSCALE_BLOCK, .bits = 8,
                        .block_rows = 128, .block_cols = 128};
    else if (strcmp(name, "awq") == 0)
        *q = (rt_quant){.method = RT_QUANT_AWQ, .kind = RT_QK_INT, .scale = RT_QSCALE_GROUP, .bits = 4,
                        .group_size = 128, .zero_point = true, .scales_f16 = true};
    else if (strcmp(name, "gptq4") == 0) /* zero points as they are: a zero of 0 has no v1 form */
        *q = (rt_quant){.method = RT_QUANT_GPTQ, .kind = RT_QK_INT, .scale = RT_QSCALE_GROUP, .bits = 4,
                        .group_size = 128, .zero_point = true, .scales_f16 = true};
    else if (strcmp(name, "gptq4-act") == 0) /* GPTQModel's default: desc_act, the groups from g_idx */
        *q = (rt_quant){.method = RT_QUANT_GPTQ, .kind = RT_QK_INT, .scale = RT_QSCALE_GROUP, .bits = 4,
                        .group_size = 128, .zero_point = true, .scales_f16 = true, .act_order = true};
    else if (strcmp(name, "w4a16") == 0) /* llm-compressor's W4A16: symmetric int4, groups of 128 */
        *q = (rt_quant){.method = RT_QUANT_CT_INT, .kind = RT_QK_INT, .scale = RT_QSCALE_GROUP, .bits = 4,
                        .group_size = 128, .symmetric = true, .scales_f16 = true};
    else if (strcmp(name, "w8a16") == 0) /* its W8A16, asymmetric: int8 with zero points, a scale a row */
        *q = (rt_quant){.method = RT_QUANT_CT_INT, .kind = RT_QK_INT, .scale = RT_QSCALE_CHANNEL, .bits = 8,
                        .zero_point = true, .scales_f16 = true};
    else if (strcmp(name, "w8a8") == 0) /* its W8A8 (int-quantized): int8 a byte, a scale a row */
        *q = (rt_quant){.method = RT_QUANT_CT_INT, .kind = RT_QK_INT, .scale = RT_QSCALE_CHANNEL, .bits = 8,
                        .symmetric = true, .scales_f16 = true, .int8_weight = true};
    else if (strcmp(name, "gptq8") == 0)
        *q = (rt_quant){.method = RT_QUANT_GPTQ, .kind = RT_QK_INT, .scale = RT_QSCALE_CHANNEL, .bits = 8,
                        .symmetric = true, .gptq_v1 = true, .scales_f16 = true};
    else
        return -1;
    return 0;
}

static bool is_linear(const char *name)
{
    static const char *const suffixes[] = {".q_proj.weight", ".k_proj.weight", ".v_proj.weight", ".o_proj.weight",
                                           ".gate_proj.weight", ".up_proj.weight", ".down_proj.weight"};
    const size_t n = strlen(name);
    for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) {
        const size_t k = strlen(suffixes[i]);
        if (n > k && strcmp(name + n - k, suffixes[i]) == 0 && strncmp(name, "model.layers.", 13) == 0)
            return true;
    }
    return false;
}

/* Act order (GPTQ's desc_act) as the tools make it: the columns quantized in an order of their own
 * (GPTQ's: by the Hessian of the layer's inputs, so q/k/v share one order and gate/up another; here
 * a shuffle seeded by the input), each run of group_size of them a group. w (rows, cols) is
 * quantized in that order and its codes put back in the input order, each column's group in gidx. */
static int quantize_act_order(rt_qmat *m, const rt_quant *q, const float *w, int64_t rows, int64_t cols,
                              uint64_t seed, const char *what, base_err *err)
{
    int32_t *order = malloc((size_t)cols * sizeof *order);
    float *shuffled = malloc((size_t)(rows * cols) * sizeof *shuffled);
    uint8_t *codes = malloc((size_t)(rows * cols) + 1);
    int32_t *gidx = malloc((size_t)cols * sizeof *gidx + 1);
    int rc = !order || !shuffled || !codes || !gidx ? base_errf(err, "out of memory quantizing %s", what) : 0;
    if (!rc) {
        rt_rng r;
        rt_rng_seed(&r, seed);
        for (int64_t c = 0; c < cols; c++)
            order[c] = (int32_t)c;
        for (int64_t c = cols - 1; c > 0; c--) { /* Fisher-Yates */
            const int64_t j = (int64_t)(rt_rng_next(&r) % (uint64_t)(c + 1));
            const int32_t t = order[c];
            order[c] = order[j], order[j] = t;
        }
        for (int64_t i = 0; i < rows; i++)
            for (int64_t c = 0; c < cols; c++)
                shuffled[i * cols + c] = w[i * cols + order[c]];
        rc = rt_qmat_quantize(m, q, shuffled, rows, cols, 0, cols, what, err);
    }
    if (!rc) {
        for (int64_t i = 0; i < rows; i++)
            for (int64_t c = 0; c < cols; c++)
                codes[i * cols + order[c]] = m->codes[i * cols + c];
        for (int64_t c = 0; c < cols; c++)
            gidx[order[c]] = (int32_t)(c / m->group);
        free(m->codes);
        m->codes = codes, m->gidx = gidx;
        codes = NULL, gidx = NULL;
    }
    free(order), free(shuffled), free(codes), free(gidx);
    return rc;
}

/* The written list: build_specs' tensors, each linear weight replaced by its quantized form (the
 * float values it would have held, as dt rounds them, quantized by q and packed), into out/src/packed
 * (room for RT_QTENSORS_MAX tensors a float one). */
static int quantize_specs(const rt_st_spec *ts, int n, fill_ctx *fc, const rt_quant *q, rt_st_spec *out, int *src,
                          void **packed, int *n_out, base_err *err)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        if (!is_linear(ts[i].name)) {
            out[k] = ts[i];
            src[k++] = i;
            continue;
        }
        const int64_t rows = ts[i].shape[0], cols = ts[i].shape[1];
        const size_t es = rt_dtype_size(ts[i].dtype), count = (size_t)(rows * cols);
        float *w = malloc(count * sizeof *w);
        char *raw = malloc(count * es);
        if (!w || !raw) {
            free(w), free(raw);
            return base_errf(err, "out of memory quantizing %s", ts[i].name);
        }
        const size_t chunk = (size_t)1 << 20; /* elements a thread generates at a time */
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t c0 = 0; c0 < count; c0 += chunk) {
            const size_t m = count - c0 < chunk ? count - c0 : chunk;
            fill_weights(fc, i, &ts[i], c0 * es, raw + c0 * es, m * es);
            rt_convert_to_f32(w + c0, raw + c0 * es, ts[i].dtype, m);
        }
        free(raw);
        rt_qmat qm;
        rt_qtensor qt[RT_QTENSORS_MAX];
        int nq = 0;
        char module[128];
        snprintf(module, sizeof module, "%.*s", (int)(strlen(ts[i].name) - strlen(".weight")), ts[i].name);
        /* the input: layer * 4 + (0 q/k/v, 1 o, 2 gate/up, 3 down) */
        const char *name = ts[i].name;
        const uint64_t input = strtoull(name + strlen("model.layers."), NULL, 10) * 4 +
                               (strstr(name, ".o_proj") ? 1 : strstr(name, "_proj") && strstr(name, ".mlp.") ?
                                (strstr(name, ".down_proj") ? 3 : 2) : 0);
        int rc = q->act_order ? quantize_act_order(&qm, q, w, rows, cols, fc->seed * 1000003u + input, name, err)
                              : rt_qmat_quantize(&qm, q, w, rows, cols, 0, cols, ts[i].name, err);
        free(w);
        if (rc)
            return -1;
        rc = rt_qmat_pack(&qm, q, qt, &nq, err);
        rt_qmat_free(&qm);
        if (rc) {
            char why[sizeof err->msg];
            snprintf(why, sizeof why, "%s", err->msg);
            return base_errf(err, "%s: %s", module, why);
        }
        for (int j = 0; j < nq; j++, k++) {
            out[k] = (rt_st_spec){.dtype = ts[i].dtype, .raw_dtype = qt[j].dtype, .raw_size = qt[j].elem_size,
                                  .n_dims = qt[j].n_dims, .shape = {qt[j].shape[0], qt[j].shape[1]}};
            snprintf(out[k].name, sizeof out[k].name, "%s.%s", module, qt[j].suffix);
            src[k] = i;
            packed[k] = qt[j].data; /* owned by packed[] from here */
        }
    }
    *n_out = k;
    return 0;
}

/* Float tensor `name` of build_specs' list ts (n of them), its values as fc makes them, or NULL. */
static float *float_values(const rt_st_spec *ts, int n, const fill_ctx *fc, const char *name)
{
    int i = 0;
    while (i < n && strcmp(ts[i].name, name) != 0)
        i++;
    if (i == n)
        return NULL;
    const size_t count = (size_t)ts[i].shape[0] * (size_t)(ts[i].n_dims == 2 ? ts[i].shape[1] : 1);
    const size_t es = rt_dtype_size(ts[i].dtype);
    float *w = malloc(count * sizeof *w);
    char *raw = malloc(count * es);
    if (w && raw) {
        fill_weights((void *)fc, i, &ts[i], 0, raw, count * es);
        rt_convert_to_f32(w, raw, ts[i].dtype, count);
    } else {
        free(w);
        w = NULL;
    }
    free(raw);
    return w;
}

/* --kv-scales: layer l's static FP8 KV-cache scales, k's then v's (one, or one a KV head), from a
 * bound on what the layer can write: a row of k_proj meets the normed input, whose 2-norm is at most
 * sqrt(dim) times the norm weight's largest magnitude, so |k_j| <= |W_j| sqrt(dim) max|g| + |b_j|;
 * RoPE mixes j with j + head_dim / 2, so k's bound is the pair's. The scale is the bound / 448: no
 * value saturates (a calibrating tool takes the largest value it sees instead). */
static int kv_scale_bounds(const rt_st_spec *ts, int n, const fill_ctx *fc, const rt_config *c, int l, bool per_head,
                           float *out, base_err *err)
{
    char name[128];
    float *w[5] = {0};
    const char *suffix[5] = {"input_layernorm.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight",
                             "self_attn.k_proj.bias", "self_attn.v_proj.bias"};
    int rc = 0;
    for (int i = 0; i < 5 && !rc; i++) {
        snprintf(name, sizeof name, "model.layers.%d.%s", l, suffix[i]);
        if (!(w[i] = float_values(ts, n, fc, name)) && (i < 3 || c->qkv_bias))
            rc = base_errf(err, "out of memory computing %s's KV-cache scales", name);
    }
    const int hd = c->head_dim, nkv = c->n_kv_heads, dim = c->dim;
    float gmax = 0.0f;
    for (int i = 0; !rc && i < dim; i++)
        gmax = fmaxf(gmax, fabsf(w[0][i]));
    for (int h = 0; h < nkv; h++)
        out[h] = out[nkv + h] = 0.0f;
    for (int j = 0; !rc && j < nkv * hd; j++) {
        float bound[2];
        for (int m = 0; m < 2; m++) { /* k, v */
            double s = 0;
            for (int e = 0; e < dim; e++)
                s += (double)w[1 + m][(size_t)j * dim + e] * w[1 + m][(size_t)j * dim + e];
            bound[m] = (float)(sqrt(s) * sqrt((double)dim) * gmax) + (w[3 + m] ? fabsf(w[3 + m][j]) : 0.0f);
        }
        const int h = per_head ? j / hd : 0;
        out[h] = fmaxf(out[h], bound[0]);
        out[nkv + h] = fmaxf(out[nkv + h], bound[1]);
    }
    for (int i = 0; i < 5; i++)
        free(w[i]);
    /* k's pair bound: sqrt(2) times the largest single bound covers every pair */
    for (int h = 0; !rc && h < (per_head ? nkv : 1); h++)
        out[h] = out[h] * sqrtf(2.0f) / 448.0f, out[nkv + h] = out[nkv + h] / 448.0f;
    return rc;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dinfer-mkmodel --out DIR [--preset tiny|llama-100m|llama3-1b|llama3-8b] [options]\n"
            "Writes config.json and safetensors weights with seeded random values.\n"
            "  --arch llama|mistral|qwen2   architecture (default llama)\n"
            "  --dim N --ffn-dim N --layers N --heads N --kv-heads N --head-dim N --vocab N\n"
            "  --max-pos N                  context length (max_position_embeddings)\n"
            "  --rope-theta F               rotary base\n"
            "  --tie / --no-tie             tie the LM head to the embedding\n"
            "  --dtype f32|bf16|f16         weight type (default: the preset's, else f32)\n"
            "  --seed S                     random seed (default 0)\n"
            "  --shard-size SIZE            split into files of at most SIZE, e.g. 5GB, 100MiB (default 5GB)\n"
            "  --quantize FORMAT            the linear layers quantized (round to nearest) and stored as a\n"
            "                               published format: fp8 (compressed-tensors, a scale a row),\n"
            "                               fp8-block (transformers fp8, 128 x 128 blocks), awq (int4, groups\n"
            "                               of 128), gptq4 (int4, groups of 128, gptq_v2 zero points),\n"
            "                               gptq4-act (the same in act order: desc_act, columns grouped\n"
            "                               by a seeded shuffle, g_idx), gptq8 (int8, a scale a row,\n"
            "                               symmetric), w4a16 (compressed-tensors pack-quantized int4,\n"
            "                               groups of 128, symmetric), w8a16 (int8 with zero points, a\n"
            "                               scale a row), w8a8 (int-quantized int8, a scale a row)\n"
            "  --kv-scales tensor|attn_head with --quantize fp8: static FP8 KV-cache scales as llm-compressor\n"
            "                               writes them (kv_cache_scheme; k_scale and v_scale a layer, one\n"
            "                               value or one a KV head), each a bound on what the layer can write\n");
}

static int run(int argc, char **argv, base_err *err)
{
    enum { O_PRESET = 256, O_ARCH, O_DIM, O_FFN, O_LAYERS, O_HEADS, O_KV, O_HD, O_VOCAB, O_MAXPOS, O_THETA,
           O_TIE, O_NOTIE, O_DTYPE, O_SEED, O_SHARD, O_QUANT, O_KV_SCALES };
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'}, {"preset", required_argument, 0, O_PRESET},
        {"arch", required_argument, 0, O_ARCH}, {"dim", required_argument, 0, O_DIM},
        {"ffn-dim", required_argument, 0, O_FFN}, {"layers", required_argument, 0, O_LAYERS},
        {"heads", required_argument, 0, O_HEADS}, {"kv-heads", required_argument, 0, O_KV},
        {"head-dim", required_argument, 0, O_HD}, {"vocab", required_argument, 0, O_VOCAB},
        {"max-pos", required_argument, 0, O_MAXPOS}, {"rope-theta", required_argument, 0, O_THETA},
        {"tie", no_argument, 0, O_TIE}, {"no-tie", no_argument, 0, O_NOTIE},
        {"dtype", required_argument, 0, O_DTYPE}, {"seed", required_argument, 0, O_SEED},
        {"shard-size", required_argument, 0, O_SHARD}, {"quantize", required_argument, 0, O_QUANT},
        {"kv-scales", required_argument, 0, O_KV_SCALES}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    const char *out = NULL;
    rt_config c = presets[0].cfg; /* tiny unless told */
    bool preset_given = false, dims_changed = false, head_dim_given = false;
    uint64_t seed = 0;
    rt_quant quant = {0};
    rt_kv_scales kv_scales = RT_KV_SCALES_NONE;
    uint64_t shard_bytes = 5000000000ULL;
    long v;
    double d;
    /* the preset first, so flags override it wherever they appear */
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], "--preset") == 0) {
            size_t k = 0;
            while (k < sizeof presets / sizeof *presets && strcmp(presets[k].name, argv[i + 1]) != 0)
                k++;
            if (k == sizeof presets / sizeof *presets)
                return base_errf(err, "--preset: unknown preset \"%.32s\" (tiny, llama-100m, llama3-1b, llama3-8b)",
                               argv[i + 1]);
            c = presets[k].cfg;
            preset_given = true;
        }
    rt_dtype dt = c.dtype;
    int o, li = 0;
    while ((o = getopt_long(argc, argv, "o:h", opts, &li)) != -1) {
        const char *a = optarg;
        char f[40]; /* the flag, for messages */
        snprintf(f, sizeof f, "--%s", opts[li].name);
        switch (o) {
        case 'o': out = a; break;
        case O_PRESET: break;
        case O_ARCH:
            if (strcmp(a, "llama") == 0) c.arch = RT_ARCH_LLAMA;
            else if (strcmp(a, "mistral") == 0) c.arch = RT_ARCH_MISTRAL;
            else if (strcmp(a, "qwen2") == 0) c.arch = RT_ARCH_QWEN2;
            else return base_errf(err, "--arch: unknown architecture \"%.32s\" (llama, mistral, qwen2)", a);
            c.qkv_bias = c.arch == RT_ARCH_QWEN2;
            break;
        case O_DIM: if (cli_int(f, a, 2, 1 << 16, &v, err)) return -1; c.dim = (int)v; dims_changed = true; break;
        case O_FFN: if (cli_int(f, a, 1, 1 << 18, &v, err)) return -1; c.ffn_dim = (int)v; break;
        case O_LAYERS: if (cli_int(f, a, 1, 1024, &v, err)) return -1; c.n_layers = (int)v; break;
        case O_HEADS: if (cli_int(f, a, 1, 1024, &v, err)) return -1; c.n_heads = (int)v; dims_changed = true; break;
        case O_KV: if (cli_int(f, a, 1, 1024, &v, err)) return -1; c.n_kv_heads = (int)v; break;
        case O_HD: if (cli_int(f, a, 2, RT_MAX_HEAD_DIM, &v, err)) return -1; c.head_dim = (int)v; head_dim_given = true; break;
        case O_VOCAB: if (cli_int(f, a, 1, 1 << 24, &v, err)) return -1; c.vocab_size = (int)v; break;
        case O_MAXPOS: if (cli_int(f, a, 1, 1 << 24, &v, err)) return -1; c.max_pos = (int)v; break;
        case O_THETA: if (cli_float(f, a, 1, 1e12, &d, err)) return -1; c.rope.theta = d; break;
        case O_TIE: c.tie_embeddings = true; break;
        case O_NOTIE: c.tie_embeddings = false; break;
        case O_DTYPE:
            if (strcmp(a, "f32") == 0) dt = RT_F32;
            else if (strcmp(a, "bf16") == 0) dt = RT_BF16;
            else if (strcmp(a, "f16") == 0) dt = RT_F16;
            else return base_errf(err, "--dtype: unknown type \"%.16s\" (f32, bf16, f16)", a);
            break;
        case O_SEED: if (cli_u64(f, a, &seed, err)) return -1; break;
        case O_SHARD: if (cli_size(f, a, &shard_bytes, err)) return -1; break;
        case O_QUANT:
            if (quant_format(a, &quant))
                return base_errf(err, "--quantize: unknown format \"%.16s\" (fp8, fp8-block, awq, gptq4, gptq4-act, gptq8, w4a16, w8a16, w8a8)", a);
            break;
        case O_KV_SCALES:
            if (strcmp(a, "tensor") == 0) kv_scales = RT_KV_SCALES_TENSOR;
            else if (strcmp(a, "attn_head") == 0) kv_scales = RT_KV_SCALES_HEAD;
            else return base_errf(err, "--kv-scales: unknown strategy \"%.16s\" (tensor, attn_head)", a);
            break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return base_errf(err, "unknown or incomplete option (see above)");
        }
    }
    if (optind < argc)
        return base_errf(err, "unexpected argument \"%.64s\"", argv[optind]);
    if (kv_scales != RT_KV_SCALES_NONE && quant.method != RT_QUANT_CT_FP8)
        return base_errf(err, "--kv-scales needs --quantize fp8 (compressed-tensors checkpoints carry KV-cache scales)");
    quant.kv_scales = kv_scales;
    if (!out)
        return base_errf(err, "--out DIR is required");
    if (!head_dim_given && (dims_changed || !preset_given)) {
        if (c.dim % c.n_heads != 0)
            return base_errf(err, "--dim %d is not a multiple of --heads %d: give --head-dim", c.dim, c.n_heads);
        c.head_dim = c.dim / c.n_heads;
    }
    /* a smaller --vocab than the preset's: the usual BOS 1 / EOS 2, or none in a tiny vocabulary */
    if (c.bos_id >= c.vocab_size || (c.n_eos > 0 && c.eos_ids[0] >= c.vocab_size)) {
        c.bos_id = c.vocab_size > 2 ? 1 : -1;
        c.n_eos = c.vocab_size > 2;
        c.eos_ids[0] = 2;
    }
    c.dtype = dt;
    c.quant = quant;
    if (mkdir(out, 0755) != 0 && errno != EEXIST)
        return base_errf(err, "%s: cannot create the folder: %s", out, strerror(errno));

    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", out);
    if (rt_config_write(&c, path, err))
        return -1;
    rt_config back; /* the written config must be one dinfer (and transformers) accepts */
    if (rt_config_load(&back, out, err))
        return -1;

    int max_specs = 3 + 12 * c.n_layers;
    rt_st_spec *ts = calloc((size_t)max_specs, sizeof *ts), *qs = NULL;
    float *sc = calloc((size_t)max_specs, sizeof *sc), *ce = calloc((size_t)max_specs, sizeof *ce);
    int *src = NULL;
    void **packed = NULL;
    if (!ts || !sc || !ce) {
        free(ts), free(sc), free(ce);
        return base_errf(err, "out of memory");
    }
    int n = build_specs(&c, dt, ts, sc, ce);
    double params = 0;
    for (int i = 0; i < n; i++)
        params += (double)rt_st_spec_bytes(&ts[i]) / (double)rt_dtype_size(dt);
    fill_ctx fc = {seed, sc, ce, NULL, NULL};
    double t0 = base_now();
    int rc = 0;
    if (quant.method != RT_QUANT_NONE) {
        const int max_q = RT_QTENSORS_MAX * n;
        qs = calloc((size_t)max_q, sizeof *qs);
        src = calloc((size_t)max_q, sizeof *src);
        packed = calloc((size_t)max_q, sizeof *packed);
        int nq = 0;
        rc = !qs || !src || !packed ? base_errf(err, "out of memory")
                                    : quantize_specs(ts, n, &fc, &quant, qs, src, packed, &nq, err);
        for (int l = 0; rc == 0 && kv_scales != RT_KV_SCALES_NONE && l < c.n_layers; l++) {
            const int per = kv_scales == RT_KV_SCALES_HEAD ? c.n_kv_heads : 1;
            float *sc2 = malloc(2 * (size_t)c.n_kv_heads * sizeof *sc2);
            if (!sc2 || (rc = kv_scale_bounds(ts, n, &fc, &c, l, per > 1, sc2, err))) {
                rc = sc2 ? rc : base_errf(err, "out of memory");
                free(sc2);
                break;
            }
            for (int m = 0; m < 2; m++, nq++) { /* k_scale, v_scale: F32 of shape [per] */
                float *vals = malloc((size_t)per * sizeof *vals);
                if (!vals) {
                    rc = base_errf(err, "out of memory");
                    break;
                }
                memcpy(vals, sc2 + (size_t)m * c.n_kv_heads, (size_t)per * sizeof *vals);
                qs[nq] = (rt_st_spec){.dtype = RT_F32, .n_dims = 1, .shape = {per, 0}};
                snprintf(qs[nq].name, sizeof qs[nq].name, "model.layers.%d.self_attn.%s", l, m ? "v_scale" : "k_scale");
                src[nq] = 0;
                packed[nq] = vals;
            }
            free(sc2);
        }
        fc.src = src;
        fc.packed = packed;
        n = nq;
    }
    const rt_st_spec *written = qs ? qs : ts;
    size_t bytes = 0;
    for (int i = 0; rc == 0 && i < n; i++)
        bytes += rt_st_spec_bytes(&written[i]);
    if (rc == 0)
        rc = rt_st_write_folder(out, written, n, (size_t)shard_bytes, fill_written, &fc, err);
    if (rc == 0) {
        char what[96];
        printf("wrote %s: %s, %.1fM parameters, %s, %s, %.2f GiB in %.1f s\n", out, rt_arch_name(c.arch), params / 1e6,
               rt_dtype_name(dt), rt_quant_describe(&quant, what, sizeof what), (double)bytes / (1 << 30),
               base_now() - t0);
    }
    for (int i = 0; packed && i < n; i++)
        free(packed[i]);
    free(ts), free(sc), free(ce), free(qs), free(src), free(packed);
    return rc;
}

int main(int argc, char **argv)
{
    base_err err = {{0}};
    int rc = run(argc, argv, &err);
    if (rc < 0) {
        fprintf(stderr, "dinfer-mkmodel: %s\n", err.msg);
        return 1;
    }
    return 0;
}
