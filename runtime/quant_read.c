/* Reading each format's tensors of a quantized checkpoint into rt_qmat (runtime/quant.h): FP8 of
 * compressed-tensors and transformers, AWQ, GPTQ (act order too) and compressed-tensors' integer
 * formats, a tensor-parallel slice at a time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/dtype.h"
#include "runtime/quant.h"

bool rt_quant_stored(const rt_ckpt *ck, const rt_quant *q, const char *module)
{
    char name[320];
    switch (q->method) {
    case RT_QUANT_CT_FP8:
    case RT_QUANT_FP8: {
        /* quantized modules carry their scale; those the checkpoint left float do not */
        snprintf(name, sizeof name, "%s.%s", module, q->method == RT_QUANT_FP8 ? "weight_scale_inv" : "weight_scale");
        return rt_ckpt_has(ck, name);
    }
    case RT_QUANT_AWQ:
    case RT_QUANT_GPTQ:
        snprintf(name, sizeof name, "%s.qweight", module);
        return rt_ckpt_has(ck, name);
    case RT_QUANT_CT_INT: /* int-quantized: as FP8's, the scale tells (the weight's name is a float one's) */
        snprintf(name, sizeof name, "%s.%s", module, q->int8_weight ? "weight_scale" : "weight_packed");
        return rt_ckpt_has(ck, name);
    case RT_QUANT_NONE:
    case RT_QUANT_LOAD:
        break;
    }
    return false;
}

/* ---- reading a format's tensors ---- */

typedef struct qread {
    rt_ckpt *ck;
    const char *module;
    size_t *bytes;
    base_err *err;
} qread;

/* The tensor `module.suffix`, of dtype `dtype` (NULL: a float type) and shape (d0, d1) (d1 < 0:
 * one dimension; d1 == 0: (d0) or (d0, 1)). */
static int qfind(qread *R, const char *suffix, const char *dtype, int64_t d0, int64_t d1, const rt_st_file **f,
                 const rt_st_tensor **t)
{
    char name[320];
    snprintf(name, sizeof name, "%s.%s", R->module, suffix);
    if (rt_ckpt_find(R->ck, name, f, t, R->err))
        return -1;
    if (dtype ? strcmp((*t)->dtype_name, dtype) != 0 : !(*t)->supported)
        return base_errf(R->err, "%s: tensor '%s' has dtype %s, expected %s", (*f)->path, name, (*t)->dtype_name,
                         dtype ? dtype : "F32, F16 or BF16");
    const rt_st_tensor *x = *t;
    bool ok = d1 < 0    ? x->n_dims == 1 && x->shape[0] == d0
              : d1 == 0 ? (x->n_dims == 1 && x->shape[0] == d0) || (x->n_dims == 2 && x->shape[0] == d0 && x->shape[1] == 1)
                        : x->n_dims == 2 && x->shape[0] == d0 && x->shape[1] == d1;
    if (!ok) {
        char got[96] = "", *p = got, want[64];
        for (int i = 0; i < x->n_dims && p < got + sizeof got - 24; i++)
            p += sprintf(p, "%s%lld", i ? ", " : "", (long long)x->shape[i]);
        if (d1 > 0)
            snprintf(want, sizeof want, "[%lld, %lld]", (long long)d0, (long long)d1);
        else if (d1 == 0)
            snprintf(want, sizeof want, "[%lld] or [%lld, 1]", (long long)d0, (long long)d0);
        else
            snprintf(want, sizeof want, "[%lld]", (long long)d0);
        return base_errf(R->err, "%s: tensor '%s' has shape [%s], expected %s from config.json and quantization_config",
                         (*f)->path, name, got, want);
    }
    return 0;
}

/* Rows [r0, r1) x columns [c0, c1) of a 2-D tensor into a new buffer: in its own dtype, or (f32)
 * converted to fp32 from a float dtype. */
static void *read_slice(qread *R, const rt_st_file *f, const rt_st_tensor *t, bool f32, int64_t r0, int64_t r1,
                        int64_t c0, int64_t c1)
{
    const size_t n = (size_t)((r1 - r0) * (c1 - c0));
    void *buf = malloc(n * (f32 ? sizeof(float) : (size_t)t->elem_size) + 1);
    if (!buf) {
        base_errf(R->err, "out of host memory reading tensor '%s'", t->name);
        return NULL;
    }
    if (f32 ? rt_st_read_f32(f, t, r0, r1, c0, c1, buf, R->err) : rt_st_read_raw(f, t, r0, r1, c0, c1, buf, R->err)) {
        free(buf);
        return NULL;
    }
    if (R->bytes)
        *R->bytes += n * (size_t)t->elem_size;
    return buf;
}

