#include "runtime/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/quant.h"
#include "runtime/safetensors.h"

void rt_shard_whole(rt_shard *s, const rt_config *cfg)
{
    *s = (rt_shard){
        .layer_begin = 0, .layer_end = cfg->n_layers,
        .head_begin = 0, .n_heads = cfg->n_heads,
        .kv_head_begin = 0, .n_kv_heads = cfg->n_kv_heads,
        .ffn_begin = 0, .ffn_end = cfg->ffn_dim,
        .vocab_begin = 0, .vocab_end = cfg->vocab_size,
        .first_stage = true, .last_stage = true, .adds_row_bias = true,
    };
}

/* The bytes of a weight (rows, cols) quantized as q says: codes with their scales and zero points,
 * or floats in dt for RT_QUANT_NONE. */
static size_t quant_bytes(const rt_quant *q, size_t rows, size_t cols, rt_dtype dt)
{
    if (q->method == RT_QUANT_NONE)
        return rows * cols * rt_dtype_size(dt);
    const int g = q->scale == RT_QSCALE_GROUP ? q->group_size : q->scale == RT_QSCALE_BLOCK ? q->block_cols : 0;
    const size_t group = g > 0 ? (size_t)g : cols, ng = (cols + group - 1) / group;
    const size_t per_scale = sizeof(float) + (q->kind == RT_QK_INT && q->zero_point ? sizeof(uint16_t) : 0);
    return rows * (cols * (size_t)q->bits / 8 + ng * per_scale);
}

/* The bytes of a linear layer's weight (rows, cols): floats, or codes with their scales and zero
 * points when the model is quantized (modules a checkpoint leaves float are counted as codes), and
 * with `order` an act-order product's input order (down_proj has none: the FFN is relabelled by it;
 * a split that cuts a product's groups holds it as floats instead, more than counted here, which the
 * load says). */
static size_t linear_bytes(const rt_config *c, size_t rows, size_t cols, bool order, rt_dtype dt)
{
    return quant_bytes(&c->quant, rows, cols, dt) + (c->quant.act_order && order ? cols * sizeof(int32_t) : 0);
}

bool rt_shard_head_is_embedding(const rt_config *c, const rt_shard *s)
{
    return c->tie_embeddings && s->first_stage && s->last_stage && c->head_quant.method == RT_QUANT_NONE;
}

size_t rt_shard_weight_bytes(const rt_config *c, const rt_shard *s, rt_dtype dt)
{
    size_t hd = (size_t)c->head_dim, dim = (size_t)c->dim;
    size_t q = (size_t)s->n_heads * hd, kv = (size_t)s->n_kv_heads * hd;
    size_t ffn = (size_t)(s->ffn_end - s->ffn_begin), vocab = (size_t)(s->vocab_end - s->vocab_begin);
    size_t layer = 2 * dim; /* floats: the norms, biases and embeddings */
    if (c->qkv_bias)
        layer += q + 2 * kv;
    if (c->o_bias && s->adds_row_bias)
        layer += dim;
    const size_t layers = (size_t)(s->layer_end - s->layer_begin);
    size_t n = layer * layers;
    if (s->first_stage)
        n += vocab * dim;
    if (s->last_stage)
        n += dim;
    const size_t head =
        s->last_stage && !rt_shard_head_is_embedding(c, s) ? quant_bytes(&c->head_quant, vocab, dim, dt) : 0;
    const size_t linears = linear_bytes(c, q + 2 * kv, dim, true, dt) + linear_bytes(c, dim, q, true, dt) +
                           linear_bytes(c, 2 * ffn, dim, true, dt) + linear_bytes(c, dim, ffn, false, dt);
    return n * rt_dtype_size(dt) + linears * layers + head;
}

void rt_rope_inv_freq(const rt_rope *rope, int head_dim, float *inv_freq)
{
    const double pi = 3.14159265358979323846;
    for (int i = 0; i < head_dim / 2; i++) {
        /* transformers: 1 / theta ** (arange(0, d, 2).float() / d), in fp32 */
        float expo = (float)(2 * i) / (float)head_dim;
        float f = (float)(1.0 / pow(rope->theta, (double)expo));
        if (rope->type == RT_ROPE_LINEAR) {
            f = f / (float)rope->factor;
        } else if (rope->type == RT_ROPE_LLAMA3) {
            double low_wl = rope->orig_max_pos / rope->low_freq_factor;
            double high_wl = rope->orig_max_pos / rope->high_freq_factor;
            double wl = 2 * pi / f;
            if (wl > low_wl) {
                f = f / (float)rope->factor;
            } else if (wl >= high_wl) {
                double smooth = (rope->orig_max_pos / wl - rope->low_freq_factor) /
                                (rope->high_freq_factor - rope->low_freq_factor);
                f = (float)((1 - smooth) * f / rope->factor + smooth * f);
            }
        }
        inv_freq[i] = f;
    }
}

