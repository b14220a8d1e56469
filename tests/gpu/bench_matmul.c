/* bench_matmul: one backend's matmul on the 8B (or 1B) shape's four layer products (and its LM head when
 * --products names lm_head: by default left out, its 525M weights take seconds to make), float and
 * quantized, without a model (a kernel change measured in seconds, not a model load): each product
 * timed over many launches, its weight bytes over the time, and that as a share of the measured
 * copy bandwidth.
 *
 *   bench_matmul [--device cuda|cpu] [--rows 1,16,64] [--formats bf16,fp8,int8,int4]
 *                [--products qkv,o,gate_up,down,lm_head] [--iters N] [--small] [--fused] [--layer]
 *                [--shape 8b|1b]
 *
 * Formats: bf16 (the backend's compute type: BF16 on CUDA, F32 on the CPU), fp8 (a scale a row),
 * fp8-block (128 x 128), int8 (symmetric, a scale a row), int4 (groups of 128 with zero points,
 * AWQ's), int4-g32 (groups of 32, symmetric). --small: shapes 16x smaller (a smoke run on a CPU).
 * The weights are random, quantized as --quantize does; the activations random. Timing: the
 * launches of one product back to back, each on the next of enough copies of the weight that none
 * is still in the L2 cache, then one sync: the device's time per product with launch overheads
 * overlapped, as in a CUDA graph. Not a test: prints figures.
 *
 * --fused: each product also as a decode layer runs it op by op (qkv after its RMSNorm, o and down
 * before the residual add and the next norm, gate/up with its norm before and SiLU-multiply after)
 * and as the backend's fused chain does (matmul_fused), where the backend has one.
 *
 * --layer: then the four products of a decode layer back to back (each way, over copies of the
 * layer's weights taken in turn), the pattern of a decode step, where a product's launch follows
 * the one before it; with the sum of the four timed alone beside it. A product faster alone that
 * is not faster here shows the step will not be either. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/clock.h"
#include "runtime/backend.h"
#include "runtime/dtype.h"
#include "runtime/quant.h"
#include "runtime/sampler.h"
#ifdef DINFER_HAVE_CUDA
#include "runtime/cuda/cuda_device.h"
#endif

typedef struct shape {
    const char *name;
    int N, K;
} shape;

#define COPIES 64

/* a decode layer's four products (LAYER_PRODUCTS), then the LM head (only when --products names it):
 * the 8B shape's (Llama 3.1 8B) or, under --shape 1b, the 1B's (Llama 3.2 1B) */
#define N_SHAPES 5
static const shape shapes_8b[N_SHAPES] = {{"qkv", 6144, 4096},   {"o", 4096, 4096},         {"gate_up", 28672, 4096},
                                          {"down", 4096, 14336}, {"lm_head", 128256, 4096}};
static const shape shapes_1b[N_SHAPES] = {{"qkv", 3072, 2048},  {"o", 2048, 2048},         {"gate_up", 16384, 2048},
                                          {"down", 2048, 8192}, {"lm_head", 128256, 2048}};
static const shape *shapes = shapes_8b;
#define LAYER_PRODUCTS 4

typedef struct format {
    const char *name;
    rt_quant q; /* method RT_QUANT_NONE: the compute type */
} format;

static const format formats[] = {
    {"bf16", {0}},
    {"fp8", {.method = RT_QUANT_LOAD, .kind = RT_QK_FP8, .scale = RT_QSCALE_CHANNEL, .bits = 8}},
    {"fp8-block",
     {.method = RT_QUANT_LOAD, .kind = RT_QK_FP8, .scale = RT_QSCALE_BLOCK, .bits = 8, .block_rows = 128,
      .block_cols = 128}},
    {"int8", {.method = RT_QUANT_LOAD, .kind = RT_QK_INT, .scale = RT_QSCALE_CHANNEL, .bits = 8}},
    {"int4",
     {.method = RT_QUANT_LOAD, .kind = RT_QK_INT, .scale = RT_QSCALE_GROUP, .bits = 4, .group_size = 128,
      .zero_point = true}},
    {"int4-g32", {.method = RT_QUANT_LOAD, .kind = RT_QK_INT, .scale = RT_QSCALE_GROUP, .bits = 4, .group_size = 32}},
};

