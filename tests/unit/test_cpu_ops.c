/* The CPU backend's ops against straightforward double-precision references on random inputs,
 * including odd sizes, grouped-query heads, scattered KV blocks and a sliding window. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/backend.h"
#include "runtime/dtype.h"
#include "runtime/cpu/cpu_math.h"
#include "runtime/cpu/cpu_ops.h"
#include "runtime/sampler.h"

static rt_backend *be;
static rt_rng rng;

static float rnd(void)
{
    return rt_rng_uniform(&rng) * 2.0f - 1.0f;
}

static float *rand_vec(size_t n)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++)
        v[i] = rnd();
    return v;
}

/* ||a - b|| / ||b|| */
static double rel_err(const float *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static void test_matmul(void **state)
{
    (void)state;
    /* row-major weights, then the same weights in the panel layout matmul is given after loading
     * (N below, at and above one panel and one group of panels, and not a multiple of either) */
    int shapes[][3] = {{1, 7, 5}, {3, 64, 33}, {17, 129, 70}, {5, 1, 1}, {1, 64, 8}, {2, 20, 32}, {1, 172, 64},
                       {4, 3, 41}, {1, 64, 512}};
    for (size_t s = 0; s < 2 * sizeof shapes / sizeof *shapes; s++) {
        const size_t si = s % (sizeof shapes / sizeof *shapes);
        const bool packed = s >= sizeof shapes / sizeof *shapes;
        int n = shapes[si][0], K = shapes[si][1], N = shapes[si][2];
        float *x = rand_vec((size_t)n * K), *w = rand_vec((size_t)N * K), *b = rand_vec((size_t)N);
        float *out = malloc((size_t)n * N * sizeof *out);
        double *ref = malloc((size_t)n * N * sizeof *ref);
        rt_tensor W = {.data = w, .dtype = RT_F32, .rows = N, .cols = K}, B = {.data = b, .dtype = RT_F32, .rows = N, .cols = 1};
        if (packed) {
            /* prepare_weight replaces the matrix with its panels (backend memory) */
            float *copy = be->ops->alloc(be, (size_t)N * K * sizeof *copy);
            memcpy(copy, w, (size_t)N * K * sizeof *copy);
            W.data = copy;
            assert_int_equal(be->ops->prepare_weight(be, &W), 0);
            assert_int_equal(W.layout, RT_PANELS8);
        }
        for (int with_bias = 0; with_bias < 2; with_bias++) {
            be->ops->matmul(be, out, x, &W, with_bias ? &B : NULL, n);
            for (int t = 0; t < n; t++)
                for (int o = 0; o < N; o++) {
                    double acc = with_bias ? b[o] : 0;
                    for (int k = 0; k < K; k++)
                        acc += (double)x[t * K + k] * w[o * K + k];
                    ref[t * N + o] = acc;
                }
            if (!(rel_err(out, ref, (size_t)n * N) < 1e-6))
                fail_msg("matmul %d x %d x %d (%s, bias %d): relative error %g", n, K, N, packed ? "panels" : "rows",
                         with_bias, rel_err(out, ref, (size_t)n * N));
        }
        if (packed)
            be->ops->free(be, W.data);
        free(x), free(w), free(b), free(out), free(ref);
    }
}

static void test_norms_embedding_silu(void **state)
{
    (void)state;
    const int n = 5, dim = 37;
    float *x = rand_vec(n * dim), *d = rand_vec(n * dim), *w = rand_vec(dim);
    float out[5 * 37], x2[5 * 37];
    double ref[5 * 37];
    rt_tensor W = {.data = w, .dtype = RT_F32, .rows = dim, .cols = 1};
    be->ops->rmsnorm(be, out, x, &W, n, 1e-5f);
    for (int t = 0; t < n; t++) {
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)x[t * dim + i] * x[t * dim + i];
        for (int i = 0; i < dim; i++)
            ref[t * dim + i] = w[i] * x[t * dim + i] / sqrt(ss / dim + 1e-5);
    }
    assert_true(rel_err(out, ref, n * dim) < 1e-6);

    memcpy(x2, x, sizeof x2);
    be->ops->add_rmsnorm(be, x2, d, out, &W, n, 1e-5f);
    for (int t = 0; t < n; t++) {
        double ss = 0;
        for (int i = 0; i < dim; i++) {
            double v = (double)x[t * dim + i] + d[t * dim + i];
            assert_true(fabs(x2[t * dim + i] - v) < 1e-6);
            ss += v * v;
        }
        for (int i = 0; i < dim; i++)
            ref[t * dim + i] = w[i] * ((double)x[t * dim + i] + d[t * dim + i]) / sqrt(ss / dim + 1e-5);
    }
    assert_true(rel_err(out, ref, n * dim) < 1e-6);

    /* embedding of a vocab shard: rows [10, 20) of a 30-row table */
    float *tab = rand_vec(10 * dim);
    rt_tensor T = {.data = tab, .dtype = RT_F32, .rows = 10, .cols = dim};
    int32_t toks[5] = {10, 19, 9, 20, 15};
    be->ops->embedding(be, out, &T, 10, toks, 5, NULL, NULL);
    for (int t = 0; t < 5; t++)
        for (int i = 0; i < dim; i++) {
            int r = toks[t] - 10;
            float want = r >= 0 && r < 10 ? tab[r * dim + i] : 0.0f;
            assert_true(out[t * dim + i] == want);
        }

    /* silu_mul over fused rows: x as (n, 2 * half) with gate then up in each row */
    const int half = dim / 2;
    be->ops->silu_mul(be, out, x, n, half);
    for (int t = 0; t < n; t++)
        for (int i = 0; i < half; i++) {
            double g = x[t * 2 * half + i], u = x[t * 2 * half + half + i];
            ref[t * half + i] = g / (1 + exp(-g)) * u;
        }
    assert_true(rel_err(out, ref, n * half) < 1e-6);
    free(x), free(d), free(w), free(tab);
}

