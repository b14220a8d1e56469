#include "runtime/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/dtype.h"

void rt_qmat_free(rt_qmat *m)
{
    free(m->codes);
    free(m->scales);
    free(m->zeros);
    free(m->gidx);
    memset(m, 0, sizeof *m);
}

int64_t rt_qmat_row_bytes(const rt_qmat *m)
{
    return m->bits == 4 ? m->cols / 2 : m->cols;
}

void rt_qmat_pack_codes(const rt_qmat *m, uint8_t *out)
{
    const int64_t rb = rt_qmat_row_bytes(m);
    if (m->bits != 4) {
        memcpy(out, m->codes, (size_t)(m->rows * rb));
        return;
    }
#pragma omp parallel for schedule(static) if (m->rows * m->cols > (1 << 16))
    for (int64_t r = 0; r < m->rows; r++)
        for (int64_t c = 0; c + 1 < m->cols; c += 2)
            out[r * rb + c / 2] = (uint8_t)(m->codes[r * m->cols + c] | m->codes[r * m->cols + c + 1] << 4);
}

void rt_qmat_dequantize(const rt_qmat *m, float *w)
{
    float fp8[256];
    for (int i = 0; i < 256; i++)
        fp8[i] = rt_fp8_to_f32((uint8_t)i);
    const int mid = 1 << (m->bits - 1);
#pragma omp parallel for schedule(static) if (m->rows * m->cols > (1 << 16))
    for (int64_t r = 0; r < m->rows; r++) {
        const uint8_t *code = m->codes + r * m->cols;
        float *out = w + r * m->cols;
        for (int64_t c = 0; c < m->cols; c++) {
            const int64_t g = r * m->n_groups + (m->gidx ? m->gidx[c] : c / m->group);
            const float v = m->kind == RT_QK_FP8 ? fp8[code[c]] : (float)((int)code[c] - (m->zeros ? m->zeros[g] : mid));
            out[c] = v * m->scales[g];
        }
    }
}

int rt_qmat_order(rt_qmat *m, int32_t *perm, base_err *err)
{
    const int64_t ng = m->n_groups, R = m->rows, C = m->cols;
    int64_t *count = calloc((size_t)ng + 1, sizeof *count), *at = calloc((size_t)ng + 1, sizeof *at);
    int64_t kept = 0;
    int rc = !count || !at ? base_errf(err, "out of host memory ordering a quantized weight's groups") : 0;
    for (int64_t c = 0; !rc && c < C; c++)
        count[m->gidx[c]]++;
    for (int64_t g = 0; !rc && g < ng; g++) {
        if (count[g] && count[g] != m->group)
            rc = 1; /* part of group g: its other columns are another rank's */
        at[g] = kept * m->group; /* where group g's columns go: the groups held, in order */
        kept += count[g] > 0;
    }
    uint8_t *codes = NULL;
    float *scales = NULL;
    uint16_t *zeros = NULL;
    if (!rc) {
        codes = malloc((size_t)(R * C) + 1);
        scales = malloc((size_t)(R * kept) * sizeof *scales + 1);
        zeros = m->zeros ? malloc((size_t)(R * kept) * sizeof *zeros + 1) : NULL;
        if (!codes || !scales || (m->zeros && !zeros))
            rc = base_errf(err, "out of host memory ordering a quantized weight's groups");
    }
    if (!rc) {
        for (int64_t c = 0; c < C; c++) /* stable: a group's columns keep their order */
            perm[at[m->gidx[c]]++] = (int32_t)c;
        for (int64_t r = 0; r < R; r++) {
            for (int64_t c = 0; c < C; c++)
                codes[r * C + c] = m->codes[r * C + perm[c]];
            for (int64_t g = 0, j = 0; g < ng; g++) {
                if (!count[g])
                    continue;
                scales[r * kept + j] = m->scales[r * ng + g];
                if (zeros)
                    zeros[r * kept + j] = m->zeros[r * ng + g];
                j++;
            }
        }
        free(m->codes);
        free(m->scales);
        free(m->zeros);
        free(m->gidx);
        m->codes = codes, m->scales = scales, m->zeros = zeros, m->gidx = NULL;
        m->n_groups = kept;
    } else {
        free(codes);
        free(scales);
        free(zeros);
    }
    free(count);
    free(at);
    return rc;
}