static int fail(const char *msg)
{
    fprintf(stderr, "bench_matmul: %s\n", msg);
    return 1;
}

/* Device memory holding n host bytes (NULL when out of memory). */
static void *up(rt_backend *be, const void *h, size_t n)
{
    void *d = be->ops->alloc(be, n);
    if (d)
        be->ops->upload(be, d, h, n);
    return d;
}

/* The weight (N, K) in format f on the backend; *bytes: what a product reads of it. */
static int make_weight(rt_backend *be, const format *f, const float *w, int N, int K, rt_tensor *t, size_t *bytes)
{
    const rt_dtype dt = be->ops->act_dtype;
    memset(t, 0, sizeof *t);
    t->rows = N, t->cols = K, t->dtype = dt;
    if (f->q.method == RT_QUANT_NONE) {
        const size_t n = (size_t)N * K * rt_dtype_size(dt);
        void *h = malloc(n);
        if (!h)
            return -1;
        rt_convert_from_f32(h, w, dt, (size_t)N * K);
        t->data = up(be, h, n);
        free(h);
        *bytes = n;
        if (t->data && be->ops->prepare_weight && be->ops->prepare_weight(be, t))
            return -1;
        return t->data ? 0 : -1;
    }
    rt_qmat m;
    base_err err;
    if (rt_qmat_quantize(&m, &f->q, w, N, K, 0, K, f->name, &err)) {
        fail(err.msg);
        return -1;
    }
    const size_t nc = (size_t)(N * rt_qmat_row_bytes(&m)), ns = (size_t)(N * m.n_groups);
    uint8_t *codes = malloc(nc);
    if (!codes) {
        rt_qmat_free(&m);
        return -1;
    }
    rt_qmat_pack_codes(&m, codes);
    t->data = up(be, codes, nc);
    t->q = (rt_tensor_quant){.kind = m.kind, .bits = m.bits, .group = m.group, .n_groups = m.n_groups,
                             .scales = up(be, m.scales, ns * sizeof(float)),
                             .zeros = m.zeros ? up(be, m.zeros, ns * sizeof(uint16_t)) : NULL};
    *bytes = nc + ns * (sizeof(float) + (m.zeros ? sizeof(uint16_t) : 0));
    int rc = !t->data || !t->q.scales || (m.zeros && !t->q.zeros) ? -1 : 0;
    if (!rc && be->ops->prepare_weight && be->ops->prepare_weight(be, t)) /* the loader's layout */
        rc = -1;
    free(codes);
    rt_qmat_free(&m);
    return rc;
}

static void free_weight(rt_backend *be, rt_tensor *t)
{
    be->ops->free(be, t->data);
    if (t->q.scales)
        be->ops->free(be, t->q.scales);
    if (t->q.zeros)
        be->ops->free(be, t->q.zeros);
}

/* The comma-separated list's next item from *p: its start and length; false at the end. */
static bool next_item(const char **p, const char **item, size_t *len)
{
    if (!**p)
        return false;
    const char *end = strchr(*p, ',');
    *item = *p, *len = end ? (size_t)(end - *p) : strlen(*p);
    *p += *len + (end ? 1 : 0);
    return true;
}

/* Whether name is one of the comma-separated list's items. */
static bool listed(const char *list, const char *name)
{
    const char *item;
    size_t len;
    while (next_item(&list, &item, &len))
        if (len == strlen(name) && strncmp(item, name, len) == 0)
            return true;
    return false;
}

/* Whether every item of the comma-separated list is the name field of one of n records of size
 * stride from base (the formats or shapes table); the first that is not goes to bad. */
