/* Quantized weights: FP8 e4m3 conversions, --quantize's round-to-nearest within its error bound
 * and independent of the split, the golden fixtures' quantization_config read as written, and every
 * format's reader giving the same values for a slice as for the whole matrix. (The fixtures' models
 * against transformers: the golden.quant_* tests.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/backend.h"
#include "runtime/dtype.h"
#include "runtime/model.h"
#include "runtime/quant.h"

#define FIXTURES DINFER_SOURCE_DIR "/tests/golden/fixtures/"

static void test_fp8(void **state)
{
    (void)state;
    assert_true(rt_fp8_to_f32(0x38) == 1.0f);
    assert_true(rt_fp8_to_f32(0x7e) == 448.0f);
    assert_true(rt_fp8_to_f32(0xfe) == -448.0f);
    assert_true(rt_fp8_to_f32(0x01) == ldexpf(1, -9)); /* the smallest subnormal */
    assert_true(rt_fp8_to_f32(0x08) == ldexpf(1, -6)); /* the smallest normal */
    assert_true(isnan(rt_fp8_to_f32(0x7f)) && isnan(rt_fp8_to_f32(0xff)));
    for (int c = 0; c < 256; c++) /* every number is its own code */
        if ((c & 0x7f) != 0x7f)
            assert_int_equal(rt_f32_to_fp8(rt_fp8_to_f32((uint8_t)c)), c);
    /* halfway between two codes: the even one */
    assert_int_equal(rt_f32_to_fp8(1.0625f), 0x38);
    assert_int_equal(rt_f32_to_fp8(1.1875f), 0x3a);
    assert_int_equal(rt_f32_to_fp8(-1.0625f), 0xb8);
    assert_int_equal(rt_f32_to_fp8(1.07f), 0x39);
    assert_int_equal(rt_f32_to_fp8(1000.0f), 0x7e); /* saturates */
    assert_int_equal(rt_f32_to_fp8(-1e30f), 0xfe);
    assert_int_equal(rt_f32_to_fp8(ldexpf(1, -11)), 0x00); /* below half the smallest subnormal */
    assert_int_equal(rt_f32_to_fp8(NAN), 0x7f);
}

/* The nearest e4m3 code by search over the finite magnitudes in order (ties to the even code):
 * the reference rt_f32_to_fp8's bit arithmetic is checked against. */