/* A slice that starts inside a group (or a packed word) is refused: its rank would need a scale
 * (or bits) another rank holds. */
static int check_cut(qread *R, const char *what, int64_t at, int64_t unit, const char *why)
{
    if (unit > 1 && at % unit)
        return base_errf(R->err, "%s: the tensor-parallel split at %s %lld cuts %s of %lld: choose a --tp whose "
                                 "slices are multiples of %lld", R->module, what, (long long)at, why, (long long)unit,
                         (long long)unit);
    return 0;
}

static int read_fp8(rt_qmat *m, qread *R, const rt_quant *q, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                    int64_t c0, int64_t c1)
{
    const rt_st_file *f, *sf;
    const rt_st_tensor *t, *st;
    if (qfind(R, "weight", "F8_E4M3", rows, cols, &f, &t))
        return -1;
    int64_t group = c1 - c0, br = 1, bc = 1, sr = rows, sc = 1;
    const char *sname = q->method == RT_QUANT_FP8 ? "weight_scale_inv" : "weight_scale";
    switch (q->scale) {
    case RT_QSCALE_TENSOR:
        sr = 1;
        br = rows;
        break;
    case RT_QSCALE_CHANNEL:
        break;
    case RT_QSCALE_GROUP:
        group = bc = q->group_size;
        sc = (cols + bc - 1) / bc;
        break;
    case RT_QSCALE_BLOCK:
        br = q->block_rows;
        group = bc = q->block_cols;
        sr = (rows + br - 1) / br;
        sc = (cols + bc - 1) / bc;
        break;
    }
    if (check_cut(R, "column", c0, bc, "a scale's group"))
        return -1;
    if (q->scale == RT_QSCALE_TENSOR) { /* [1] or a scalar */
        char name[320];
        snprintf(name, sizeof name, "%s.%s", R->module, sname);
        if (rt_ckpt_find(R->ck, name, &sf, &st, R->err))
            return -1;
        int64_t count = 1;
        for (int i = 0; i < st->n_dims; i++)
            count *= st->shape[i];
        if (count != 1 || !st->supported || st->n_dims > 2)
            return base_errf(R->err, "%s: tensor '%s' must be one float (a per-tensor scale), has dtype %s and %lld "
                                     "elements", sf->path, name, st->dtype_name, (long long)count);
    } else if (qfind(R, sname, NULL, sr, q->scale == RT_QSCALE_CHANNEL ? 0 : sc, &sf, &st)) {
        return -1;
    }
    if (rt_qmat_alloc(m, RT_QK_FP8, 8, r1 - r0, c1 - c0, group, false, R->err))
        return -1;
    uint8_t *codes = read_slice(R, f, t, false, r0, r1, c0, c1);
    float one = 0, *s = NULL;
    if (q->scale == RT_QSCALE_TENSOR) {
        rt_convert_to_f32(&one, sf->data + st->begin, st->dtype, 1);
        if (R->bytes)
            *R->bytes += (size_t)st->elem_size;
    } else {
        /* the scale rows covering [r0, r1) and the scale columns from c0's */
        const int64_t s0 = r0 / br, s1 = (r1 + br - 1) / br, cs0 = c0 / bc;
        const int64_t ncol = q->scale == RT_QSCALE_CHANNEL ? 1 : sc;
        if (st->n_dims == 1) /* (rows) */
            s = read_slice(R, sf, st, true, s0, s1, 0, 1);
        else
            s = read_slice(R, sf, st, true, s0, s1, 0, ncol);
        if (s)
            for (int64_t r = 0; r < m->rows; r++)
                for (int64_t g = 0; g < m->n_groups; g++)
                    m->scales[r * m->n_groups + g] =
                        q->scale == RT_QSCALE_CHANNEL ? s[(r0 + r) / br - s0] : s[((r0 + r) / br - s0) * ncol + cs0 + g];
    }
    if (!codes || (q->scale != RT_QSCALE_TENSOR && !s)) {
        free(codes);
        free(s);
        rt_qmat_free(m);
        return -1;
    }
    if (q->scale == RT_QSCALE_TENSOR)
        for (int64_t i = 0; i < m->rows * m->n_groups; i++)
            m->scales[i] = one;
    memcpy(m->codes, codes, (size_t)(m->rows * m->cols));
    free(codes);
    free(s);
    return 0;
}