static bool all_known(const char *list, const void *base, size_t n, size_t stride, char *bad, size_t bad_size)
{
    const char *item;
    size_t len;
    while (next_item(&list, &item, &len)) {
        bool found = false;
        for (size_t i = 0; i < n && !found; i++) {
            const char *name = *(const char *const *)((const char *)base + i * stride);
            found = strlen(name) == len && strncmp(item, name, len) == 0;
        }
        if (!found) {
            snprintf(bad, bad_size, "%.*s", (int)len, item);
            return false;
        }
    }
    return true;
}

/* The comma-separated list s as ints (at most max). */
static int parse_ints(const char *s, int *out, int max)
{
    int n = 0;
    for (const char *p = s; *p && n < max;) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 65536)
            return -1;
        out[n++] = (int)v;
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',')
            return -1;
    }
    return n;
}

/* The device buffers of --fused's neighbouring ops (maxr rows of the widest shape). */
typedef struct around {
    void *res, *xb, *gu, *g;
    float *ss;
    rt_tensor norm_k, norm_n;
} around;

enum { PLAIN, BY_OP, FUSED };
static const char *const way_name[] = {"", "+ops", "fused"};

/* Product si of the shapes on weight t at n rows, as `way` runs it. */
static void run_way(rt_backend *be, int way, size_t si, const rt_tensor *t, void *dx, void *dout, around *a, int n)
{
    const rt_backend_ops *op = be->ops;
    const rt_tensor none = {0};
    const float eps = 1e-5f;
    const bool residual = si == 1 || si == 3, norm = !residual, silu = si == 2;
    if (way == PLAIN) {
        op->matmul(be, dout, dx, t, &none, n);
    } else if (way == FUSED) {
        const rt_fusion f = {.norm_ss = norm ? a->ss : NULL, .eps = eps, .residual = residual,
                             .next_norm = residual ? &a->norm_n : NULL, .xg = a->xb, .ss = a->ss + n * RT_FUSION_SS_STRIDE,
                             .silu = silu};
        op->matmul_fused(be, residual ? a->res : dout, dx, t, &none, &f, n);
    } else if (residual) {
        op->matmul(be, dout, dx, t, &none, n);
        op->add_rmsnorm(be, a->res, dout, a->xb, &a->norm_n, n, eps);
    } else {
        op->rmsnorm(be, a->xb, dx, &a->norm_k, n, eps);
        op->matmul(be, silu ? a->gu : dout, a->xb, t, &none, n);
        if (silu)
            op->silu_mul(be, dout, a->gu, n, (int)t->rows / 2);
    }
}

/* Seconds a run of products takes as `way` runs them: products si[0..np) on copies of their weights
 * (t[copy * np + p]) taken in turn, after a warm-up over every copy (algorithm choices); -1 with a
 * message when the backend failed. */
static double time_products(rt_backend *be, int way, const size_t *si, int np, const rt_tensor *t, int copies,
                            int iters, void *dx, void *dout, around *a, int n)
{
    for (int i = 0; i < copies; i++)
        for (int p = 0; p < np; p++)
            run_way(be, way, si[p], &t[i * np + p], dx, dout, a, n);
    be->ops->sync(be);
    const double t0 = base_now();
    for (int i = 0; i < iters; i++)
        for (int p = 0; p < np; p++)
            run_way(be, way, si[p], &t[(i % copies) * np + p], dx, dout, a, n);
    be->ops->sync(be);
    const double s = (base_now() - t0) / iters;
    base_err err;
    if (be->ops->check(be, &err)) {
        fail(err.msg);
        return -1;
    }
    return s;
}

/* A line's figures (no newline): the product as `way` runs it, its time, bytes over the time, and
 * that as a share of the copy bandwidth where one was measured. */
static void print_row(const char *product, int way, const char *format, int n, double s, size_t bytes, double copy)
{
    char name[32];
    snprintf(name, sizeof name, "%s%s%s", product, way ? " " : "", way_name[way]);
    const double gbs = (double)bytes / s / 1e9;
    printf("%-14s %-9s %5d %10.1f %9.1f", name, format, n, s * 1e6, gbs);
    printf(copy > 0 ? " %5.0f%%" : "       ", 100.0 * gbs * 1e9 / copy);
}