int rt_qmat_take_rows(rt_qmat *m, const int32_t *idx, int64_t n, base_err *err)
{
    const int64_t C = m->cols, ng = m->n_groups;
    uint8_t *codes = malloc((size_t)(n * C) + 1);
    float *scales = malloc((size_t)(n * ng) * sizeof *scales + 1);
    uint16_t *zeros = m->zeros ? malloc((size_t)(n * ng) * sizeof *zeros + 1) : NULL;
    if (!codes || !scales || (m->zeros && !zeros)) {
        free(codes), free(scales), free(zeros);
        return base_errf(err, "out of host memory selecting a quantized weight's rows");
    }
    for (int64_t i = 0; i < n; i++) {
        memcpy(codes + i * C, m->codes + (int64_t)idx[i] * C, (size_t)C);
        memcpy(scales + i * ng, m->scales + (int64_t)idx[i] * ng, (size_t)ng * sizeof *scales);
        if (zeros)
            memcpy(zeros + i * ng, m->zeros + (int64_t)idx[i] * ng, (size_t)ng * sizeof *zeros);
    }
    free(m->codes), free(m->scales), free(m->zeros);
    m->codes = codes, m->scales = scales, m->zeros = zeros, m->rows = n;
    return 0;
}

int rt_qmat_take_cols(rt_qmat *m, const int32_t *idx, int64_t n, base_err *err)
{
    const int64_t R = m->rows, C = m->cols;
    uint8_t *codes = malloc((size_t)(R * n) + 1);
    int32_t *gidx = malloc((size_t)n * sizeof *gidx + 1);
    if (!codes || !gidx) {
        free(codes), free(gidx);
        return base_errf(err, "out of host memory selecting a quantized weight's columns");
    }
    for (int64_t r = 0; r < R; r++)
        for (int64_t k = 0; k < n; k++)
            codes[r * n + k] = m->codes[r * C + idx[k]];
    for (int64_t k = 0; k < n; k++)
        gidx[k] = m->gidx ? m->gidx[idx[k]] : (int32_t)(idx[k] / m->group);
    free(m->codes), free(m->gidx);
    m->codes = codes, m->gidx = gidx, m->cols = n;
    return 0;
}

int rt_qmat_alloc(rt_qmat *m, rt_quant_kind kind, int bits, int64_t rows, int64_t cols, int64_t group,
                  bool zeros, base_err *err)
{
    *m = (rt_qmat){.kind = kind, .bits = bits, .rows = rows, .cols = cols, .group = group};
    m->n_groups = cols ? (cols + group - 1) / group : 0;
    m->codes = malloc((size_t)(rows * cols) + 1);
    m->scales = malloc((size_t)(rows * m->n_groups) * sizeof *m->scales + 1);
    m->zeros = zeros ? malloc((size_t)(rows * m->n_groups) * sizeof *m->zeros + 1) : NULL;
    if (!m->codes || !m->scales || (zeros && !m->zeros)) {
        rt_qmat_free(m);
        return base_errf(err, "out of host memory for a %lld x %lld quantized weight", (long long)rows,
                         (long long)cols);
    }
    return 0;
}

/* ---- quantizing a float matrix as it loads ---- */