/* ---- loading ---- */

typedef struct loader {
    rt_model *m;
    rt_ckpt ckpt;
    float *stage;   /* host staging buffer, grown as needed */
    size_t stage_n;
    base_err *err;
} loader;

/* Finds tensor `name` and checks that its full shape is (rows, cols) (cols 0 for a vector). */
static int find_shaped(loader *L, const char *name, int64_t rows, int64_t cols, const rt_st_file **f,
                       const rt_st_tensor **t)
{
    if (rt_ckpt_find(&L->ckpt, name, f, t, L->err))
        return -1;
    int want_dims = cols ? 2 : 1;
    const rt_st_tensor *x = *t;
    if (x->n_dims != want_dims || x->shape[0] != rows || (cols && x->shape[1] != cols)) {
        char got[96] = "", *p = got;
        for (int i = 0; i < x->n_dims && p < got + sizeof got - 24; i++)
            p += sprintf(p, "%s%lld", i ? ", " : "", (long long)x->shape[i]);
        if (cols)
            return base_errf(L->err, "%s: tensor '%s' has shape [%s], expected [%lld, %lld] from config.json",
                             (*f)->path, name, got, (long long)rows, (long long)cols);
        return base_errf(L->err, "%s: tensor '%s' has shape [%s], expected [%lld] from config.json", (*f)->path,
                         name, got, (long long)rows);
    }
    return 0;
}

/* The host staging buffer, at least n floats. */
static float *staging(loader *L, size_t n, const char *name)
{
    if (n > L->stage_n) {
        float *ns = realloc(L->stage, n * sizeof *ns);
        if (!ns) {
            base_errf(L->err, "out of host memory staging tensor '%s'", name);
            return NULL;
        }
        L->stage = ns;
        L->stage_n = n;
    }
    return L->stage;
}

/* A new device tensor of rows x cols in the backend's weight type, or dst->data when the caller
 * set it (a view of a fused tensor, sized by the caller). */
static int place(loader *L, rt_tensor *dst, const char *name, int64_t rows, int64_t cols)
{
    rt_backend *be = L->m->be;
    rt_dtype wt = be->ops->act_dtype;
    size_t bytes = (size_t)rows * (size_t)cols * rt_dtype_size(wt);
    void *mem = dst->data ? dst->data : be->ops->alloc(be, bytes);
    if (!dst->data)
        L->m->bytes_held += bytes;
    *dst = (rt_tensor){.data = mem, .dtype = wt, .rows = rows, .cols = cols};
    if (!dst->data)
        return base_errf(L->err, "tensor '%s': cannot allocate %zu bytes on the %s backend", name, bytes, be->ops->name);
    return 0;
}

/* Where fp32 values for dst go: straight into place for fp32 weights in host memory, else staging. */
static float *f32_target(loader *L, rt_tensor *dst, const char *name)
{
    rt_backend *be = L->m->be;
    if (be->ops->host_memory && be->ops->act_dtype == RT_F32)
        return dst->data;
    return staging(L, (size_t)dst->rows * (size_t)dst->cols, name);
}

/* Sends fp32 values at buf (from f32_target) to dst, converting to the weight type. */
static void f32_commit(loader *L, rt_tensor *dst, float *buf)
{
    rt_backend *be = L->m->be;
    if (buf == dst->data)
        return;
    size_t n = (size_t)dst->rows * (size_t)dst->cols;
    if (dst->dtype != RT_F32)
        rt_convert_from_f32(buf, buf, dst->dtype, n); /* narrows in place: output is shorter */
    be->ops->upload(be, dst->data, buf, n * rt_dtype_size(dst->dtype));
}

/* Loads rows [r0, r1) x cols [c0, c1) of tensor `name`, whose full shape must be (rows, cols)
 * (cols 0 for a vector), into a new device tensor, or into dst->data when the caller set it (a view
 * of a fused tensor, sized by the caller). */
