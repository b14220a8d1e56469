/* A quantized matrix packed as a format's tools store it (dinfer-mkmodel --quantize writes
 * checkpoints with it): the inverse of quant.c's readers, which the golden fixtures check against
 * transformers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/dtype.h"
#include "runtime/quant.h"

void rt_qtensors_free(rt_qtensor *t, int n)
{
    for (int i = 0; i < n; i++) {
        free(t[i].data);
        t[i].data = NULL;
    }
}

static void *add(rt_qtensor *out, int *n, const char *suffix, const char *dtype, int elem, int64_t d0, int64_t d1)
{
    rt_qtensor *t = &out[(*n)++];
    *t = (rt_qtensor){.suffix = suffix, .dtype = dtype, .elem_size = elem, .n_dims = d1 ? 2 : 1, .shape = {d0, d1}};
    t->data = calloc((size_t)(d0 * (d1 ? d1 : 1)), (size_t)elem);
    return t->data;
}

/* Scale (row r, group j). */
static float scale_at(const rt_qmat *m, int64_t r, int64_t j)
{
    return m->scales[r * m->n_groups + j];
}

static int zero_at(const rt_qmat *m, int64_t r, int64_t j)
{
    return m->zeros ? m->zeros[r * m->n_groups + j] : 1 << (m->bits - 1);
}

static int pack_fp8(const rt_qmat *m, const rt_quant *q, rt_qtensor *out, int *n)
{
    uint8_t *w = add(out, n, "weight", "F8_E4M3", 1, m->rows, m->cols);
    if (w)
        memcpy(w, m->codes, (size_t)(m->rows * m->cols));
    const bool block = q->scale == RT_QSCALE_BLOCK, tensor = q->scale == RT_QSCALE_TENSOR;
    const int64_t br = block ? q->block_rows : 1, sr = tensor ? 1 : (m->rows + br - 1) / br;
    const int64_t sc = q->scale == RT_QSCALE_CHANNEL || tensor ? 1 : m->n_groups;
    float *s = add(out, n, q->method == RT_QUANT_FP8 ? "weight_scale_inv" : "weight_scale", "F32", 4, sr,
                   tensor ? 0 : sc);
    if (s)
        for (int64_t i = 0; i < sr; i++) /* a block's scale: its first row's, the same on every row of it */
            for (int64_t j = 0; j < sc; j++)
                s[i * sc + j] = scale_at(m, i * br, j);
    return w && s ? 0 : -1;
}

static const int awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

static int pack_awq(const rt_qmat *m, rt_qtensor *out, int *n)
{
    const int64_t rows = m->rows, cols = m->cols, ng = m->n_groups, nw = rows / 8;
    int32_t *qw = add(out, n, "qweight", "I32", 4, cols, nw), *qz = add(out, n, "qzeros", "I32", 4, ng, nw);
    uint16_t *s = add(out, n, "scales", "F16", 2, ng, rows);
    if (!qw || !qz || !s)
        return -1;
    for (int64_t w = 0; w < nw; w++)
        for (int i = 0; i < 8; i++) {
            const int64_t r = w * 8 + awq_order[i];
            for (int64_t c = 0; c < cols; c++)
                qw[c * nw + w] = (int32_t)((uint32_t)qw[c * nw + w] | (uint32_t)m->codes[r * cols + c] << (4 * i));
            for (int64_t j = 0; j < ng; j++)
                qz[j * nw + w] = (int32_t)((uint32_t)qz[j * nw + w] | (uint32_t)zero_at(m, r, j) << (4 * i));
        }
    for (int64_t j = 0; j < ng; j++)
        for (int64_t r = 0; r < rows; r++)
            s[j * rows + r] = rt_f32_to_f16(scale_at(m, r, j));
    return 0;
}

static int pack_gptq(const rt_qmat *m, const rt_quant *q, rt_qtensor *out, int *n)
{
    const int bits = m->bits, per = 32 / bits;
    const uint32_t mask = (1u << bits) - 1;
    const int64_t rows = m->rows, cols = m->cols, ng = m->n_groups;
    int32_t *qw = add(out, n, "qweight", "I32", 4, cols / per, rows);
    int32_t *qz = add(out, n, "qzeros", "I32", 4, ng, rows / per);
    uint16_t *s = add(out, n, "scales", "F16", 2, ng, rows);
    int32_t *gi = add(out, n, "g_idx", "I32", 4, cols, 0);
    if (!qw || !qz || !s || !gi)
        return -1;
    for (int64_t c = 0; c < cols; c++) {
        gi[c] = m->gidx ? m->gidx[c] : (int32_t)(c / m->group);
        for (int64_t r = 0; r < rows; r++)
            qw[(c / per) * rows + r] =
                (int32_t)((uint32_t)qw[(c / per) * rows + r] | (uint32_t)m->codes[r * cols + c] << (bits * (c % per)));
    }
    for (int64_t j = 0; j < ng; j++)
        for (int64_t r = 0; r < rows; r++) {
            const uint32_t z = (uint32_t)(zero_at(m, r, j) - (q->gptq_v1 ? 1 : 0)) & mask;
            qz[j * (rows / per) + r / per] = (int32_t)((uint32_t)qz[j * (rows / per) + r / per] | z << (bits * (r % per)));
            s[j * rows + r] = rt_f32_to_f16(scale_at(m, r, j));
        }
    return 0;
}