/* AWQ's GEMM packing: word c of a row holds output columns 8c + ORDER[i] at bits 4i. */
/* The end of a packed reader: its slices freed, and m too when rc says the read failed. */
static int packed_end(rt_qmat *m, int rc, uint32_t *qw, uint32_t *qz, float *s)
{
    free(qw);
    free(qz);
    free(s);
    if (rc)
        rt_qmat_free(m);
    return rc;
}

static const int awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
#define UNPACK_BLOCK 64 /* rows or columns a block of a packed weight's transpose */

static int read_awq(rt_qmat *m, qread *R, const rt_quant *q, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                    int64_t c0, int64_t c1)
{
    const int64_t g = q->group_size, ng = cols / g;
    const rt_st_file *fw, *fz, *fs;
    const rt_st_tensor *tw, *tz, *ts;
    if (rows % 8 || cols % g)
        return base_errf(R->err, "%s: a %lld x %lld weight does not pack as AWQ (outputs a multiple of 8, inputs of "
                                 "the group size %lld)", R->module, (long long)rows, (long long)cols, (long long)g);
    if (qfind(R, "qweight", "I32", cols, rows / 8, &fw, &tw) || qfind(R, "qzeros", "I32", ng, rows / 8, &fz, &tz) ||
        qfind(R, "scales", NULL, ng, rows, &fs, &ts) || check_cut(R, "column", c0, g, "a group") ||
        check_cut(R, "row", r0, 8, "a packed word") || check_cut(R, "row", r1, 8, "a packed word"))
        return -1;
    if (rt_qmat_alloc(m, RT_QK_INT, 4, r1 - r0, c1 - c0, g, true, R->err))
        return -1;
    const int64_t g0 = c0 / g, g1 = (c1 + g - 1) / g, w0 = r0 / 8, w1 = r1 / 8, nw = w1 - w0;
    uint32_t *qw = read_slice(R, fw, tw, false, c0, c1, w0, w1), *qz = read_slice(R, fz, tz, false, g0, g1, w0, w1);
    float *s = read_slice(R, fs, ts, true, g0, g1, r0, r1);
    if (qw && qz && s) {
        int pos[8]; /* the nibble holding output column k of a word */
        for (int i = 0; i < 8; i++)
            pos[awq_order[i]] = i;
        const int64_t C = m->cols;
        /* qweight is (input, output word): a transpose, in blocks of UNPACK_BLOCK inputs so that the
         * words (a block's column) and the codes (8 rows of a block's bytes) are both walked in
         * cached runs, the blocks in parallel (row by row over strided words the 8B shape's AWQ
         * folder loaded in 44-50 s on two cores, in blocks 21-28 s) */
#pragma omp parallel for schedule(static) if (m->rows * C > (1 << 16))
        for (int64_t cb = 0; cb < C; cb += UNPACK_BLOCK) {
            const int64_t ce = cb + UNPACK_BLOCK < C ? cb + UNPACK_BLOCK : C;
            for (int64_t w = 0; w < nw; w++)
                for (int64_t c = cb; c < ce; c++) {
                    const uint32_t u = qw[c * nw + w];
                    for (int k = 0; k < 8; k++)
                        m->codes[(w * 8 + k) * C + c] = (uint8_t)((u >> (4 * pos[k])) & 15);
                }
        }
        for (int64_t r = 0; r < m->rows; r++)
            for (int64_t j = 0; j < m->n_groups; j++) {
                m->zeros[r * m->n_groups + j] = (uint16_t)((qz[j * nw + r / 8] >> (4 * pos[r % 8])) & 15);
                m->scales[r * m->n_groups + j] = s[j * m->rows + r];
            }
    }
    return packed_end(m, qw && qz && s ? 0 : -1, qw, qz, s);
}

/* An integer slice's storage (rt_qmat_alloc), and with order (act order: each input column's group,
 * read_g_idx's) room for every one of the ng groups' scales and each column's group from order[c0];
 * order freed. */