static int load(loader *L, rt_tensor *dst, const char *name, int64_t rows, int64_t cols, int64_t r0,
                int64_t r1, int64_t c0, int64_t c1)
{
    const rt_st_file *f;
    const rt_st_tensor *t;
    if (find_shaped(L, name, rows, cols, &f, &t))
        return -1;
    if (!cols)
        c1 = 1;
    if (place(L, dst, name, r1 - r0, cols ? c1 - c0 : 1))
        return -1;
    size_t n = (size_t)(r1 - r0) * (size_t)(c1 - c0);
    rt_backend *be = L->m->be;
    if (!be->ops->host_memory && t->supported && t->dtype == dst->dtype) { /* stored as it will be used */
        float *buf = staging(L, n, name);
        if (!buf || rt_st_read_raw(f, t, r0, r1, c0, c1, buf, L->err))
            return -1;
        be->ops->upload(be, dst->data, buf, n * rt_dtype_size(dst->dtype));
    } else {
        float *buf = f32_target(L, dst, name);
        if (!buf || rt_st_read_f32(f, t, r0, r1, c0, c1, buf, L->err))
            return -1;
        f32_commit(L, dst, buf);
    }
    L->m->bytes_loaded += n * (size_t)t->elem_size;
    return 0;
}

/* A linear layer's slice (of a fused matrix): its module and rows [r0, r1) x cols [c0, c1) of
 * (rows, cols), or with rsel (csel) the rows (columns) rsel[0 .. r1 - r0) in that order instead (a
 * dimension relabelled: ffn_order). */
typedef struct part {
    const char *module; /* after "model.layers.L." */
    int64_t rows, cols, r0, r1, c0, c1;
    const int32_t *rsel, *csel;
} part;

/* The quantized form of p's slice of a linear layer's weight (module "model.layers.L.mlp.down_proj",
 * ...): as the checkpoint stores it, or as at_load says when its method is RT_QUANT_LOAD
 * (--quantize's, --quantize-lm-head's; NULL: not at load). 1 when it stays float. */
static int read_qmat(loader *L, const char *module, const part *p, const rt_quant *at_load, rt_qmat *qm)
{
    const int64_t rows = p->rows, cols = p->cols, r0 = p->r0, r1 = p->r1, c0 = p->c0, c1 = p->c1;
    const rt_quant *q = &L->m->cfg.quant;
    char name[320];
    snprintf(name, sizeof name, "%s.weight", module);
    if (at_load && at_load->method == RT_QUANT_LOAD) {
        q = at_load;
        /* whole rows: a row's scale (and group boundaries) must not depend on the split */
        const rt_st_file *f;
        const rt_st_tensor *t;
        float *full = malloc((size_t)(r1 - r0) * (size_t)cols * sizeof *full + 1);
        int rc = !full ? base_errf(L->err, "out of host memory quantizing '%s'", name)
                 : find_shaped(L, name, rows, cols, &f, &t) || rt_st_read_f32(f, t, r0, r1, 0, cols, full, L->err) ||
                         rt_qmat_quantize(qm, q, full, r1 - r0, cols, c0, c1, name, L->err)
                     ? -1
                     : 0;
        if (!rc)
            L->m->bytes_loaded += (size_t)(r1 - r0) * (size_t)cols * (size_t)t->elem_size;
        free(full);
        return rc;
    }
    if (q->method == RT_QUANT_NONE || q->method == RT_QUANT_LOAD || !rt_quant_stored(&L->ckpt, q, module))
        return p->rsel || p->csel ? base_errf(L->err, "%s: a relabelled dimension needs its weight quantized", module)
                                  : 1;
    /* a selection: the whole dimension, then its rows (columns) */
    if (rt_qmat_read(qm, &L->ckpt, q, module, rows, cols, p->rsel ? 0 : r0, p->rsel ? rows : r1, p->csel ? 0 : c0,
                     p->csel ? cols : c1, &L->m->bytes_loaded, L->err))
        return -1;
    if ((p->rsel && rt_qmat_take_rows(qm, p->rsel, r1 - r0, L->err)) ||
        (p->csel && rt_qmat_take_cols(qm, p->csel, c1 - c0, L->err))) {
        rt_qmat_free(qm);
        return -1;
    }
    return 0;
}