static uint8_t fp8_by_search(float f)
{
    if (isnan(f))
        return 0x7f;
    const uint8_t sign = signbit(f) ? 0x80 : 0;
    const float a = fabsf(f);
    if (a >= 448.0f)
        return sign | 0x7e;
    int lo = 0, hi = 0x7e;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (rt_fp8_to_f32((uint8_t)mid) <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    const float below = rt_fp8_to_f32((uint8_t)lo), above = rt_fp8_to_f32((uint8_t)(lo + 1));
    const bool up = a - below > above - a || (a - below == above - a && (lo & 1));
    return sign | (uint8_t)(lo + up);
}

/* rt_f32_to_fp8 against the search: every 2^12th float of either sign (zero, subnormals, normals,
 * the saturating ones, infinities), and around every code: the code, a float either side of it,
 * the midpoint to the next code and a float either side of that (the ties and the cases next to
 * them). */
static void test_fp8_rounding(void **state)
{
    (void)state;
    for (uint64_t u = 0; u < (1ull << 32); u += 1u << 12) {
        float f;
        const uint32_t b = (uint32_t)u;
        memcpy(&f, &b, sizeof f);
        if (rt_f32_to_fp8(f) != fp8_by_search(f))
            fail_msg("bits 0x%08x (%g): 0x%02x, the search 0x%02x", b, f, rt_f32_to_fp8(f), fp8_by_search(f));
    }
    for (int c = 0; c < 0x7e; c++) {
        const float v = rt_fp8_to_f32((uint8_t)c), mid = (v + rt_fp8_to_f32((uint8_t)(c + 1))) / 2;
        const float probes[] = {v, nextafterf(v, -1.0f), nextafterf(v, 1000.0f), mid, nextafterf(mid, 0.0f),
                                nextafterf(mid, 1000.0f)};
        for (size_t i = 0; i < sizeof probes / sizeof *probes; i++)
            for (int neg = 0; neg < 2; neg++) {
                const float f = neg ? -probes[i] : probes[i];
                if (rt_f32_to_fp8(f) != fp8_by_search(f))
                    fail_msg("%a (near code 0x%02x): 0x%02x, the search 0x%02x", f, c, rt_f32_to_fp8(f), fp8_by_search(f));
            }
    }
}

static float *random_matrix(int64_t rows, int64_t cols, unsigned seed)
{
    float *w = malloc((size_t)(rows * cols) * sizeof *w);
    uint64_t s = seed * 0x9e3779b97f4a7c15ULL + 1;
    for (int64_t i = 0; i < rows * cols; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        w[i] = ((float)(s >> 40) * 0x1p-24f * 2 - 1) * (1 + (float)(i % 7)); /* rows of varied range */
    }
    return w;
}

/* FP8 with a scale a 128 x 128 block (transformers' fp8, as dinfer-mkmodel writes it) and one a
 * tensor: every row holds its block's scale, the block's largest magnitude over 448 (the last block
 * of rows and of columns partial), and each value within FP8's step of it. */
static void test_quantize_blocks(void **state)
{
    (void)state;
    const int64_t rows = 300, cols = 300;
    float *w = random_matrix(rows, cols, 5), *deq = malloc((size_t)(rows * cols) * sizeof *deq);
    const rt_quant modes[] = {
        {.method = RT_QUANT_FP8, .kind = RT_QK_FP8, .scale = RT_QSCALE_BLOCK, .bits = 8, .block_rows = 128,
         .block_cols = 128},
        {.method = RT_QUANT_CT_FP8, .kind = RT_QK_FP8, .scale = RT_QSCALE_TENSOR, .bits = 8},
    };
    for (int mi = 0; mi < 2; mi++) {
        const rt_quant *q = &modes[mi];
        const int64_t br = q->scale == RT_QSCALE_BLOCK ? 128 : rows, bc = q->scale == RT_QSCALE_BLOCK ? 128 : cols;
        rt_qmat m;
        base_err err;
        assert_int_equal(rt_qmat_quantize(&m, q, w, rows, cols, 0, cols, "w", &err), 0);
        assert_int_equal(m.n_groups, (cols + bc - 1) / bc);
        rt_qmat_dequantize(&m, deq);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < m.n_groups; j++) {
                float amax = 0;
                for (int64_t rr = r / br * br; rr < rows && rr < r / br * br + br; rr++)
                    for (int64_t c = j * bc; c < cols && c < j * bc + bc; c++)
                        amax = fmaxf(amax, fabsf(w[rr * cols + c]));
                const float scale = m.scales[r * m.n_groups + j];
                if (scale != amax / 448.0f)
                    fail_msg("mode %d: row %lld, block column %lld: scale %g, expected %g", mi, (long long)r,
                             (long long)j, scale, amax / 448.0f);
                for (int64_t c = j * bc; c < cols && c < j * bc + bc; c++) {
                    const float x = w[r * cols + c];
                    const float bound = fmaxf(fabsf(x), ldexpf(1, -6) * scale) / 16 * 1.0001f;
                    if (!(fabsf(deq[r * cols + c] - x) <= bound))
                        fail_msg("mode %d: w[%lld][%lld] = %g became %g (bound %g)", mi, (long long)r, (long long)c,
                                 x, deq[r * cols + c], bound);
                }
            }
        rt_qmat_free(&m);
    }
    free(w);
    free(deq);
}