static int qmat_alloc_int(rt_qmat *m, qread *R, int bits, int64_t rows, int64_t cols, int64_t group, bool zeros,
                          int32_t *order, int64_t c0, int64_t ng)
{
    int rc = rt_qmat_alloc(m, RT_QK_INT, bits, rows, cols, group, zeros, R->err);
    if (!rc && order) {
        float *sc = realloc(m->scales, (size_t)(rows * ng) * sizeof *sc + 1);
        m->scales = sc ? sc : m->scales;
        uint16_t *z = sc && zeros ? realloc(m->zeros, (size_t)(rows * ng) * sizeof *z + 1) : NULL;
        m->zeros = z ? z : m->zeros;
        m->gidx = sc && (z || !zeros) ? malloc((size_t)cols * sizeof *m->gidx + 1) : NULL;
        if (m->gidx) {
            memcpy(m->gidx, order + c0, (size_t)cols * sizeof *m->gidx);
            m->n_groups = ng;
        } else {
            rt_qmat_free(m);
            rc = base_errf(R->err, "%s: out of host memory", R->module);
        }
    }
    free(order);
    return rc;
}

/* Each input column's group (cols): GPTQ's g_idx, compressed-tensors' weight_g_idx. 0 with *order
 * NULL when it is i / g throughout (or absent), else *order (malloc'd) holds it, every group checked
 * to have g columns. */
static int read_g_idx(qread *R, const rt_quant *q, int64_t cols, int64_t g, int32_t **order)
{
    const rt_st_file *f;
    const rt_st_tensor *t;
    const char *suffix = q->method == RT_QUANT_CT_INT ? "weight_g_idx" : "g_idx";
    const char *flag = q->method == RT_QUANT_CT_INT ? "weights.actorder is \"group\"" : "desc_act is true";
    char name[320];
    snprintf(name, sizeof name, "%s.%s", R->module, suffix);
    *order = NULL;
    if (!rt_ckpt_has(R->ck, name)) {
        if (q->act_order)
            return base_errf(R->err, "%s: quantization_config's %s but the checkpoint has no tensor '%s' (each "
                                     "input column's group)", R->module, flag, name);
        return 0;
    }
    if (qfind(R, suffix, "I32", cols, -1, &f, &t))
        return -1;
    const int64_t ng = cols / g;
    int32_t *gi = malloc((size_t)cols * sizeof *gi + 1);
    int64_t *count = calloc((size_t)ng + 1, sizeof *count);
    if (!gi || !count) {
        free(gi);
        free(count);
        return base_errf(R->err, "out of host memory reading tensor '%s'", name);
    }
    memcpy(gi, f->data + t->begin, (size_t)cols * sizeof *gi);
    bool in_order = true;
    int rc = 0;
    for (int64_t i = 0; i < cols && !rc; i++) {
        if (gi[i] < 0 || gi[i] >= ng)
            rc = base_errf(R->err, "%s: tensor '%s' puts input column %lld in group %d, outside [0, %lld)", f->path,
                           name, (long long)i, (int)gi[i], (long long)ng);
        else if (++count[gi[i]] > g)
            rc = base_errf(R->err, "%s: tensor '%s' puts more than %lld columns (the group size) in group %d", f->path,
                           name, (long long)g, (int)gi[i]);
        in_order = in_order && gi[i] == (int32_t)(i / g);
    }
    free(count);
    if (R->bytes)
        *R->bytes += (size_t)cols * sizeof *gi;
    if (!rc && !in_order && !q->act_order)
        rc = base_errf(R->err, "%s: tensor '%s' puts input columns out of order (act order) but "
                               "quantization_config's %s", f->path, name,
                       q->method == RT_QUANT_CT_INT ? "weights.actorder is not \"group\"" : "desc_act is false");
    if (rc || in_order) {
        free(gi);
        return rc;
    }
    *order = gi;
    return 0;
}

int rt_quant_input_order(rt_ckpt *ck, const rt_quant *q, const char *module, int64_t cols, int32_t **order,
                         base_err *err)
{
    qread R = {.ck = ck, .module = module, .err = err};
    const int64_t g = q->group_size;
    int32_t *gi;
    *order = NULL;
    if ((q->method != RT_QUANT_GPTQ && q->method != RT_QUANT_CT_INT) || q->scale != RT_QSCALE_GROUP || cols % g)
        return 0;
    if (read_g_idx(&R, q, cols, g, &gi))
        return -1;
    if (!gi)
        return 0; /* in order */
    int32_t *o = malloc((size_t)cols * sizeof *o);
    int64_t *at = calloc((size_t)(cols / g) + 1, sizeof *at);
    if (!o || !at) {
        free(gi), free(o), free(at);
        return base_errf(err, "out of host memory ordering %s's groups", module);
    }
    for (int64_t j = 0; j < cols / g; j++) /* read_g_idx checked: every group g columns */
        at[j] = j * g;
    for (int64_t c = 0; c < cols; c++)
        o[at[gi[c]]++] = (int32_t)c;
    free(gi), free(at);
    *order = o;
    return 0;
}