/* A linear layer's weight as floats in the backend's type: as stored, or dequantized. */
static int load_linear(loader *L, rt_tensor *dst, const char *module, const part *p, const rt_quant *at_load)
{
    const int64_t rows = p->rows, cols = p->cols, r0 = p->r0, r1 = p->r1, c0 = p->c0, c1 = p->c1;
    rt_qmat qm;
    int rc = read_qmat(L, module, p, at_load, &qm);
    if (rc < 0)
        return -1;
    if (rc == 1) {
        char name[320];
        snprintf(name, sizeof name, "%s.weight", module);
        return load(L, dst, name, rows, cols, r0, r1, c0, c1);
    }
    float *buf = NULL;
    rc = place(L, dst, module, r1 - r0, c1 - c0);
    if (!rc && !(buf = f32_target(L, dst, module)))
        rc = -1;
    if (!rc) {
        rt_qmat_dequantize(&qm, buf);
        f32_commit(L, dst, buf);
    }
    rt_qmat_free(&qm);
    return rc;
}

/* Whether quantized slices can share one device tensor: the same kind of codes and scales. */
static bool stackable(const rt_qmat *m, int n)
{
    for (int i = 0; i < n; i++)
        if (m[i].kind != m[0].kind || m[i].bits != m[0].bits || m[i].cols != m[0].cols || m[i].group != m[0].group ||
            m[i].n_groups != m[0].n_groups || !m[i].zeros != !m[0].zeros || (m[i].bits == 4 && m[i].cols % 2) ||
            m[i].gidx)
            return false;
    return true;
}

/* Act-order slices (gidx) with their groups put back in runs, into one column order for all of
 * them (they share their input): *perm (malloc'd, cols) that order, NULL when every slice is in
 * order. When they cannot share one (the caller loads them as floats): 1 for orders that differ
 * (some in order and some not), 2 for a slice holding part of a group. */
static int order_parts(loader *L, rt_qmat *m, int n, int32_t **perm)
{
    *perm = NULL;
    int with = 0;
    for (int i = 0; i < n; i++)
        with += m[i].gidx != NULL;
    if (!with)
        return 0;
    if (with < n)
        return 1;
    int32_t *p = malloc(2 * (size_t)m[0].cols * sizeof *p + 1);
    if (!p)
        return base_errf(L->err, "out of host memory ordering act-order groups");
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        if (m[i].cols != m[0].cols)
            rc = 1;
        else if ((rc = rt_qmat_order(&m[i], i ? p + m[0].cols : p, L->err)) > 0)
            rc = 2;
        if (!rc && i && memcmp(p, p + m[0].cols, (size_t)m[0].cols * sizeof *p) != 0)
            rc = 1;
    }
    bool identity = !rc;
    for (int64_t c = 0; identity && c < m[0].cols; c++)
        identity = p[c] == (int32_t)c;
    if (rc || identity) { /* identity: the slices' groups were runs already (a relabelled FFN's down_proj) */
        free(p);
        return rc;
    }
    *perm = p;
    return 0;
}

/* Quantized slices stacked by rows into one device tensor, as the backend's matmul reads it; perm
 * (cols, or NULL) their shared input order (order_parts). */
