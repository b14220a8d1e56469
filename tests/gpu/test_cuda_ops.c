/* Every CUDA op against its CPU twin on fresh random inputs and several shapes (odd sizes, long
 * contexts, grouped-query heads, scattered KV blocks, a sliding window), by relative error
 * ||out - ref|| / ||ref||: under 1e-5 in F32, under 1e-2 in BF16 (the inputs are rounded to BF16
 * first, so both sides see the same values). Skips without a GPU. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/backend.h"
#include "runtime/cuda/cuda_device.h"
#include "runtime/sampler.h"

static rt_backend *cpu;
static rt_backend *gpu[2]; /* F32, BF16 */
static const rt_dtype types[2] = {RT_F32, RT_BF16};
static const double tolerance[2] = {1e-5, 1e-2};
static rt_rng rng;

static float *rand_vec(size_t n, rt_dtype round_to)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) {
        v[i] = rt_rng_uniform(&rng) * 2.0f - 1.0f;
        if (round_to == RT_BF16)
            v[i] = rt_bf16_to_f32(rt_f32_to_bf16(v[i]));
    }
    return v;
}

/* A device copy of host fp32 data in the backend's type. */
static void *up(rt_backend *be, const float *h, size_t n)
{
    rt_dtype t = be->ops->act_dtype;
    void *tmp = malloc(n * rt_dtype_size(t));
    rt_convert_from_f32(tmp, h, t, n);
    void *d = be->ops->alloc(be, n * rt_dtype_size(t));
    be->ops->upload(be, d, tmp, n * rt_dtype_size(t));
    free(tmp);
    return d;
}

static void *up_ints(rt_backend *be, const int32_t *h, size_t n)
{
    void *d = be->ops->alloc(be, n * 4);
    be->ops->upload(be, d, h, n * 4);
    return d;
}

static float *down(rt_backend *be, const void *d, size_t n)
{
    rt_dtype t = be->ops->act_dtype;
    void *tmp = malloc(n * rt_dtype_size(t));
    be->ops->download(be, tmp, d, n * rt_dtype_size(t));
    float *h = malloc(n * sizeof *h);
    rt_convert_to_f32(h, tmp, t, n);
    free(tmp);
    return h;
}

static void expect_close(const char *what, const float *got, const float *ref, size_t n, double tol)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            fail_msg("%s: element %zu is %g", what, i, got[i]);
        num += ((double)got[i] - ref[i]) * ((double)got[i] - ref[i]);
        den += (double)ref[i] * ref[i];
    }
    double e = sqrt(num / (den > 0 ? den : 1));
    if (!(e < tol))
        fail_msg("%s: relative error %.3g over %g", what, e, tol);
}

static void test_matmul(void **state)
{
    (void)state;
    int shapes[][3] = {{1, 7, 5}, {3, 64, 33}, {17, 129, 70}, {64, 1024, 512}, {1, 4096, 1000}};
    for (int k = 0; k < 2; k++)
        for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
            int n = shapes[s][0], K = shapes[s][1], N = shapes[s][2];
            float *x = rand_vec((size_t)n * K, types[k]), *w = rand_vec((size_t)N * K, types[k]);
            float *b = rand_vec((size_t)N, types[k]), *ref = malloc((size_t)n * N * sizeof *ref);
            rt_tensor W = {w, RT_F32, N, K}, B = {b, RT_F32, N, 1};
            cpu->ops->matmul(cpu, ref, x, &W, &B, n);
            rt_backend *g = gpu[k];
            rt_tensor dW = {up(g, w, (size_t)N * K), types[k], N, K}, dB = {up(g, b, (size_t)N), types[k], N, 1};
            void *dx = up(g, x, (size_t)n * K), *dout = g->ops->alloc(g, (size_t)n * N * 4);
            g->ops->matmul(g, dout, dx, &dW, &dB, n);
            float *got = down(g, dout, (size_t)n * N);
            char what[64];
            snprintf(what, sizeof what, "matmul %s %dx%dx%d", rt_dtype_name(types[k]), n, K, N);
            expect_close(what, got, ref, (size_t)n * N, tolerance[k]);
            g->ops->free(g, dW.data), g->ops->free(g, dB.data), g->ops->free(g, dx), g->ops->free(g, dout);
            free(x), free(w), free(b), free(ref), free(got);
        }
}