static int read_gptq(rt_qmat *m, qread *R, const rt_quant *q, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                     int64_t c0, int64_t c1)
{
    const int bits = q->bits, per = 32 / bits;
    const uint32_t mask = (1u << bits) - 1;
    const int64_t g = q->scale == RT_QSCALE_CHANNEL ? cols : q->group_size, ng = cols / g;
    const rt_st_file *fw, *fz, *fs;
    const rt_st_tensor *tw, *tz, *ts;
    int32_t *order = NULL;
    if (rows % per || cols % g || cols % per)
        return base_errf(R->err, "%s: a %lld x %lld weight does not pack as %d-bit GPTQ (outputs and inputs multiples "
                                 "of %d, inputs of the group size %lld)", R->module, (long long)rows, (long long)cols,
                         bits, per, (long long)g);
    if (qfind(R, "qweight", "I32", cols / per, rows, &fw, &tw) ||
        qfind(R, "qzeros", "I32", ng, rows / per, &fz, &tz) || qfind(R, "scales", NULL, ng, rows, &fs, &ts) ||
        read_g_idx(R, q, cols, g, &order))
        return -1;
    /* in order, a slice must start at a group; out of order (act order) its columns' groups are
     * anywhere: it takes every group's scales */
    if ((!order && check_cut(R, "column", c0, q->scale == RT_QSCALE_CHANNEL ? per : g, "a group")) ||
        check_cut(R, "column", c0, per, "a packed word") || check_cut(R, "column", c1 == cols ? 0 : c1, per, "a packed word") ||
        check_cut(R, "row", r0, per, "a packed word") || check_cut(R, "row", r1 == rows ? 0 : r1, per, "a packed word")) {
        free(order);
        return -1;
    }
    const int64_t mg = q->scale == RT_QSCALE_CHANNEL ? c1 - c0 : g;
    if (qmat_alloc_int(m, R, bits, r1 - r0, c1 - c0, mg, true, order, c0, ng))
        return -1;
    const int64_t g0 = m->gidx ? 0 : c0 / g, g1 = m->gidx ? ng : (c1 + g - 1) / g, ncw = r1 / per - r0 / per;
    uint32_t *qw = read_slice(R, fw, tw, false, c0 / per, (c1 + per - 1) / per, r0, r1);
    uint32_t *qz = read_slice(R, fz, tz, false, g0, g1, r0 / per, r1 / per);
    float *s = read_slice(R, fs, ts, true, g0, g1, r0, r1);
    if (qw && qz && s) {
        const int64_t nr = m->rows, C = m->cols, nwc = C / per; /* C a multiple of per: checked above */
        /* qweight is (input word, output): a transpose, in blocks of UNPACK_BLOCK rows (as read_awq) */
#pragma omp parallel for schedule(static) if (nr * C > (1 << 16))
        for (int64_t rb = 0; rb < nr; rb += UNPACK_BLOCK) {
            const int64_t re = rb + UNPACK_BLOCK < nr ? rb + UNPACK_BLOCK : nr;
            for (int64_t i = 0; i < nwc; i++)
                for (int64_t r = rb; r < re; r++) {
                    const uint32_t u = qw[i * nr + r];
                    for (int k = 0; k < per; k++)
                        m->codes[r * C + i * per + k] = (uint8_t)((u >> (bits * k)) & mask);
                }
        }
        for (int64_t r = 0; r < nr; r++) {
            const int64_t zr = r + r0 % per;
            for (int64_t j = 0; j < m->n_groups; j++) {
                const uint32_t z = (qz[j * ncw + zr / per] >> (bits * (zr % per))) & mask;
                m->zeros[r * m->n_groups + j] = (uint16_t)(z + (q->gptq_v1 ? 1 : 0));
                m->scales[r * m->n_groups + j] = s[j * nr + r];
            }
        }
    }
    return packed_end(m, qw && qz && s ? 0 : -1, qw, qz, s);
}