/* Attention over a paged cache whose blocks are scattered, against a dense reference computed
 * straight from the unrotated inputs: RoPE, the KV write and the attention all together. */
/* long: the second sequence is 150 tokens, several tiles of keys (the online softmax across them,
 * runs of blocks inside each) */
/* fp8: the cache in FP8 codes with a scale a token and head (--kv-dtype fp8): each cached value
 * within half an FP8 step of the reference, the output within a few percent; fixed: under static
 * scales, one a KV head (a checkpoint's kv_cache_scheme), here each head's largest magnitude over
 * the tokens / 448 (k's by its rotation pairs' norms, which bound the rotated values) */
static void check_attention_kv(int n_heads, int n_kv, int hd, int window, bool long_seq, bool fp8, bool fixed)
{
    enum { MAX_T = 13 + 150 };
    const int bs = 4, n_seqs = 2, max_blocks = 38, n_blocks = 64;
    const int lens[2] = {13, long_seq ? 150 : 22}; /* prefill of both sequences in one step */
    const int T = lens[0] + lens[1];
    const int qw = n_heads * hd, kw = n_kv * hd;
    /* blocks scattered over the pool: a fixed permutation of [0, 64) */
    int32_t tables[2 * 38];
    for (int k = 0, next = 0; k < n_seqs; k++)
        for (int j = 0; j < max_blocks; j++)
            tables[k * max_blocks + j] = j < (lens[k] + bs - 1) / bs ? (int32_t)((next++ * 37 + 11) % n_blocks) : -1;
    int32_t pos[MAX_T], seq[MAX_T], slot[MAX_T];
    for (int t = 0, k = 0; k < n_seqs; k++)
        for (int p = 0; p < lens[k]; p++, t++) {
            pos[t] = p;
            seq[t] = k;
            slot[t] = tables[k * max_blocks + p / bs] * bs + p % bs;
        }
    float *q = rand_vec((size_t)T * qw), *k = rand_vec((size_t)T * kw), *v = rand_vec((size_t)T * kw);
    float *q0 = malloc((size_t)T * qw * sizeof *q0), *k0 = malloc((size_t)T * kw * sizeof *k0);
    memcpy(q0, q, (size_t)T * qw * sizeof *q);
    memcpy(k0, k, (size_t)T * kw * sizeof *k);
    float inv_freq[64];
    for (int i = 0; i < hd / 2; i++)
        inv_freq[i] = (float)pow(10000.0, -2.0 * i / hd);
    rt_kv_layer kv = {.k = calloc((size_t)n_blocks * bs * kw, 4), .v = calloc((size_t)n_blocks * bs * kw, 4)};
    if (fp8) {
        const size_t n_scales = fixed ? (size_t)n_kv : (size_t)n_blocks * bs * n_kv;
        kv.k_scale = calloc(n_scales, sizeof(float));
        kv.v_scale = calloc(n_scales, sizeof(float));
        kv.scale_stride = fixed ? 0 : n_kv;
        for (int t = 0; fixed && t < T; t++)
            for (int i = 0; i < kw; i++) {
                const int h = i / hd, j = i % hd, pair = j < hd / 2 ? i + hd / 2 : i - hd / 2;
                const float kn = sqrtf(k[t * kw + i] * k[t * kw + i] + k[t * kw + pair] * k[t * kw + pair]);
                kv.k_scale[h] = fmaxf(kv.k_scale[h], kn / 448.0f);
                kv.v_scale[h] = fmaxf(kv.v_scale[h], fabsf(v[t * kw + i]) / 448.0f);
            }
    }
    rt_attn_batch b = {.n_tokens = T, .pos = pos, .slot = slot, .seq = seq, .block_tables = tables,
                       .max_blocks = max_blocks, .block_size = bs};
    rt_attn_shape s = {n_heads, n_kv, hd, window, 1.0f / sqrtf((float)hd)};
    float *qkv = malloc((size_t)T * (qw + 2 * kw) * sizeof *qkv); /* the fused product's rows: q, k, v */
    for (int t = 0; t < T; t++) {
        memcpy(qkv + (size_t)t * (qw + 2 * kw), q + (size_t)t * qw, (size_t)qw * sizeof *q);
        memcpy(qkv + (size_t)t * (qw + 2 * kw) + qw, k + (size_t)t * kw, (size_t)kw * sizeof *k);
        memcpy(qkv + (size_t)t * (qw + 2 * kw) + qw + kw, v + (size_t)t * kw, (size_t)kw * sizeof *v);
    }
    be->ops->rope_kv_write(be, q, qkv, inv_freq, &b, &s, &kv);
    free(qkv);
    float *out = malloc((size_t)T * qw * sizeof *out);
    be->ops->attention(be, out, q, &kv, &b, &s);

    /* reference: rotate in double, then dense causal softmax attention per sequence */
    double *qr = malloc((size_t)T * qw * sizeof *qr), *kr = malloc((size_t)T * kw * sizeof *kr);
    double *ref = malloc((size_t)T * qw * sizeof *ref);
    for (int t = 0; t < T; t++) {
        for (int h = 0; h < n_heads + n_kv; h++) {
            const float *src = h < n_heads ? q0 + t * qw + h * hd : k0 + t * kw + (h - n_heads) * hd;
            double *dst = h < n_heads ? qr + t * qw + h * hd : kr + t * kw + (h - n_heads) * hd;
            for (int i = 0; i < hd / 2; i++) {
                double ang = pos[t] * (double)inv_freq[i];
                dst[i] = src[i] * cos(ang) - src[i + hd / 2] * sin(ang);
                dst[i + hd / 2] = src[i + hd / 2] * cos(ang) + src[i] * sin(ang);
            }
        }
    }
    for (int t = 0; t < T; t++) {
        int first = t - pos[t]; /* this sequence's first token row */
        for (int h = 0; h < n_heads; h++) {
            int g = h / (n_heads / n_kv);
            double sc[MAX_T], mx = -1e300, sum = 0;
            int lo = window > 0 && pos[t] - window + 1 > 0 ? pos[t] - window + 1 : 0;
            for (int j = lo; j <= pos[t]; j++) {
                double d = 0;
                for (int i = 0; i < hd; i++)
                    d += qr[t * qw + h * hd + i] * kr[(first + j) * kw + g * hd + i];
                sc[j] = d / sqrt((double)hd);
                mx = sc[j] > mx ? sc[j] : mx;
            }
            for (int j = lo; j <= pos[t]; j++)
                sum += (sc[j] = exp(sc[j] - mx));
            for (int i = 0; i < hd; i++) {
                double acc = 0;
                for (int j = lo; j <= pos[t]; j++)
                    acc += sc[j] / sum * v[(first + j) * kw + g * hd + i];
                ref[t * qw + h * hd + i] = acc;
            }
        }
    }
    double e = rel_err(out, ref, (size_t)T * qw);
    if (!(e < (fp8 ? 0.05 : 1e-5)))
        fail_msg("attention heads %d/%d hd %d window %d (%d tokens)%s: relative error %g", n_heads, n_kv, hd, window, T,
                 fp8 ? fixed ? ", FP8 cache, static scales" : ", FP8 cache" : "", e);
    /* the cache holds the rotated k and the plain v at each token's slot */
    for (int t = 0; t < T; t++)
        for (int i = 0; i < kw; i++) {
            if (fp8) {
                const int64_t si = (int64_t)slot[t] * kv.scale_stride + i / hd;
                const double kd = rt_fp8_to_f32(((uint8_t *)kv.k)[slot[t] * kw + i]) * kv.k_scale[si];
                const double vd = rt_fp8_to_f32(((uint8_t *)kv.v)[slot[t] * kw + i]) * kv.v_scale[si];
                const double kb = fmax(fabs(kr[t * kw + i]) / 16, kv.k_scale[si] / 1024) * 1.001 + 1e-6;
                const double vb = fmax(fabs(v[t * kw + i]) / 16, kv.v_scale[si] / 1024) * 1.001;
                if (!(fabs(kd - kr[t * kw + i]) <= kb && fabs(vd - v[t * kw + i]) <= vb))
                    fail_msg("FP8 cache, token %d element %d: k %g for %g, v %g for %g", t, i, kd, kr[t * kw + i], vd,
                             (double)v[t * kw + i]);
            } else {
                assert_true(fabs(((float *)kv.k)[slot[t] * kw + i] - kr[t * kw + i]) < 1e-5);
                assert_true(((float *)kv.v)[slot[t] * kw + i] == v[t * kw + i]);
            }
        }
    free(q), free(k), free(v), free(q0), free(k0), free(kv.k), free(kv.v), free(out), free(qr), free(kr), free(ref);
    free(kv.k_scale), free(kv.v_scale);
}