static void test_rows_and_elementwise(void **state)
{
    (void)state;
    int dims[] = {37, 4096};
    for (int k = 0; k < 2; k++)
        for (int di = 0; di < 2; di++) {
            const int n = 5, dim = dims[di];
            rt_backend *g = gpu[k];
            float *x = rand_vec((size_t)n * dim, types[k]), *d = rand_vec((size_t)n * dim, types[k]);
            float *w = rand_vec((size_t)dim, types[k]);
            float *ref = malloc((size_t)n * dim * sizeof *ref), *xr = malloc((size_t)n * dim * sizeof *xr);
            rt_tensor W = {w, RT_F32, dim, 1}, dW = {up(g, w, (size_t)dim), types[k], dim, 1};
            void *dx = up(g, x, (size_t)n * dim), *dd = up(g, d, (size_t)n * dim);
            void *dout = g->ops->alloc(g, (size_t)n * dim * 4);
            char what[64];
            /* rmsnorm */
            cpu->ops->rmsnorm(cpu, ref, x, &W, n, 1e-5f);
            g->ops->rmsnorm(g, dout, dx, &dW, n, 1e-5f);
            float *got = down(g, dout, (size_t)n * dim);
            snprintf(what, sizeof what, "rmsnorm %s dim %d", rt_dtype_name(types[k]), dim);
            expect_close(what, got, ref, (size_t)n * dim, tolerance[k]);
            free(got);
            /* add_rmsnorm: both the updated residual and the norm */
            memcpy(xr, x, (size_t)n * dim * sizeof *xr);
            cpu->ops->add_rmsnorm(cpu, xr, d, ref, &W, n, 1e-5f);
            g->ops->add_rmsnorm(g, dx, dd, dout, &dW, n, 1e-5f);
            got = down(g, dout, (size_t)n * dim);
            snprintf(what, sizeof what, "add_rmsnorm %s dim %d", rt_dtype_name(types[k]), dim);
            expect_close(what, got, ref, (size_t)n * dim, tolerance[k]);
            free(got);
            got = down(g, dx, (size_t)n * dim);
            expect_close("add_rmsnorm residual", got, xr, (size_t)n * dim, tolerance[k]);
            free(got);
            /* silu_mul, add */
            cpu->ops->silu_mul(cpu, ref, x, d, (size_t)n * dim);
            g->ops->free(g, dx);
            dx = up(g, x, (size_t)n * dim);
            g->ops->silu_mul(g, dout, dx, dd, (size_t)n * dim);
            got = down(g, dout, (size_t)n * dim);
            expect_close("silu_mul", got, ref, (size_t)n * dim, tolerance[k]);
            free(got);
            memcpy(ref, x, (size_t)n * dim * sizeof *ref);
            cpu->ops->add(cpu, ref, d, (size_t)n * dim);
            g->ops->add(g, dx, dd, (size_t)n * dim);
            got = down(g, dx, (size_t)n * dim);
            expect_close("add", got, ref, (size_t)n * dim, tolerance[k]);
            free(got);
            /* gather_rows, to_f32 */
            int32_t rows[3] = {4, 0, 2};
            void *drows = up_ints(g, rows, 3);
            cpu->ops->gather_rows(cpu, ref, x, rows, 3, dim);
            g->ops->free(g, dx);
            dx = up(g, x, (size_t)n * dim);
            g->ops->gather_rows(g, dout, dx, drows, 3, dim);
            got = down(g, dout, (size_t)3 * dim);
            expect_close("gather_rows", got, ref, (size_t)3 * dim, tolerance[k]);
            free(got);
            float *d32 = g->ops->alloc(g, (size_t)n * dim * 4), *h32 = malloc((size_t)n * dim * 4);
            g->ops->to_f32(g, d32, dx, (size_t)n * dim);
            g->ops->download(g, h32, d32, (size_t)n * dim * 4);
            expect_close("to_f32", h32, x, (size_t)n * dim, 1e-7);
            /* embedding of a vocabulary shard: rows [10, 20) */
            float *tab = rand_vec((size_t)10 * dim, types[k]);
            rt_tensor T = {tab, RT_F32, 10, dim}, dT = {up(g, tab, (size_t)10 * dim), types[k], 10, dim};
            int32_t toks[5] = {10, 19, 9, 20, 15};
            void *dtoks = up_ints(g, toks, 5);
            cpu->ops->embedding(cpu, ref, &T, 10, toks, 5);
            g->ops->embedding(g, dout, &dT, 10, dtoks, 5);
            got = down(g, dout, (size_t)5 * dim);
            expect_close("embedding", got, ref, (size_t)5 * dim, 1e-7);
            free(got), free(tab), free(h32);
            g->ops->free(g, dT.data), g->ops->free(g, dtoks), g->ops->free(g, d32), g->ops->free(g, drows);
            g->ops->free(g, dx), g->ops->free(g, dd), g->ops->free(g, dout), g->ops->free(g, dW.data);
            free(x), free(d), free(w), free(ref), free(xr);
        }
}