/* Each --quantize mode within half a step of its grid, a slice equal to the whole's columns. */
static void test_quantize(void **state)
{
    (void)state;
    const char *modes[] = {"fp8", "int8", "int4"};
    const int64_t rows = 9, cols = 300; /* the last group of 128 holds 44 columns */
    float *w = random_matrix(rows, cols, 3);
    float *deq = malloc((size_t)(rows * cols) * sizeof *deq), *part = malloc((size_t)(rows * cols) * sizeof *part);
    for (int mi = 0; mi < 3; mi++) {
        rt_quant q;
        assert_int_equal(rt_quant_for_load(&q, modes[mi]), 0);
        rt_qmat m, s;
        base_err err;
        assert_int_equal(rt_qmat_quantize(&m, &q, w, rows, cols, 0, cols, "w", &err), 0);
        rt_qmat_dequantize(&m, deq);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                const float x = w[r * cols + c], scale = m.scales[r * m.n_groups + c / m.group];
                /* FP8: 3 mantissa bits, so within 1/16 of the value (or of the smallest normal) */
                const float bound = q.kind == RT_QK_FP8 ? fmaxf(fabsf(x), ldexpf(1, -6) * scale) / 16 * 1.0001f
                                                        : scale * 0.5001f;
                if (!(fabsf(deq[r * cols + c] - x) <= bound))
                    fail_msg("%s: w[%lld][%lld] = %g became %g (bound %g)", modes[mi], (long long)r, (long long)c, x,
                             deq[r * cols + c], bound);
            }
        /* a slice from column 128 (a group boundary): the same codes, scales and values */
        assert_int_equal(rt_qmat_quantize(&s, &q, w, rows, cols, 128, cols, "w", &err), 0);
        rt_qmat_dequantize(&s, part);
        for (int64_t r = 0; r < rows; r++)
            assert_memory_equal(part + r * (cols - 128), deq + r * cols + 128, (size_t)(cols - 128) * sizeof(float));
        rt_qmat_free(&s);
        /* a slice inside a group: per-row modes take it, int4 refuses naming the group */
        int rc = rt_qmat_quantize(&s, &q, w, rows, cols, 100, cols, "w", &err);
        if (q.scale == RT_QSCALE_GROUP) {
            assert_int_equal(rc, -1);
            assert_non_null(strstr(err.msg, "cuts a group of 128"));
        } else {
            assert_int_equal(rc, 0);
            rt_qmat_dequantize(&s, part);
            for (int64_t r = 0; r < rows; r++)
                assert_memory_equal(part + r * (cols - 100), deq + r * cols + 100, (size_t)(cols - 100) * sizeof(float));
            rt_qmat_free(&s);
        }
        rt_qmat_free(&m);
    }
    free(w);
    free(deq);
    free(part);
}