/* --layer for format f at n rows: a line a way, the layer's time and the sum of its products alone
 * (alone[way], us). */
static int bench_layer(rt_backend *be, const format *f, int n, int iters, bool small, bool fused, double copy,
                       around *ar, void *dx, void *dout, const float *const *w, const double *alone)
{
    enum { NS = LAYER_PRODUCTS, MAXC = 8 };
    rt_tensor t[MAXC][NS];
    size_t bytes = 0;
    int copies = 0;
    do { /* enough copies that none is still in the L2 cache when its turn comes again */
        for (size_t si = 0; si < NS; si++) {
            size_t b;
            if (make_weight(be, f, w[si], shapes[si].N / (small ? 16 : 1), shapes[si].K / (small ? 16 : 1),
                            &t[copies][si], &b))
                return fail("cannot make the layer's weights");
            if (copies == 0)
                bytes += b;
        }
        copies++;
    } while (copies < MAXC && (copies < 2 || (size_t)copies * bytes < ((size_t)256 << 20)));
    const int dim = shapes[1].N / (small ? 16 : 1);
    ar->norm_k = ar->norm_n = (rt_tensor){.data = ar->g, .dtype = be->ops->act_dtype, .rows = dim, .cols = 1};
    const size_t si[NS] = {0, 1, 2, 3};
    for (int way = PLAIN; way <= (fused ? FUSED : PLAIN); way++) {
        if (way == FUSED && !(be->ops->fuses && be->ops->fuses(be, &t[0][0], n)))
            continue;
        const double s = time_products(be, way, si, NS, &t[0][0], copies, iters, dx, dout, ar, n);
        if (s < 0)
            return 1;
        print_row("layer", way, f->name, n, s, bytes, copy);
        if (alone[way] > 0)
            printf("  (its products alone: %.1f us)", alone[way]);
        printf("\n");
    }
    for (int i = 0; i < copies; i++)
        for (size_t si = 0; si < NS; si++)
            free_weight(be, &t[i][si]);
    return 0;
}