/* compressed-tensors pack-quantized (quant.c's read_ct_int): the codes as they are (a signed value
 * plus 2^(bits-1)), packed along the input; zero points packed along the output. */
static int pack_ct_int(const rt_qmat *m, const rt_quant *q, rt_qtensor *out, int *n)
{
    const int bits = m->bits, per = 32 / bits;
    const int64_t rows = m->rows, cols = m->cols, ng = m->n_groups;
    if (q->int8_weight) { /* int-quantized: the signed values, a byte each */
        int8_t *w = add(out, n, "weight", "I8", 1, rows, cols);
        uint16_t *s = add(out, n, "weight_scale", "F16", 2, rows, ng);
        if (!w || !s)
            return -1;
        for (int64_t i = 0; i < rows * cols; i++)
            w[i] = (int8_t)(m->codes[i] - (1 << (bits - 1)));
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < ng; j++)
                s[r * ng + j] = rt_f32_to_f16(scale_at(m, r, j));
        return 0;
    }
    int32_t *w = add(out, n, "weight_packed", "I32", 4, rows, cols / per);
    uint16_t *s = add(out, n, "weight_scale", "F16", 2, rows, ng);
    int32_t *shape = add(out, n, "weight_shape", "I32", 4, 2, 0);
    if (!w || !s || !shape)
        return -1;
    shape[0] = (int32_t)rows, shape[1] = (int32_t)cols;
    for (int64_t r = 0; r < rows; r++) {
        int32_t *row = w + r * (cols / per);
        for (int64_t c = 0; c < cols; c++)
            row[c / per] = (int32_t)((uint32_t)row[c / per] | (uint32_t)m->codes[r * cols + c] << (bits * (c % per)));
        for (int64_t j = 0; j < ng; j++)
            s[r * ng + j] = rt_f32_to_f16(scale_at(m, r, j));
    }
    if (q->zero_point) {
        int32_t *z = add(out, n, "weight_zero_point", "I32", 4, rows / per, ng);
        if (!z)
            return -1;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < ng; j++)
                z[(r / per) * ng + j] = (int32_t)((uint32_t)z[(r / per) * ng + j] | (uint32_t)zero_at(m, r, j)
                                                                                        << (bits * (r % per)));
    }
    if (m->gidx) {
        int32_t *gi = add(out, n, "weight_g_idx", "I32", 4, cols, 0);
        if (!gi)
            return -1;
        memcpy(gi, m->gidx, (size_t)cols * sizeof *gi);
    }
    return 0;
}

int rt_qmat_pack(const rt_qmat *m, const rt_quant *q, rt_qtensor *out, int *n, base_err *err)
{
    *n = 0;
    int rc;
    switch (q->method) {
    case RT_QUANT_CT_FP8:
    case RT_QUANT_FP8:
        rc = pack_fp8(m, q, out, n);
        break;
    case RT_QUANT_AWQ:
        if (m->rows % 8 || m->cols % q->group_size || m->bits != 4)
            return base_errf(err, "a %lld x %lld matrix does not pack as AWQ int4 (outputs a multiple of 8, inputs of "
                                  "the group size %d)", (long long)m->rows, (long long)m->cols, q->group_size);
        rc = pack_awq(m, out, n);
        break;
    case RT_QUANT_GPTQ:
        if (m->rows % (32 / m->bits) || (q->scale == RT_QSCALE_GROUP && m->cols % q->group_size) ||
            m->cols % (32 / m->bits))
            return base_errf(err, "a %lld x %lld matrix does not pack as %d-bit GPTQ (outputs and inputs multiples of "
                                  "%d, inputs of the group size %lld)", (long long)m->rows, (long long)m->cols, m->bits,
                             32 / m->bits, (long long)(q->scale == RT_QSCALE_GROUP ? q->group_size : m->cols));
        if (q->gptq_v1 && m->zeros)
            for (int64_t i = 0; i < m->rows * m->n_groups; i++)
                if (m->zeros[i] == 0)
                    return base_errf(err, "GPTQ's v1 format stores each zero point minus one: a zero point of 0 "
                                          "needs checkpoint_format gptq_v2");
        rc = pack_gptq(m, q, out, n);
        break;
    case RT_QUANT_CT_INT:
        if ((q->zero_point && m->rows % (32 / m->bits)) || m->cols % (32 / m->bits) ||
            (q->scale == RT_QSCALE_GROUP && m->cols % q->group_size))
            return base_errf(err, "a %lld x %lld matrix does not pack as %d-bit compressed-tensors (inputs multiples "
                                  "of %d and of the group size)", (long long)m->rows, (long long)m->cols, m->bits,
                             32 / m->bits);
        rc = pack_ct_int(m, q, out, n);
        break;
    default:
        return base_errf(err, "not a checkpoint's quantization method");
    }
    if (rc) {
        rt_qtensors_free(out, *n);
        *n = 0;
        return base_errf(err, "out of memory packing a %lld x %lld quantized matrix", (long long)m->rows,
                         (long long)m->cols);
    }
    return 0;
}