static int place_quant(loader *L, rt_tensor *dst, const rt_qmat *m, int n, const int32_t *perm, const char *what)
{
    rt_backend *be = L->m->be;
    const int64_t cols = m[0].cols, ng = m[0].n_groups, row_bytes = rt_qmat_row_bytes(&m[0]);
    int64_t rows = 0;
    for (int i = 0; i < n; i++)
        rows += m[i].rows;
    const size_t nc = (size_t)(rows * row_bytes), ns = (size_t)(rows * ng);
    uint8_t *codes = malloc(nc + 1);
    float *scales = malloc(ns * sizeof *scales + 1);
    uint16_t *zeros = m[0].zeros ? malloc(ns * sizeof *zeros + 1) : NULL;
    void *dc = be->ops->alloc(be, nc), *ds = be->ops->alloc(be, ns * sizeof *scales);
    void *dz = m[0].zeros ? be->ops->alloc(be, ns * sizeof *zeros) : NULL;
    *dst = (rt_tensor){.data = dc, .dtype = be->ops->act_dtype, .rows = rows, .cols = cols,
                       .q = {.kind = m[0].kind, .bits = m[0].bits, .group = m[0].group, .n_groups = ng,
                             .scales = ds, .zeros = dz}};
    const size_t np = perm ? (size_t)cols * sizeof *perm : 0;
    dst->q.perm = perm ? be->ops->alloc(be, np) : NULL;
    L->m->bytes_held += nc + ns * sizeof *scales + (dz ? ns * sizeof *zeros : 0) + np;
    int rc = 0;
    if (!codes || !scales || (m[0].zeros && !zeros))
        rc = base_errf(L->err, "%s: out of host memory", what);
    else if (!dc || !ds || (m[0].zeros && !dz) || (perm && !dst->q.perm))
        rc = base_errf(L->err, "%s: cannot allocate %zu bytes on the %s backend", what, nc + ns * 6 + np,
                       be->ops->name);
    for (int i = 0, r0 = 0; !rc && i < n; r0 += (int)m[i].rows, i++) {
        rt_qmat_pack_codes(&m[i], codes + r0 * row_bytes);
        memcpy(scales + r0 * ng, m[i].scales, (size_t)(m[i].rows * ng) * sizeof *scales);
        if (zeros)
            memcpy(zeros + r0 * ng, m[i].zeros, (size_t)(m[i].rows * ng) * sizeof *zeros);
    }
    if (!rc) {
        be->ops->upload(be, dc, codes, nc);
        be->ops->upload(be, ds, scales, ns * sizeof *scales);
        if (dz)
            be->ops->upload(be, dz, zeros, ns * sizeof *zeros);
        if (perm)
            be->ops->upload(be, dst->q.perm, perm, np);
    }
    free(codes);
    free(scales);
    free(zeros);
    return rc;
}

/* A tensor of rows x cols for the parts to be loaded into (views at row offsets). */
static int fused(loader *L, rt_tensor *t, int64_t rows, int64_t cols, const char *what)
{
    rt_backend *be = L->m->be;
    const rt_dtype wt = be->ops->act_dtype;
    size_t bytes = (size_t)rows * (size_t)cols * rt_dtype_size(wt);
    *t = (rt_tensor){.data = be->ops->alloc(be, bytes), .dtype = wt, .rows = rows, .cols = cols};
    L->m->bytes_held += bytes;
    if (!t->data)
        return base_errf(L->err, "%s: cannot allocate %zu bytes on the %s backend", what, bytes, be->ops->name);
    return 0;
}

/* The matrix in the backend's layout for matmul. */
static int prepare(loader *L, rt_tensor *w)
{
    rt_backend *be = L->m->be;
    if (be->ops->prepare_weight && be->ops->prepare_weight(be, w))
        return base_errf(L->err, "out of memory laying out a %lld x %lld weight for the %s backend",
                         (long long)w->rows, (long long)w->cols, be->ops->name);
    return 0;
}

static rt_tensor view(const rt_tensor *t, int64_t row)
{
    return (rt_tensor){.data = (char *)t->data + (size_t)row * (size_t)t->cols * rt_dtype_size(t->dtype),
                       .dtype = t->dtype};
}

/* The parts (1 to 3) stacked by rows into dst: quantized when the backend's matmul reads codes and
 * every part is quantized alike; else floats in the backend's type, laid out for its matmul. */
static int load_linears(loader *L, int layer, rt_tensor *dst, const part *p, int n, const char *what)
{
    char module[3][256];
    for (int i = 0; i < n; i++)
        snprintf(module[i], sizeof module[i], "model.layers.%d.%s", layer, p[i].module);
    if (L->m->be->ops->quant_matmul && L->m->cfg.quant.method != RT_QUANT_NONE) {
        rt_qmat qm[3];
        int got = 0, rc = 0;
        while (got < n && (rc = read_qmat(L, module[got], &p[got], &L->m->cfg.quant, &qm[got])) == 0)
            got++;
        int32_t *perm = NULL;
        int ordered = got == n ? order_parts(L, qm, n, &perm) : 1;
        if (ordered < 0)
            rc = -1;
        else if (got == n && ordered == 0 && stackable(qm, n))
            rc = place_quant(L, dst, qm, n, perm, what);
        else if (got == n && ordered == 2)
            L->m->act_order_cut++;
        else if (got == n && ordered == 1)
            L->m->act_order_mixed++;
        free(perm);
        for (int i = 0; i < got; i++)
            rt_qmat_free(&qm[i]);
        if (rc < 0 || (got == n && dst->q.kind))
            return rc < 0 ? -1 : prepare(L, dst);
        /* a part left float, parts quantized unlike each other, or act-order parts without one
         * shared order of whole groups: the whole matrix as floats (dequantized through gidx) */
    }
    if (n > 1) {
        int64_t rows = 0;
        for (int i = 0; i < n; i++)
            rows += p[i].r1 - p[i].r0;
        if (fused(L, dst, rows, p[0].c1 - p[0].c0, what))
            return -1;
    }
    for (int i = 0, off = 0; i < n; off += (int)(p[i].r1 - p[i].r0), i++) {
        rt_tensor v = n > 1 ? view(dst, off) : (rt_tensor){0};
        if (load_linear(L, n > 1 ? &v : dst, module[i], &p[i], &L->m->cfg.quant))
            return -1;
    }
    return prepare(L, dst);
}