int main(int argc, char **argv)
{
    bool cuda = true, small = false, fused = false, layer = false;
    int rows[16] = {1, 16, 64}, n_rows = 3, iters = 50;
    const char *fmt_list = "bf16,fp8,int8,int4", *prod_list = "qkv,o,gate_up,down";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--device") == 0 && v)
            cuda = strcmp(v, "cpu") != 0, i++;
        else if (strcmp(a, "--rows") == 0 && v && (n_rows = parse_ints(v, rows, 16)) > 0)
            i++;
        else if (strcmp(a, "--formats") == 0 && v)
            fmt_list = v, i++;
        else if (strcmp(a, "--products") == 0 && v)
            prod_list = v, i++;
        else if (strcmp(a, "--iters") == 0 && v && (iters = atoi(v)) > 0)
            i++;
        else if (strcmp(a, "--small") == 0)
            small = true;
        else if (strcmp(a, "--fused") == 0)
            fused = true;
        else if (strcmp(a, "--layer") == 0)
            layer = true;
        else if (strcmp(a, "--shape") == 0 && v && (strcmp(v, "8b") == 0 || strcmp(v, "1b") == 0))
            shapes = strcmp(v, "1b") == 0 ? shapes_1b : shapes_8b, i++;
        else
            return fail("usage: bench_matmul [--device cuda|cpu] [--rows 1,16,64] "
                        "[--formats bf16,fp8,fp8-block,int8,int4,int4-g32] [--products qkv,o,gate_up,down,lm_head] "
                        "[--iters N] [--small] [--fused] [--layer] [--shape 8b|1b]");
    }
    char bad[64];
    if (!all_known(fmt_list, formats, sizeof formats / sizeof *formats, sizeof *formats, bad, sizeof bad)) {
        fprintf(stderr, "bench_matmul: unknown format '%s' in --formats\n", bad);
        return 2;
    }
    if (!all_known(prod_list, shapes, N_SHAPES, sizeof *shapes, bad, sizeof bad)) {
        fprintf(stderr, "bench_matmul: unknown product '%s' in --products (qkv, o, gate_up, down, lm_head)\n", bad);
        return 2;
    }
    rt_backend *be = NULL;
    double copy = 0;
    if (cuda) {
#ifdef DINFER_HAVE_CUDA
        base_err err = {{0}};
        if (rt_cuda_device_count() == 0)
            return fail("no CUDA device is visible (--device cpu for the CPU backend)");
        if (!(be = rt_cuda_backend_create(0, RT_BF16, 0, &err)))
            return fail(err.msg);
        copy = rt_cuda_copy_bandwidth();
#else
        return fail("this build has no CUDA backend (--device cpu)");
#endif
    } else {
        be = rt_cpu_backend_create(0);
    }
    printf("%s; %d launches a product%s\n", be->ops->name, iters,
           copy > 0 ? "" : " (no copy bandwidth measured: shares left out)");
    if (copy > 0)
        printf("measured device-to-device copy bandwidth %.0f GB/s\n", copy / 1e9);
    printf("%-14s %-9s %5s %10s %9s %6s\n", "product", "format", "rows", "us", "GB/s", "share");
    int maxr = 0;
    for (int i = 0; i < n_rows; i++)
        maxr = rows[i] > maxr ? rows[i] : maxr;
    rt_rng rng;
    rt_rng_seed(&rng, 7);
    /* the neighbouring ops' buffers: rows of the widest shape, norm weights of ones */
    const rt_dtype adt = be->ops->act_dtype;
    const size_t wide = (size_t)28672 / (small ? 16 : 1), es = rt_dtype_size(adt);
    float *ones = malloc(wide * sizeof *ones);
    void *hones = malloc(wide * es);
    for (size_t i = 0; i < wide; i++)
        ones[i] = 1.0f;
    rt_convert_from_f32(hones, ones, adt, wide);
    around ar = {.res = be->ops->alloc(be, (size_t)maxr * wide * es), .xb = be->ops->alloc(be, (size_t)maxr * wide * es),
                 .gu = be->ops->alloc(be, (size_t)maxr * wide * es), .g = up(be, hones, wide * es),
                 .ss = be->ops->alloc(be, 2 * (size_t)maxr * RT_FUSION_SS_STRIDE * sizeof(float))};
    free(ones), free(hones);
    if (!ar.res || !ar.xb || !ar.gu || !ar.g || !ar.ss)
        return fail("out of device memory");
    enum { NF = sizeof formats / sizeof *formats };
    double alone[NF][16][3] = {{{0}}}; /* us: the sum over the products timed alone */
    for (size_t si = 0; si < N_SHAPES; si++) {
        if (!listed(prod_list, shapes[si].name))
            continue;
        const int N = shapes[si].N / (small ? 16 : 1), K = shapes[si].K / (small ? 16 : 1);
        float *w = malloc((size_t)N * K * sizeof *w), *x = malloc((size_t)maxr * K * sizeof *x);
        if (!w || !x)
            return fail("out of host memory");
        for (size_t i = 0; i < (size_t)N * K; i++)
            w[i] = (rt_rng_uniform(&rng) * 2.0f - 1.0f) * 0.05f;
        for (size_t i = 0; i < (size_t)maxr * K; i++)
            x[i] = rt_rng_uniform(&rng) * 2.0f - 1.0f;
        const rt_dtype dt = be->ops->act_dtype;
        void *hx = malloc((size_t)maxr * K * rt_dtype_size(dt));
        rt_convert_from_f32(hx, x, dt, (size_t)maxr * K);
        void *dx = up(be, hx, (size_t)maxr * K * rt_dtype_size(dt));
        void *dout = be->ops->alloc(be, (size_t)maxr * N * rt_dtype_size(dt));
        if (!dx || !dout)
            return fail("out of device memory");
        ar.norm_k = (rt_tensor){.data = ar.g, .dtype = dt, .rows = K, .cols = 1};
        ar.norm_n = (rt_tensor){.data = ar.g, .dtype = dt, .rows = N, .cols = 1};
        for (size_t fi = 0; fi < sizeof formats / sizeof *formats; fi++) {
            const format *f = &formats[fi];
            if (!listed(fmt_list, f->name))
                continue;
            /* copies of the weight, taken in turn, so that no launch finds its weight in the L2 cache
             * (50 MB on an H100 or H200) from the launch before: at least 256 MB in all */
            rt_tensor t[COPIES];
            size_t bytes = 0;
            int copies = 0;
            do {
                if (make_weight(be, f, w, N, K, &t[copies], &bytes))
                    return fail("cannot make the weight");
                copies++;
            } while (copies < COPIES && (size_t)copies * bytes < ((size_t)256 << 20));
            for (int ri = 0; ri < n_rows; ri++) {
                const int n = rows[ri];
                for (int way = PLAIN; way <= (fused && si < LAYER_PRODUCTS ? FUSED : PLAIN); way++) {
                    if (way == FUSED && !(be->ops->fuses && be->ops->fuses(be, &t[0], n)))
                        continue;
                    const double s = time_products(be, way, &si, 1, t, copies, iters, dx, dout, &ar, n);
                    if (s < 0)
                        return 1;
                    alone[fi][ri][way] += s * 1e6;
                    print_row(shapes[si].name, way, f->name, n, s, bytes, copy);
                    printf("\n");
                }
            }
            for (int i = 0; i < copies; i++)
                free_weight(be, &t[i]);
        }
        be->ops->free(be, dx);
        be->ops->free(be, dout);
        free(w), free(x), free(hx);
    }
    if (layer) {
        bool all = true; /* the sums alone are whole only with every product */
        for (size_t si = 0; si < LAYER_PRODUCTS; si++)
            all = all && listed(prod_list, shapes[si].name);
        float *w[LAYER_PRODUCTS];
        size_t in = 0, out = 0;
        for (size_t si = 0; si < LAYER_PRODUCTS; si++) {
            const size_t N = (size_t)shapes[si].N / (small ? 16 : 1), K = (size_t)shapes[si].K / (small ? 16 : 1);
            if (!(w[si] = malloc(N * K * sizeof(float))))
                return fail("out of host memory");
            for (size_t i = 0; i < N * K; i++)
                w[si][i] = (rt_rng_uniform(&rng) * 2.0f - 1.0f) * 0.05f;
            in = K > in ? K : in, out = N > out ? N : out;
        }
        const size_t nx = (size_t)maxr * in;
        float *x = malloc(nx * sizeof *x);
        void *hx = malloc(nx * es);
        if (!x || !hx)
            return fail("out of host memory");
        for (size_t i = 0; i < nx; i++)
            x[i] = rt_rng_uniform(&rng) * 2.0f - 1.0f;
        rt_convert_from_f32(hx, x, adt, nx);
        void *dx = up(be, hx, nx * es), *dout = be->ops->alloc(be, (size_t)maxr * out * es);
        free(x), free(hx);
        if (!dx || !dout)
            return fail("out of device memory");
        for (size_t fi = 0; fi < NF; fi++)
            for (int ri = 0; ri < n_rows && listed(fmt_list, formats[fi].name); ri++)
                if (bench_layer(be, &formats[fi], rows[ri], iters, small, fused, copy, &ar, dx, dout,
                                (const float *const *)w, all ? alone[fi][ri] : (const double[3]){0}))
                    return 1;
        be->ops->free(be, dx), be->ops->free(be, dout);
        for (size_t si = 0; si < LAYER_PRODUCTS; si++)
            free(w[si]);
    }
    be->ops->free(be, ar.res), be->ops->free(be, ar.xb), be->ops->free(be, ar.gu), be->ops->free(be, ar.g);
    be->ops->free(be, ar.ss);
    be->ops->destroy(be);
    return 0;
}