static void test_fixture_configs(void **state)
{
    (void)state;
    static const struct {
        const char *dir;
        rt_quant_method method;
        rt_quant_scale scale;
        int bits, group, block;
    } cases[] = {
        {"quant_fp8_tensor", RT_QUANT_CT_FP8, RT_QSCALE_TENSOR, 8, 0, 0},
        {"quant_fp8_channel", RT_QUANT_CT_FP8, RT_QSCALE_CHANNEL, 8, 0, 0},
        {"quant_fp8_block", RT_QUANT_FP8, RT_QSCALE_BLOCK, 8, 0, 128},
        {"quant_awq", RT_QUANT_AWQ, RT_QSCALE_GROUP, 4, 64, 0},
        {"quant_gptq4", RT_QUANT_GPTQ, RT_QSCALE_GROUP, 4, 32, 0},
        {"quant_gptq8", RT_QUANT_GPTQ, RT_QSCALE_CHANNEL, 8, 0, 0},
        {"quant_gptq4_act", RT_QUANT_GPTQ, RT_QSCALE_GROUP, 4, 32, 0},
        {"quant_ct_w4a16", RT_QUANT_CT_INT, RT_QSCALE_GROUP, 4, 32, 0},
        {"quant_ct_w8a16", RT_QUANT_CT_INT, RT_QSCALE_CHANNEL, 8, 0, 0},
        {"quant_ct_w4a16_act", RT_QUANT_CT_INT, RT_QSCALE_GROUP, 4, 32, 0},
        {"quant_ct_w8a8", RT_QUANT_CT_INT, RT_QSCALE_GROUP, 8, 32, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rt_config c;
        base_err err;
        char dir[512];
        snprintf(dir, sizeof dir, FIXTURES "%s", cases[i].dir);
        if (rt_config_load(&c, dir, &err))
            fail_msg("%s: %s", dir, err.msg);
        assert_int_equal(c.quant.method, cases[i].method);
        assert_int_equal(c.quant.scale, cases[i].scale);
        assert_int_equal(c.quant.bits, cases[i].bits);
        assert_int_equal(c.quant.group_size, cases[i].group);
        assert_int_equal(c.quant.block_rows, cases[i].block);
        assert_int_equal(c.quant.block_cols, cases[i].block);
        assert_int_equal(c.quant.gptq_v1, cases[i].method == RT_QUANT_GPTQ);
        assert_int_equal(c.quant.act_order, strstr(cases[i].dir, "_act") != NULL);
    }
}

/* Every reader: a slice (rows and columns at the boundaries a split makes) is the whole matrix's
 * block, code for code and value for value. */
static void test_read_slices(void **state)
{
    (void)state;
    static const char *const dirs[] = {"quant_fp8_tensor", "quant_fp8_channel", "quant_fp8_block",
                                       "quant_awq", "quant_gptq4", "quant_gptq8", "quant_gptq4_act",
                                       "quant_ct_w4a16", "quant_ct_w8a16", "quant_ct_w4a16_act", "quant_ct_w8a8"};
    static const char *const modules[] = {"model.layers.1.self_attn.o_proj", "model.layers.2.mlp.down_proj",
                                          "model.layers.0.mlp.gate_proj"};
    for (size_t d = 0; d < sizeof dirs / sizeof *dirs; d++) {
        char dir[512];
        snprintf(dir, sizeof dir, FIXTURES "%s", dirs[d]);
        rt_config c;
        rt_ckpt ck;
        base_err err;
        assert_int_equal(rt_config_load(&c, dir, &err), 0);
        assert_int_equal(rt_ckpt_open(&ck, dir, &err), 0);
        for (size_t k = 0; k < sizeof modules / sizeof *modules; k++) {
            assert_true(rt_quant_stored(&ck, &c.quant, modules[k]));
            const bool down = strstr(modules[k], "down") != NULL, gate = strstr(modules[k], "gate") != NULL;
            const int64_t rows = gate ? c.ffn_dim : c.dim, cols = down ? c.ffn_dim : c.dim;
            rt_qmat whole, part;
            size_t bytes = 0;
            assert_int_equal(rt_qmat_read(&whole, &ck, &c.quant, modules[k], rows, cols, 0, rows, 0, cols, &bytes, &err), 0);
            assert_true(bytes > (size_t)(rows * cols) / 2);
            /* the second half of the rows and of the columns, as tp = 2 splits them */
            const int64_t r0 = rows / 2,
                          c0 = c.quant.scale != RT_QSCALE_BLOCK ? cols / 2 : cols > 128 ? 128 : 0;
            if (rt_qmat_read(&part, &ck, &c.quant, modules[k], rows, cols, r0, rows, c0, cols, NULL, &err))
                fail_msg("%s %s: %s", dirs[d], modules[k], err.msg);
            float *wv = malloc((size_t)(rows * cols) * sizeof *wv), *pv = malloc((size_t)(rows * cols) * sizeof *pv);
            rt_qmat_dequantize(&whole, wv);
            rt_qmat_dequantize(&part, pv);
            for (int64_t r = r0; r < rows; r++) {
                assert_memory_equal(part.codes + (r - r0) * part.cols, whole.codes + r * cols + c0, (size_t)(cols - c0));
                assert_memory_equal(pv + (r - r0) * part.cols, wv + r * cols + c0, (size_t)(cols - c0) * sizeof(float));
            }
            free(wv);
            free(pv);
            rt_qmat_free(&whole);
            rt_qmat_free(&part);
        }
        assert_false(rt_quant_stored(&ck, &c.quant, "lm_head")); /* left float by every fixture */
        rt_ckpt_close(&ck);
    }
}

/* An act-order weight (quant_gptq4_act: g_idx scattered) put back in runs of whole groups: each
 * column c now holds old column perm[c], with the same values, and groups of 32 in order; a slice
 * holding part of some groups (the second half of down_proj's inputs, as --tp 2 cuts them) cannot
 * be, and stays as it was. */
static void test_act_order(void **state)
{
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, FIXTURES "quant_gptq4_act");
    rt_config c;
    rt_ckpt ck;
    base_err err;
    assert_int_equal(rt_config_load(&c, dir, &err), 0);
    assert_int_equal(rt_ckpt_open(&ck, dir, &err), 0);
    const int64_t rows = c.dim, cols = c.ffn_dim;
    const char *mod = "model.layers.1.mlp.down_proj";
    rt_qmat m;
    assert_int_equal(rt_qmat_read(&m, &ck, &c.quant, mod, rows, cols, 0, rows, 0, cols, NULL, &err), 0);
    assert_non_null(m.gidx);
    bool scattered = false;
    for (int64_t i = 0; i < cols; i++)
        scattered = scattered || m.gidx[i] != (int32_t)(i / m.group);
    assert_true(scattered);
    int32_t *gidx = malloc((size_t)cols * sizeof *gidx), *perm = malloc((size_t)cols * sizeof *perm);
    float *before = malloc((size_t)(rows * cols) * sizeof *before), *after = malloc((size_t)(rows * cols) * sizeof *after);
    memcpy(gidx, m.gidx, (size_t)cols * sizeof *gidx);
    rt_qmat_dequantize(&m, before);
    assert_int_equal(rt_qmat_order(&m, perm, &err), 0);
    assert_null(m.gidx);
    assert_int_equal(m.n_groups, cols / m.group);
    rt_qmat_dequantize(&m, after);
    for (int64_t c2 = 0; c2 < cols; c2++) {
        assert_int_equal(gidx[perm[c2]], c2 / m.group); /* runs of whole groups, in order */
        for (int64_t r = 0; r < rows; r++)
            assert_true(after[r * cols + c2] == before[r * cols + perm[c2]]);
    }
    rt_qmat_free(&m);
    /* the second half of the inputs: some groups in part */
    assert_int_equal(rt_qmat_read(&m, &ck, &c.quant, mod, rows, cols, 0, rows, cols / 2, cols, NULL, &err), 0);
    assert_non_null(m.gidx);
    assert_int_equal(rt_qmat_order(&m, perm, &err), 1);
    assert_non_null(m.gidx);
    rt_qmat_free(&m);
    free(gidx), free(perm), free(before), free(after);
    rt_ckpt_close(&ck);
}