/* The LM head's rows [v0, v1) of (V, dim), quantized as --quantize-lm-head says from the float
 * weight of `module` (lm_head, or the tied embedding). */
static int load_head_quantized(loader *L, rt_tensor *dst, const char *module, int64_t V, int64_t dim, int64_t v0,
                               int64_t v1)
{
    rt_backend *be = L->m->be;
    if (!be->ops->quant_matmul)
        return base_errf(L->err, "--quantize-lm-head: the %s backend does not multiply quantized weights",
                         be->ops->name);
    rt_qmat qm;
    const part hp = {module, V, dim, v0, v1, 0, dim, NULL, NULL};
    if (read_qmat(L, module, &hp, &L->m->cfg.head_quant, &qm))
        return -1;
    const int rc = place_quant(L, dst, &qm, 1, NULL, "the quantized LM head");
    rt_qmat_free(&qm);
    return rc ? -1 : prepare(L, dst);
}

/* The checkpoint's static FP8 KV-cache scale `which` ("k_scale", "v_scale") of layer l for this
 * rank's KV heads, into out (n_kv_heads): one a layer (shape [] or [1]) or one a KV head. */
static int load_kv_scale(loader *L, int l, const char *which, float *out)
{
    const rt_config *c = &L->m->cfg;
    const rt_shard *s = &L->m->shard;
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.self_attn.%s", l, which);
    const rt_st_file *f;
    const rt_st_tensor *t;
    if (rt_ckpt_find(&L->ckpt, name, &f, &t, L->err)) {
        char why[sizeof L->err->msg];
        snprintf(why, sizeof why, "%s", L->err->msg);
        return base_errf(L->err, "%s (quantization_config.kv_cache_scheme names the KV-cache scales)", why);
    }
    const bool per_head = c->quant.kv_scales == RT_KV_SCALES_HEAD;
    const int64_t want = per_head ? c->n_kv_heads : 1;
    if (!t->supported || t->n_dims > 1 || (t->n_dims == 1 && t->shape[0] != want) || (t->n_dims == 0 && per_head))
        return base_errf(L->err, "%s: tensor '%s' must be %s of F32, F16 or BF16 (kv_cache_scheme strategy %s); it "
                                 "has %d dimension(s) of %s",
                         f->path, name, per_head ? "one value a KV head" : "one value", per_head ? "attn_head" : "tensor",
                         t->n_dims, t->dtype_name);
    float *v = staging(L, (size_t)c->n_kv_heads, name);
    if (!v)
        return -1;
    const int64_t first = per_head ? s->kv_head_begin : 0, n = per_head ? s->n_kv_heads : 1;
    if (t->n_dims == 0)
        rt_convert_to_f32(v, f->data + t->begin, t->dtype, 1);
    else if (rt_st_read_f32(f, t, first, first + n, 0, 1, v, L->err))
        return -1;
    for (int64_t i = 0; i < n; i++)
        if (!(v[i] > 0.0f) || !isfinite(v[i]))
            return base_errf(L->err, "%s: tensor '%s' holds %g: a scale must be positive and finite", f->path, name,
                             (double)v[i]);
    for (int h = 0; h < s->n_kv_heads; h++)
        out[h] = v[per_head ? h : 0];
    L->m->bytes_loaded += (size_t)n * (size_t)t->elem_size;
    return 0;
}