int rt_qmat_quantize(rt_qmat *m, const rt_quant *q, const float *w, int64_t rows, int64_t cols, int64_t c0,
                     int64_t c1, const char *what, base_err *err)
{
    const int64_t g = q->scale == RT_QSCALE_GROUP ? q->group_size : q->scale == RT_QSCALE_BLOCK ? q->block_cols : cols;
    const int64_t br = q->scale == RT_QSCALE_BLOCK ? q->block_rows : q->scale == RT_QSCALE_TENSOR ? rows : 1;
    if (g < cols && c0 % g)
        return base_errf(err, "%s: the tensor-parallel split at column %lld cuts a group of %lld columns: choose a "
                              "--tp whose slices are multiples of %lld", what, (long long)c0, (long long)g,
                         (long long)g);
    const bool zeros = q->kind == RT_QK_INT && q->zero_point;
    if (rt_qmat_alloc(m, q->kind, q->bits, rows, c1 - c0, g < cols ? g : c1 - c0, zeros, err))
        return -1;
    const int maxq = (1 << q->bits) - 1, mid = 1 << (q->bits - 1);
    const int64_t gfirst = g < cols ? c0 / g : 0;
    /* first each block of br rows' scale (and zero) of each group, held in its first row's place
     * (a block's values are read once, not once a row of it) */
    const int64_t n_blocks = (rows + br - 1) / br;
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 16))
    for (int64_t bi = 0; bi < n_blocks; bi++) {
        const int64_t b0 = bi * br, b1 = b0 + br < rows ? b0 + br : rows;
        for (int64_t j = 0; j < m->n_groups; j++) {
            /* the group's columns of the whole row: [a, b) */
            const int64_t a = g < cols ? (gfirst + j) * g : 0, b = g < cols ? (a + g < cols ? a + g : cols) : cols;
            float lo = 0, hi = 0;
            for (int64_t rr = b0; rr < b1; rr++)
                for (int64_t c = a; c < b; c++) {
                    lo = fminf(lo, w[rr * cols + c]);
                    hi = fmaxf(hi, w[rr * cols + c]);
                }
            const float amax = fmaxf(-lo, hi);
            float s;
            int zero = mid;
            if (q->kind == RT_QK_FP8)
                s = amax / 448.0f;
            else if (zeros)
                s = (hi - lo) / (float)maxq;
            else
                s = amax / (float)(mid - 1);
            if (q->scales_f16) /* the scale the checkpoint will hold, before any code is chosen */
                s = rt_f16_to_f32(rt_f32_to_f16(s));
            if (!(s > 0))
                s = 1; /* an all-zero group: any scale gives zeros */
            if (zeros)
                zero = (int)fminf(fmaxf(nearbyintf(-lo / s), 0), (float)maxq);
            m->scales[b0 * m->n_groups + j] = s;
            if (m->zeros)
                m->zeros[b0 * m->n_groups + j] = (uint16_t)zero;
        }
    }
    /* then every row's codes, with its block's scales */
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 16))
    for (int64_t r = 0; r < rows; r++) {
        const float *row = w + r * cols;
        const int64_t b0 = r / br * br;
        for (int64_t j = 0; j < m->n_groups; j++) {
            const int64_t a = g < cols ? (gfirst + j) * g : 0, b = g < cols ? (a + g < cols ? a + g : cols) : cols;
            const int64_t gi = r * m->n_groups + j, bg = b0 * m->n_groups + j;
            const float s = m->scales[bg];
            const int zero = m->zeros ? m->zeros[bg] : mid;
            if (r != b0) { /* the block's first row holds them already (and other rows read them) */
                m->scales[gi] = s;
                if (m->zeros)
                    m->zeros[gi] = (uint16_t)zero;
            }
            /* this slice's part of the group */
            const int64_t ka = a > c0 ? a : c0, kb = b < c1 ? b : c1;
            for (int64_t c = ka; c < kb; c++) {
                uint8_t code;
                if (q->kind == RT_QK_FP8) {
                    code = rt_f32_to_fp8(row[c] / s);
                } else {
                    float v = nearbyintf(row[c] / s) + (float)zero;
                    code = (uint8_t)fminf(fmaxf(v, zeros ? 0.0f : 1.0f), (float)maxq);
                }
                m->codes[r * m->cols + (c - c0)] = code;
            }
        }
    }
    return 0;
}