static void check_attention(int n_heads, int n_kv, int hd, int window, bool long_seq)
{
    check_attention_kv(n_heads, n_kv, hd, window, long_seq, false, false);
}

static void test_attention(void **state)
{
    (void)state;
    check_attention(4, 4, 8, 0, false);  /* MHA */
    check_attention(8, 2, 16, 0, false); /* GQA */
    check_attention(6, 3, 6, 5, false);  /* odd head size, sliding window */
    check_attention(2, 1, 64, 0, false);
    /* several tiles of keys: the transposed small-head path, the wide one, a window across tiles */
    check_attention(4, 2, 8, 0, true);
    check_attention(4, 1, 32, 70, true);
    check_attention(2, 2, 64, 0, true);
    check_attention(3, 3, 10, 0, true);
    /* an FP8 cache: the small-head (transposed) path, the wide one, GQA, a window across tiles */
    check_attention_kv(4, 2, 8, 0, true, true, false);
    check_attention_kv(8, 2, 64, 0, true, true, false);
    check_attention_kv(4, 1, 32, 70, true, true, false);
    check_attention_kv(6, 3, 6, 5, false, true, false);
    /* the same under static scales, one a KV head */
    check_attention_kv(4, 2, 8, 0, true, true, true);
    check_attention_kv(8, 2, 64, 0, true, true, true);
    check_attention_kv(6, 3, 6, 5, false, true, true);
}