/* compressed-tensors' weight_scale, (rows, groups) or (rows, 1): rows [r0, r1) of groups [g0, g1)
 * into m's scales. */
static int ct_scales(rt_qmat *m, qread *R, const rt_quant *q, const rt_st_file *fs, const rt_st_tensor *ts, int64_t r0,
                     int64_t r1, int64_t g0, int64_t g1)
{
    const bool channel = q->scale == RT_QSCALE_CHANNEL;
    float *s = read_slice(R, fs, ts, true, r0, r1, channel ? 0 : g0, channel ? 1 : g1);
    if (!s)
        return -1;
    for (int64_t r = 0; r < m->rows; r++)
        for (int64_t j = 0; j < m->n_groups; j++)
            m->scales[r * m->n_groups + j] = s[r * (channel ? 1 : g1 - g0) + j];
    free(s);
    return 0;
}

/* compressed-tensors int-quantized and naive-quantized integers (int8_weight): `weight` I8 (rows,
 * cols), the signed values, symmetric; weight_scale as pack-quantized's; weight_g_idx under
 * actorder "group". */
static int read_ct_int8(rt_qmat *m, qread *R, const rt_quant *q, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                        int64_t c0, int64_t c1)
{
    const int64_t g = q->scale == RT_QSCALE_CHANNEL ? cols : q->group_size, ng = cols / g;
    const rt_st_file *fw, *fs;
    const rt_st_tensor *tw, *ts;
    int32_t *order = NULL;
    if (cols % g)
        return base_errf(R->err, "%s: a %lld x %lld weight does not split into groups of %lld", R->module,
                         (long long)rows, (long long)cols, (long long)g);
    if (qfind(R, "weight", "I8", rows, cols, &fw, &tw) ||
        qfind(R, "weight_scale", NULL, rows, q->scale == RT_QSCALE_CHANNEL ? 0 : ng, &fs, &ts) ||
        read_g_idx(R, q, cols, g, &order))
        return -1;
    if (!order && check_cut(R, "column", c0, q->scale == RT_QSCALE_CHANNEL ? 1 : g, "a group")) {
        free(order);
        return -1;
    }
    if (qmat_alloc_int(m, R, q->bits, r1 - r0, c1 - c0, q->scale == RT_QSCALE_CHANNEL ? c1 - c0 : g, false, order,
                       c0, ng))
        return -1;
    const int lo = -(1 << (q->bits - 1)), hi = (1 << (q->bits - 1)) - 1;
    const int64_t g0 = m->gidx ? 0 : c0 / g, g1 = m->gidx ? ng : (c1 + g - 1) / g;
    int8_t *w = read_slice(R, fw, tw, false, r0, r1, c0, c1);
    int rc = w && !ct_scales(m, R, q, fs, ts, r0, r1, g0, g1) ? 0 : -1;
    for (int64_t i = 0; !rc && i < m->rows * m->cols; i++)
        if (w[i] < lo || w[i] > hi)
            rc = base_errf(R->err, "%s: tensor '%s.weight' holds %d, outside the %d-bit range [%d, %d]", fw->path,
                           R->module, (int)w[i], q->bits, lo, hi);
    for (int64_t i = 0; !rc && i < m->rows * m->cols; i++) /* the code: the value plus 2^(bits-1), the zero */
        m->codes[i] = (uint8_t)(w[i] - lo);
    free(w);
    if (rc)
        rt_qmat_free(m);
    return rc;
}

/* compressed-tensors pack-quantized: weight_packed int32 (rows, cols * bits / 32), each row's values
 * packed along the input, value j of a word at bits j * bits, each code its signed value plus
 * 2^(bits-1); weight_scale (rows, groups) or (rows, 1); weight_zero_point int32 (rows * bits / 32,
 * groups) packed along the output, when asymmetric; weight_g_idx (cols) under actorder "group". */