/* The CPU backend's matmul on codes (rt_tensor_quant) against the same product over the dequantized
 * floats: FP8 a scale a row, int8, int4 in groups (the last group short, odd rows, a bias), for 1,
 * 3 and 37 tokens. */
static void test_cpu_matmul_codes(void **state)
{
    (void)state;
    const char *modes[] = {"fp8", "int8", "int4"};
    const int64_t N = 45, K = 300;
    rt_backend *be = rt_cpu_backend_create(2);
    float *w = random_matrix(N, K, 5), *x = random_matrix(37, K, 6), *deq = malloc(sizeof(float) * N * K);
    float bias[45], got[37 * 45], want[37 * 45];
    for (int i = 0; i < N; i++)
        bias[i] = 0.1f * (float)(i % 5);
    for (int mi = 0; mi < 3; mi++) {
        rt_quant q;
        rt_qmat m;
        base_err err;
        assert_int_equal(rt_quant_for_load(&q, modes[mi]), 0);
        assert_int_equal(rt_qmat_quantize(&m, &q, w, N, K, 0, K, "w", &err), 0);
        rt_qmat_dequantize(&m, deq);
        const int64_t row_bytes = m.bits == 4 ? K / 2 : K;
        uint8_t *codes = malloc((size_t)(N * row_bytes));
        for (int64_t r = 0; r < N; r++)
            for (int64_t c = 0; c < K; c++) {
                if (m.bits == 4) /* the even column in the low nibble */
                    codes[r * row_bytes + c / 2] = (uint8_t)(c % 2 ? codes[r * row_bytes + c / 2] | m.codes[r * K + c] << 4
                                                                    : m.codes[r * K + c]);
                else
                    codes[r * K + c] = m.codes[r * K + c];
            }
        rt_tensor W = {.data = codes, .rows = N, .cols = K,
                       .q = {.kind = m.kind, .bits = m.bits, .group = m.group, .n_groups = m.n_groups,
                             .scales = m.scales, .zeros = m.zeros}};
        rt_tensor F = {.data = deq, .dtype = RT_F32, .rows = N, .cols = K}, B = {.data = bias, .rows = N, .cols = 1};
        const int ns[] = {1, 3, 37};
        for (int k = 0; k < 3; k++) {
            be->ops->matmul(be, got, x, &W, &B, ns[k]);
            be->ops->matmul(be, want, x, &F, &B, ns[k]);
            for (int i = 0; i < ns[k] * N; i++)
                if (!(fabsf(got[i] - want[i]) <= 1e-4f * (1 + fabsf(want[i]))))
                    fail_msg("%s, %d tokens: out[%d] = %g on codes, %g on floats", modes[mi], ns[k], i, got[i], want[i]);
        }
        free(codes);
        rt_qmat_free(&m);
    }
    free(w), free(x), free(deq);
    be->ops->destroy(be);
}