static void test_gather_rows(void **state)
{
    (void)state;
    float x[4 * 3] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, out[6];
    int32_t rows[2] = {3, 1};
    be->ops->gather_rows(be, out, x, rows, 2, 3);
    float want[6] = {9, 10, 11, 3, 4, 5};
    assert_memory_equal(out, want, sizeof want);
}

/* The kernels' vectorizable exponential against libm's, on a dense grid of its whole range. */
/* The prompt runs of a step as attention tiles: runs of one sequence at consecutive positions, cut
 * at RT_ATTN_TILE tokens; shorter runs, a position gap or a new sequence leave tokens to the rest. */
static void test_attn_tiles(void **state)
{
    (void)state;
    int32_t pos[200], seq[200], tiles[2 * (200 / RT_ATTN_RUN_MIN)], rest[200];
    int n = 0;
    for (int j = 0; j < 100; j++) /* a 100-token chunk: tiles of 64 and 36 */
        pos[n] = j, seq[n++] = 0;
    pos[n] = 7, seq[n++] = 1; /* a decode */
    for (int j = 0; j < RT_ATTN_RUN_MIN - 1; j++) /* one token short of a tile */
        pos[n] = 40 + j, seq[n++] = 2;
    for (int j = 0; j < RT_ATTN_RUN_MIN; j++) /* just a tile */
        pos[n] = 300 + j, seq[n++] = 3;
    pos[n] = 400, seq[n++] = 3; /* the same sequence after a gap */
    int n_rest = -1, n_tiles = rt_attn_tiles(pos, seq, n, tiles, rest, &n_rest);
    assert_int_equal(n_tiles, 3);
    const int32_t want[] = {0, 64, 64, 36, 116, RT_ATTN_RUN_MIN};
    assert_memory_equal(tiles, want, sizeof want);
    assert_int_equal(n_rest, 1 + RT_ATTN_RUN_MIN - 1 + 1);
    assert_int_equal(rest[0], 100);
    assert_int_equal(rest[1], 101);
    assert_int_equal(rest[n_rest - 1], n - 1);
    /* decodes only: no tile */
    for (int j = 0; j < 8; j++)
        pos[j] = 10 * j, seq[j] = j;
    assert_int_equal(rt_attn_tiles(pos, seq, 8, tiles, rest, &n_rest), 0);
    assert_int_equal(n_rest, 8);
}