/* RoPE + KV write, then attention, over sequences in scattered blocks: a long prefill and decodes. */
static void check_attention(int k, int nh, int nkv, int hd, int window, const int *lens, const int *news, int n_seqs)
{
    rt_backend *g = gpu[k];
    const int bs = 16;
    int max_blocks = 0, T = 0, total_blocks = 0;
    for (int s = 0; s < n_seqs; s++) {
        int nb = (lens[s] + bs - 1) / bs;
        max_blocks = nb > max_blocks ? nb : max_blocks;
        total_blocks += nb;
        T += news[s];
    }
    /* block ids: a permutation, so every sequence's blocks are scattered */
    int32_t *perm = malloc((size_t)total_blocks * 4), *tables = malloc((size_t)n_seqs * max_blocks * 4);
    for (int i = 0; i < total_blocks; i++)
        perm[i] = i;
    for (int i = total_blocks - 1; i > 0; i--) {
        int j = (int)(rt_rng_next(&rng) % (uint64_t)(i + 1)), t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    for (int s = 0, next = 0; s < n_seqs; s++)
        for (int b = 0; b < max_blocks; b++)
            tables[s * max_blocks + b] = b < (lens[s] + bs - 1) / bs ? perm[next++] : -1;
    /* the step's tokens are the last news[s] positions of each sequence; the earlier positions of
     * each sequence were written by an earlier step of the same ops (run first, below) */
    const int qw = nh * hd, kw = nkv * hd;
    int32_t *pos = malloc((size_t)T * 4), *seq = malloc((size_t)T * 4), *slot = malloc((size_t)T * 4);
    int32_t *ppos = NULL, *pseq = NULL, *pslot = NULL;
    int P = 0;
    for (int s = 0; s < n_seqs; s++)
        P += lens[s] - news[s];
    ppos = malloc((size_t)(P ? P : 1) * 4), pseq = malloc((size_t)(P ? P : 1) * 4), pslot = malloc((size_t)(P ? P : 1) * 4);
    for (int s = 0, t = 0, p = 0; s < n_seqs; s++)
        for (int j = 0; j < lens[s]; j++) {
            int32_t sl = tables[s * max_blocks + j / bs] * bs + j % bs;
            if (j < lens[s] - news[s])
                ppos[p] = j, pseq[p] = s, pslot[p++] = sl;
            else
                pos[t] = j, seq[t] = s, slot[t++] = sl;
        }
    float inv_freq[512];
    for (int i = 0; i < hd / 2; i++)
        inv_freq[i] = (float)pow(10000.0, -2.0 * i / hd);
    size_t cache = (size_t)total_blocks * bs * kw;
    rt_kv_layer ckv = {calloc(cache, 4), calloc(cache, 4)};
    rt_kv_layer gkv = {g->ops->alloc(g, cache * rt_dtype_size(types[k])), g->ops->alloc(g, cache * rt_dtype_size(types[k]))};
    float *dinv = g->ops->alloc(g, sizeof inv_freq);
    g->ops->upload(g, dinv, inv_freq, sizeof inv_freq);
    void *dtab = up_ints(g, tables, (size_t)n_seqs * max_blocks);
    rt_attn_shape sh = {nh, nkv, hd, window, 1.0f / sqrtf((float)hd)};
    for (int phase = 0; phase < 2; phase++) { /* 0: the earlier positions, 1: this step */
        int n = phase ? T : P;
        if (n == 0)
            continue;
        int32_t *hp = phase ? pos : ppos, *hs = phase ? seq : pseq, *hl = phase ? slot : pslot;
        float *q = rand_vec((size_t)n * qw, types[k]), *kk = rand_vec((size_t)n * kw, types[k]);
        float *v = rand_vec((size_t)n * kw, types[k]);
        void *dq = up(g, q, (size_t)n * qw), *dk = up(g, kk, (size_t)n * kw), *dv = up(g, v, (size_t)n * kw);
        rt_attn_batch cb = {n, hp, hl, hs, tables, max_blocks, bs};
        void *dp = up_ints(g, hp, (size_t)n), *ds = up_ints(g, hs, (size_t)n), *dl = up_ints(g, hl, (size_t)n);
        rt_attn_batch gb = {n, dp, dl, ds, dtab, max_blocks, bs};
        cpu->ops->rope_kv_write(cpu, q, kk, v, inv_freq, &cb, &sh, &ckv);
        g->ops->rope_kv_write(g, dq, dk, dv, dinv, &gb, &sh, &gkv);
        float *ref = malloc((size_t)n * qw * sizeof *ref);
        void *dout = g->ops->alloc(g, (size_t)n * qw * 4);
        cpu->ops->attention(cpu, ref, q, &ckv, &cb, &sh);
        g->ops->attention(g, dout, dq, &gkv, &gb, &sh);
        float *got = down(g, dout, (size_t)n * qw), *gq = down(g, dq, (size_t)n * qw);
        char what[96];
        snprintf(what, sizeof what, "attention %s heads %d/%d hd %d window %d phase %d", rt_dtype_name(types[k]),
                 nh, nkv, hd, window, phase);
        expect_close(what, got, ref, (size_t)n * qw, tolerance[k]);
        expect_close("rope on q", gq, q, (size_t)n * qw, tolerance[k]);
        free(got), free(gq), free(ref), free(q), free(kk), free(v);
        g->ops->free(g, dq), g->ops->free(g, dk), g->ops->free(g, dv), g->ops->free(g, dp), g->ops->free(g, ds);
        g->ops->free(g, dl), g->ops->free(g, dout);
    }
    /* the slots this test wrote (the rest of the device pool was never initialized) */
    float *gk = down(g, gkv.k, cache), *gv = down(g, gkv.v, cache);
    for (int s = 0; s < n_seqs; s++)
        for (int j = 0; j < lens[s]; j++) {
            size_t sl = (size_t)(tables[s * max_blocks + j / bs] * bs + j % bs) * (size_t)kw;
            expect_close("KV cache k", gk + sl, (float *)ckv.k + sl, (size_t)kw, tolerance[k]);
            expect_close("KV cache v", gv + sl, (float *)ckv.v + sl, (size_t)kw, tolerance[k]);
        }
    free(gk), free(gv);
    g->ops->free(g, gkv.k), g->ops->free(g, gkv.v), g->ops->free(g, dinv), g->ops->free(g, dtab);
    free(ckv.k), free(ckv.v), free(perm), free(tables), free(pos), free(seq), free(slot), free(ppos), free(pseq),
        free(pslot);
}

static void test_attention(void **state)
{
    (void)state;
    int lens1[3] = {1000, 37, 5}, news1[3] = {200, 1, 5};  /* a long chunked prefill, a decode, a short prompt */
    int lens2[2] = {300, 129}, news2[2] = {1, 1};          /* decodes over long contexts */
    for (int k = 0; k < 2; k++) {
        check_attention(k, 8, 2, 64, 0, lens1, news1, 3);
        check_attention(k, 32, 8, 128, 0, lens2, news2, 2);
        check_attention(k, 6, 3, 6, 0, lens1, news1, 3);   /* odd head size */
        check_attention(k, 4, 4, 16, 50, lens1, news1, 3); /* sliding window */
    }
}

/* A failed CUDA call inside an op is kept on the backend (the first one) and reported by check,
 * naming the call and the rank; nothing exits. */
static void test_sticky_error(void **state)
{
    (void)state;
    base_err err = {{0}};
    rt_backend *be = rt_cuda_backend_create(0, RT_F32, 5, &err);
    assert_non_null(be);
    assert_int_equal(be->ops->check(be, &err), 0);
    be->ops->free(be, (void *)(uintptr_t)0x1234); /* not a device pointer */
    assert_int_equal(be->ops->check(be, &err), -1);
    if (!strstr(err.msg, "rank 5: cudaFree(p) failed at"))
        fail_msg("unexpected message: %s", err.msg);
    assert_int_equal(be->ops->check(be, &err), -1); /* sticky */
    be->ops->destroy(be);
}

int main(void)
{
    if (rt_cuda_device_count() == 0) {
        printf("SKIP: no CUDA device is visible\n");
        return 77;
    }
    base_err err;
    cpu = rt_cpu_backend_create(0);
    for (int k = 0; k < 2; k++)
        if (!(gpu[k] = rt_cuda_backend_create(0, types[k], 0, &err))) {
            fprintf(stderr, "%s\n", err.msg);
            return 1;
        }
    rt_rng_seed(&rng, 2024);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sticky_error),
        cmocka_unit_test(test_matmul),
        cmocka_unit_test(test_rows_and_elementwise),
        cmocka_unit_test(test_attention),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