/* Act order: the FFN relabelled by down_proj's input order (rt_quant_input_order), so that down's
 * groups are runs: a --tp split then hands each rank whole groups, and no step gathers down's inputs;
 * gate's and up's rows move with them. *order (malloc'd, ffn_dim) the checkpoint's FFN index of each
 * new one, or NULL: no relabelling (in order, or a weight of the three held float). */
static int ffn_order(loader *L, int l, int32_t **order)
{
    const rt_quant *q = &L->m->cfg.quant;
    static const char *const mods[] = {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"};
    char m[3][256];
    bool stored = q->act_order && L->m->be->ops->quant_matmul;
    for (int i = 0; i < 3; i++) {
        snprintf(m[i], sizeof m[i], "model.layers.%d.%s", l, mods[i]);
        stored = stored && rt_quant_stored(&L->ckpt, q, m[i]);
    }
    *order = NULL;
    return stored ? rt_quant_input_order(&L->ckpt, q, m[2], L->m->cfg.ffn_dim, order, L->err) : 0;
}

static int load_layer(loader *L, int l, rt_layer_weights *w)
{
    const rt_config *c = &L->m->cfg;
    const rt_shard *s = &L->m->shard;
    const int64_t dim = c->dim, hd = c->head_dim, ffn = c->ffn_dim;
    const int64_t q0 = s->head_begin * hd, q1 = (s->head_begin + s->n_heads) * hd;
    const int64_t k0 = s->kv_head_begin * hd, k1 = (s->kv_head_begin + s->n_kv_heads) * hd;
    const int64_t nq = c->n_heads * hd, nkv = c->n_kv_heads * hd;
    char n[256];
#define NAME(suffix) (snprintf(n, sizeof n, "model.layers.%d.%s", l, suffix), n)
    const int64_t lq = q1 - q0, lkv = k1 - k0;
    const part qkv[3] = {{"self_attn.q_proj", nq, dim, q0, q1, 0, dim, NULL, NULL},
                         {"self_attn.k_proj", nkv, dim, k0, k1, 0, dim, NULL, NULL},
                         {"self_attn.v_proj", nkv, dim, k0, k1, 0, dim, NULL, NULL}};
    int32_t *order;
    if (ffn_order(L, l, &order))
        return -1;
    const int32_t *sel = order ? order + s->ffn_begin : NULL;
    const part o = {"self_attn.o_proj", dim, nq, 0, dim, q0, q1, NULL, NULL};
    const part gate_up[2] = {{"mlp.gate_proj", ffn, dim, s->ffn_begin, s->ffn_end, 0, dim, sel, NULL},
                             {"mlp.up_proj", ffn, dim, s->ffn_begin, s->ffn_end, 0, dim, sel, NULL}};
    const part down = {"mlp.down_proj", dim, ffn, 0, dim, s->ffn_begin, s->ffn_end, NULL, sel};
    const int rc = (c->qkv_bias && fused(L, &w->bqkv, lq + 2 * lkv, 1, "the fused QKV bias")) ||
                   load(L, &w->attn_norm, NAME("input_layernorm.weight"), dim, 0, 0, dim, 0, 0) ||
                   load_linears(L, l, &w->wqkv, qkv, 3, "the fused QKV weight") ||
                   load_linears(L, l, &w->wo, &o, 1, "o_proj") ||
                   load(L, &w->ffn_norm, NAME("post_attention_layernorm.weight"), dim, 0, 0, dim, 0, 0) ||
                   load_linears(L, l, &w->w_gate_up, gate_up, 2, "the fused gate/up weight") ||
                   load_linears(L, l, &w->w_down, &down, 1, "down_proj");
    free(order);
    if (rc)
        return -1;
    if (c->qkv_bias) {
        rt_tensor bq = view(&w->bqkv, 0), bk = view(&w->bqkv, lq), bv = view(&w->bqkv, lq + lkv);
        if (load(L, &bq, NAME("self_attn.q_proj.bias"), nq, 0, q0, q1, 0, 0) ||
            load(L, &bk, NAME("self_attn.k_proj.bias"), nkv, 0, k0, k1, 0, 0) ||
            load(L, &bv, NAME("self_attn.v_proj.bias"), nkv, 0, k0, k1, 0, 0))
            return -1;
    }
    if (c->o_bias && s->adds_row_bias && load(L, &w->bo, NAME("self_attn.o_proj.bias"), dim, 0, 0, dim, 0, 0))
        return -1;
    if (c->quant.kv_scales != RT_KV_SCALES_NONE) {
        if (!(w->kv_scales = malloc(2 * (size_t)s->n_kv_heads * sizeof *w->kv_scales)))
            return base_errf(L->err, "out of host memory");
        if (load_kv_scale(L, l, "k_scale", w->kv_scales) || load_kv_scale(L, l, "v_scale", w->kv_scales + s->n_kv_heads))
            return -1;
    }
#undef NAME
    return 0;
}

int rt_model_load(rt_model *m, const rt_config *cfg, const rt_shard *shard, const char *dir,
                  rt_backend *be, base_err *err)
{
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->shard = *shard;
    m->be = be;
    loader L = {.m = m, .err = err};
    if (rt_ckpt_open(&L.ckpt, dir, err))
        return -1;
    int rc = 0;
    m->n_layers = shard->layer_end - shard->layer_begin;
    m->layers = calloc(m->n_layers ? (size_t)m->n_layers : 1, sizeof *m->layers);
    if (!m->layers) {
        rc = base_errf(err, "out of host memory");
        goto out;
    }
    const int64_t dim = cfg->dim, V = cfg->vocab_size;
    const int64_t v0 = shard->vocab_begin, v1 = shard->vocab_end;
    if (shard->first_stage && (rc = load(&L, &m->embed, "model.embed_tokens.weight", V, dim, v0, v1, 0, dim)))
        goto out;
    for (int l = 0; l < m->n_layers; l++)
        if ((rc = load_layer(&L, shard->layer_begin + l, &m->layers[l])))
            goto out;
    if (shard->last_stage) {
        const part head = {"lm_head", V, dim, v0, v1, 0, dim, NULL, NULL};
        if ((rc = load(&L, &m->final_norm, "model.norm.weight", dim, 0, 0, dim, 0, 0)))
            goto out;
        if (rt_shard_head_is_embedding(cfg, shard))
            m->lm_head = m->embed;
        else if (cfg->head_quant.method != RT_QUANT_NONE) {
            if ((rc = load_head_quantized(&L, &m->lm_head, cfg->tie_embeddings ? "model.embed_tokens" : "lm_head", V,
                                          dim, v0, v1)))
                goto out;
        } else if ((rc = cfg->tie_embeddings
                             ? load(&L, &m->lm_head, "model.embed_tokens.weight", V, dim, v0, v1, 0, dim)
                             : load_linear(&L, &m->lm_head, "lm_head", &head, NULL)) ||
                   (rc = prepare(&L, &m->lm_head))) /* tied: the embedding's rows, read as rows */
            goto out;
    }
out:
    free(L.stage);
    rt_ckpt_close(&L.ckpt);
    if (be->ops->check(be, err)) /* a failed upload to the device */
        rc = -1;
    if (rc)
        rt_model_free(m);
    return rc;
}

static void free_tensor(rt_backend *be, rt_tensor *t)
{
    void *bufs[] = {t->data, t->q.scales, t->q.zeros, t->q.perm};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i])
            be->ops->free(be, bufs[i]);
    t->data = NULL;
    t->q.scales = NULL;
    t->q.zeros = NULL;
    t->q.perm = NULL;
}

void rt_layer_tensors(rt_layer_weights *w, rt_tensor *out[RT_LAYER_TENSORS])
{
    rt_tensor *ts[RT_LAYER_TENSORS] = {&w->attn_norm, &w->wqkv, &w->bqkv, &w->wo,
                                       &w->bo, &w->ffn_norm, &w->w_gate_up, &w->w_down};
    memcpy(out, ts, sizeof ts);
}

void rt_model_free(rt_model *m)
{
    if (!m->be)
        return;
    for (int l = 0; m->layers && l < m->n_layers; l++) {
        rt_tensor *ts[RT_LAYER_TENSORS];
        rt_layer_tensors(&m->layers[l], ts);
        for (int i = 0; i < RT_LAYER_TENSORS; i++)
            free_tensor(m->be, ts[i]);
        free(m->layers[l].kv_scales);
    }
    free(m->layers);
    if (m->lm_head.data == m->embed.data)
        m->lm_head.data = NULL;
    free_tensor(m->be, &m->embed);
    free_tensor(m->be, &m->lm_head);
    free_tensor(m->be, &m->final_norm);
    memset(m, 0, sizeof *m);
}