/* The CPU kernels' FP8 conversion (by bits, for vector loops) gives rt_fp8_to_f32's value for every
 * code: zeros of both signs, the subnormal codes, the largest (448), NaN. */
static void test_fp8_by_bits(void **state)
{
    (void)state;
    for (uint32_t b = 0; b < 256; b++) {
        const float want = rt_fp8_to_f32((uint8_t)b), got = cpu_fp8(b);
        if (isnan(want) ? !isnan(got) : memcmp(&want, &got, sizeof got) != 0)
            fail_msg("code 0x%02x: %g by bits, %g by rt_fp8_to_f32", b, got, want);
    }
    assert_true(cpu_fp8(0x7E) == 448.0f && cpu_fp8(0x01) == 0x1p-9f && signbit(cpu_fp8(0x80)));
}

static void test_expf(void **state)
{
    (void)state;
    double worst = 0;
    float at = 0;
    for (float x = -87.3f; x <= 88.0f; x += 1.0f / 1024) {
        double want = exp((double)x), got = cpu_expf(x), e = fabs(got - want) / want;
        if (e > worst)
            worst = e, at = x;
    }
    if (!(worst < 4 * 0x1p-24)) /* a few ulp */
        fail_msg("cpu_expf: relative error %.3g at %g", worst, (double)at);
    assert_true(cpu_expf(-INFINITY) == 0.0f);
    assert_true(cpu_expf(-1000.0f) == 0.0f);
    assert_true(isinf(cpu_expf(1000.0f)));
    assert_true(cpu_expf(0.0f) == 1.0f);
}

int main(void)
{
    be = rt_cpu_backend_create(0);
    rt_rng_seed(&rng, 42);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_norms_embedding_silu),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_gather_rows),
        cmocka_unit_test(test_attn_tiles),
        cmocka_unit_test(test_expf),
        cmocka_unit_test(test_fp8_by_bits),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    be->ops->destroy(be);
    return rc;
}