static int read_ct_int(rt_qmat *m, qread *R, const rt_quant *q, int64_t rows, int64_t cols, int64_t r0, int64_t r1,
                       int64_t c0, int64_t c1)
{
    const int bits = q->bits, per = 32 / bits;
    const uint32_t mask = (1u << bits) - 1;
    const int64_t g = q->scale == RT_QSCALE_CHANNEL ? cols : q->group_size, ng = cols / g;
    const rt_st_file *fw, *fs, *fz = NULL;
    const rt_st_tensor *tw, *ts, *tz = NULL;
    int32_t *order = NULL;
    if (cols % g || cols % per || (q->zero_point && rows % per))
        return base_errf(R->err, "%s: a %lld x %lld weight does not pack as %d-bit compressed-tensors (inputs "
                                 "multiples of %d and of the group size %lld%s)", R->module, (long long)rows,
                         (long long)cols, bits, per, (long long)g,
                         q->zero_point ? ", outputs of the zero points' packing" : "");
    if (qfind(R, "weight_packed", "I32", rows, cols / per, &fw, &tw) ||
        qfind(R, "weight_scale", NULL, rows, q->scale == RT_QSCALE_CHANNEL ? 0 : ng, &fs, &ts) ||
        (q->zero_point && qfind(R, "weight_zero_point", "I32", rows / per, ng, &fz, &tz)) ||
        read_g_idx(R, q, cols, g, &order))
        return -1;
    if ((!order && check_cut(R, "column", c0, q->scale == RT_QSCALE_CHANNEL ? per : g, "a group")) ||
        check_cut(R, "column", c0, per, "a packed word") ||
        check_cut(R, "column", c1 == cols ? 0 : c1, per, "a packed word") ||
        (q->zero_point && (check_cut(R, "row", r0, per, "a packed word of zero points") ||
                           check_cut(R, "row", r1 == rows ? 0 : r1, per, "a packed word of zero points")))) {
        free(order);
        return -1;
    }
    if (qmat_alloc_int(m, R, bits, r1 - r0, c1 - c0, q->scale == RT_QSCALE_CHANNEL ? c1 - c0 : g, q->zero_point,
                       order, c0, ng))
        return -1;
    const int64_t g0 = m->gidx ? 0 : c0 / g, g1 = m->gidx ? ng : (c1 + g - 1) / g, nsg = g1 - g0;
    uint32_t *qw = read_slice(R, fw, tw, false, r0, r1, c0 / per, (c1 + per - 1) / per);
    const bool scaled = qw && !ct_scales(m, R, q, fs, ts, r0, r1, g0, g1);
    uint32_t *qz = q->zero_point ? read_slice(R, fz, tz, false, r0 / per, (r1 + per - 1) / per, g0, g1) : NULL;
    const int64_t nw = (c1 + per - 1) / per - c0 / per;
    const int rc = scaled && (qz || !q->zero_point) ? 0 : -1;
    for (int64_t r = 0; !rc && r < m->rows; r++) {
        for (int64_t c = 0; c < m->cols; c++)
            m->codes[r * m->cols + c] = (uint8_t)((qw[r * nw + c / per] >> (bits * (c % per))) & mask);
        for (int64_t j = 0; qz && j < m->n_groups; j++) /* row r0 + r: word (r0 + r) / per of the slice's first */
            m->zeros[r * m->n_groups + j] =
                (uint16_t)((qz[((r0 + r) / per - r0 / per) * nsg + j] >> (bits * ((r0 + r) % per))) & mask);
    }
    return packed_end(m, rc, qw, qz, NULL);
}

int rt_qmat_read(rt_qmat *m, rt_ckpt *ck, const rt_quant *q, const char *module, int64_t rows, int64_t cols,
                 int64_t r0, int64_t r1, int64_t c0, int64_t c1, size_t *bytes, base_err *err)
{
    qread R = {.ck = ck, .module = module, .bytes = bytes, .err = err};
    memset(m, 0, sizeof *m);
    switch (q->method) {
    case RT_QUANT_CT_FP8:
    case RT_QUANT_FP8:
        return read_fp8(m, &R, q, rows, cols, r0, r1, c0, c1);
    case RT_QUANT_AWQ:
        return read_awq(m, &R, q, rows, cols, r0, r1, c0, c1);
    case RT_QUANT_GPTQ:
        return read_gptq(m, &R, q, rows, cols, r0, r1, c0, c1);
    case RT_QUANT_CT_INT:
        return q->int8_weight ? read_ct_int8(m, &R, q, rows, cols, r0, r1, c0, c1)
                              : read_ct_int(m, &R, q, rows, cols, r0, r1, c0, c1);
    case RT_QUANT_NONE:
    case RT_QUANT_LOAD:
        break;
    }
    return base_errf(err, "%s: not a quantized checkpoint's weight", module);
}