/* The CPU backend holds a quantized checkpoint's linear layers as codes: the fixtures' models in
 * less memory than their float size, by about what their codes and scales save, and the memory
 * plan counts exactly that. */
static void test_cpu_holds_codes(void **state)
{
    (void)state;
    static const char *const dirs[] = {"quant_fp8_channel", "quant_awq", "quant_gptq8", "quant_gptq4_act",
                                       "quant_ct_w4a16", "quant_ct_w8a16"};
    rt_backend *be = rt_cpu_backend_create(1);
    for (size_t d = 0; d < sizeof dirs / sizeof *dirs; d++) {
        char dir[512];
        snprintf(dir, sizeof dir, FIXTURES "%s", dirs[d]);
        rt_config c;
        rt_shard s;
        rt_model m;
        base_err err;
        assert_int_equal(rt_config_load(&c, dir, &err), 0);
        rt_shard_whole(&s, &c);
        if (rt_model_load(&m, &c, &s, dir, be, &err))
            fail_msg("%s: %s", dir, err.msg);
        rt_config cf = c;
        cf.quant.method = RT_QUANT_NONE;
        const size_t floats = rt_shard_weight_bytes(&cf, &s, RT_F32), planned = rt_shard_weight_bytes(&c, &s, RT_F32);
        /* linear weights: 3 layers x (128 x 128 x 2 + 32 x 128 x 2 + 256 x 128 x 3) of 4 bytes */
        const size_t linear = 3 * (128 * 128 * 2 + 32 * 128 * 2 + 256 * 128 * 3) * 4;
        const size_t expect = floats - linear + linear / (c.quant.bits == 4 ? 8 : 4);
        if (!(m.bytes_held >= expect && m.bytes_held < expect + linear / 16))
            fail_msg("%s: holds %zu bytes, float %zu, expected about %zu", dirs[d], m.bytes_held, floats, expect);
        /* the memory plan's estimate (config.json only) is what the load holds */
        if (planned != m.bytes_held)
            fail_msg("%s: the plan counts %zu bytes of weights, the load holds %zu", dirs[d], planned, m.bytes_held);
        assert_int_equal(m.layers[0].wqkv.q.kind, c.quant.kind);
        rt_model_free(&m);
        /* --quantize-lm-head int8 as well: the head as codes, and still what the plan counts */
        rt_config ch = c;
        assert_int_equal(rt_quant_for_load(&ch.head_quant, "int8"), 0);
        if (rt_model_load(&m, &ch, &s, dir, be, &err))
            fail_msg("%s with the head quantized: %s", dir, err.msg);
        assert_int_equal(m.lm_head.q.kind, RT_QK_INT);
        assert_int_equal(m.lm_head.q.bits, 8);
        if (rt_shard_weight_bytes(&ch, &s, RT_F32) != m.bytes_held)
            fail_msg("%s with the head quantized: the plan counts %zu bytes of weights, the load holds %zu", dirs[d],
                     rt_shard_weight_bytes(&ch, &s, RT_F32), m.bytes_held);
        if (!(m.bytes_held < planned + (size_t)c.vocab_size * (size_t)c.dim * 2))
            fail_msg("%s: %zu bytes held with the head quantized, %zu without", dirs[d], m.bytes_held, planned);
        rt_model_free(&m);
    }
    be->ops->destroy(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp8),
        cmocka_unit_test(test_fp8_rounding),
        cmocka_unit_test(test_quantize),
        cmocka_unit_test(test_quantize_blocks),
        cmocka_unit_test(test_fixture_configs),
        cmocka_unit_test(test_read_slices),
        cmocka_unit_test(test_act_order),
        cmocka_unit_test(test_cpu_matmul_codes),
        cmocka_unit_test(test_cpu_holds_codes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
