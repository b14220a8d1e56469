/* The operation table every compute backend implements (cpu/ is the reference, cuda/ the GPU one).
 * The transformer forward pass (forward.c) is written once against this table and never sees a
 * device API. Buffers are device pointers owned by the backend; activations are rows of `dim`
 * elements in the backend's activation type (fp32 on the CPU). Every op is asynchronous with
 * respect to the host on a device backend: results are visible after `sync` or `download`. */
#ifndef DINFER_RUNTIME_BACKEND_H
#define DINFER_RUNTIME_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "runtime/config.h"
#include "runtime/dtype.h"
#include "runtime/sampler.h"

typedef struct rt_backend rt_backend;

/* How a matrix's elements are laid out. */
typedef enum rt_layout {
    RT_ROWS = 0,  /* row-major (rows, cols) */
    RT_PANELS8,   /* the CPU backend's, for matmul only: rows in panels of 8 (the last zero-padded),
                   * each panel column by column: element (r, c) at ((r / 8) * cols + c) * 8 + r % 8 */
    RT_INT4_PAIRS, /* the CUDA backend's int4 codes: row-major, each 32-bit word's 8 columns in nibble order
                    * 0, 2, 4, 6, 1, 3, 5, 7 (column j at nibble j / 2 + 4 (j & 1), AWQ's order), so that
                    * (word >> 4i) & 0x000F000F holds columns 2i and 2i + 1 in its two 16-bit halves;
                    * q.scales and q.zeros group-major: (n_groups, rows) */
} rt_layout;

/* A quantized matrix's codes' meaning (runtime/quant.h reads every format into it): element (r, c)
 * is value(code) * scales[r * n_groups + c / group], value the FP8 number of the code (RT_QK_FP8)
 * or code - zero (RT_QK_INT). */
typedef struct rt_tensor_quant {
    rt_quant_kind kind; /* 0: not quantized */
    int bits;           /* 8: a code a byte; 4: two a byte, the low nibble the even column */
    int64_t group;      /* columns a scale covers (a row's last group may be shorter) */
    int64_t n_groups;   /* a row's scales */
    float *scales;      /* (rows, n_groups) device memory ((n_groups, rows) in layout RT_INT4_PAIRS) */
    uint16_t *zeros;    /* the same shape, or NULL: the zero is 2^(bits-1) */
    int32_t *perm;      /* (cols) device memory, or NULL: code column c multiplies input column perm[c]
                         * (GPTQ's act order, its groups put back in runs): the caller gathers x's
                         * columns through it first (gather_cols) */
} rt_tensor_quant;

/* A weight matrix (rows, cols) or vector (rows, 1) in device memory; a matrix only matmul reads
 * may be quantized (q.kind != 0: data holds the codes, dtype is unused). */
typedef struct rt_tensor {
    void *data;
    rt_dtype dtype;
    int64_t rows, cols;
    rt_layout layout;
    rt_tensor_quant q;
} rt_tensor;

/* One layer's share of the paged KV cache: slot s (block * block_size + offset) holds
 * k[s][n_kv_heads][head_dim] and likewise v. */
typedef struct rt_kv_layer {
    void *k; /* (n_blocks * block_size, n_kv_heads, head_dim) */
    void *v;
    /* NULL, or an FP8 cache: k and v hold e4m3 codes, value = code * scale, with the scale of slot
     * s and KV head h at [s * scale_stride + h]: each (slot, KV head)'s own (its largest magnitude /
     * 448; scale_stride n_kv_heads), or the checkpoint's static one a KV head (scale_stride 0: the
     * writer quantizes with it, saturating, and writes no scale). */
    float *k_scale; /* (n_blocks * block_size, n_kv_heads), or (n_kv_heads) */
    float *v_scale;
    int scale_stride;
} rt_kv_layer;

/* Where the tokens of a step sit in their sequences; all arrays in device memory. */
typedef struct rt_attn_batch {
    int n_tokens;
    const int32_t *pos;          /* (n_tokens) position of each token in its sequence */
    const int32_t *slot;         /* (n_tokens) KV slot each token's k and v are written to */
    const int32_t *seq;          /* (n_tokens) row of block_tables that holds its sequence */
    const int32_t *block_tables; /* (n_seqs, max_blocks) physical block of each logical block */
    int max_blocks;
    int block_size;
    /* Optional (n_tiles 0: none): the step's prompt runs, as rt_attn_tiles finds them: tiles of up
     * to RT_ATTN_TILE consecutive tokens of one sequence at consecutive positions, and the tokens
     * in no tile. A backend may attend the tiles on its matrix units and the rest one by one; one
     * that ignores them attends every token alike. */
    int n_tiles;
    const int32_t *tiles; /* (n_tiles, 2): first token, tokens */
    int n_rest;
    const int32_t *rest;  /* (n_rest) the tokens in no tile */
    /* Every sequence has one token in the step (a decode step): the keys before each token's own
     * were written by earlier steps, so a backend may read them before this step's KV writes end. */
    bool decode;
} rt_attn_batch;

#define RT_ATTN_TILE 64    /* tokens of a tile at most */
#define RT_ATTN_RUN_MIN 16 /* a run of fewer tokens is no tile (decodes, short chunks) */

/* The tiles and the rest of a step's tokens (host arrays of n tokens); returns n_tiles. tiles
 * holds 2 * (n / RT_ATTN_RUN_MIN) ints at most, rest n. */
int rt_attn_tiles(const int32_t *pos, const int32_t *seq, int n, int32_t *tiles, int32_t *rest, int *n_rest);

/* rt_attn_batch.decode for a step's host arrays: token t is sequence t's one (the decode step's
 * layout), for every t of n with n == n_seqs. */
bool rt_attn_decode(const int32_t *seq, int n, int n_seqs);

/* Head geometry of one rank's attention. */
typedef struct rt_attn_shape {
    int n_heads;        /* query heads on this rank */
    int n_kv_heads;     /* KV heads on this rank */
    int head_dim;
    int sliding_window; /* 0 = full causal attention */
    float scale;        /* 1 / sqrt(head_dim) */
} rt_attn_shape;

#define RT_FUSION_SS_STRIDE 32 /* floats from one row's sum of squares to the next's (a cache line each) */

/* What matmul_fused does around the product (see there). The RMSNorm between two products is split
 * between them: the product that writes the residual stream also writes its rows times the next
 * norm's weight (xg) and each row's sum of squares (ss), and the product that reads them scales its
 * sums by 1 / rms at the end. */
typedef struct rt_fusion {
    const float *norm_ss; /* x is an xg (rows times a norm's weight): out = (x . w^T) / rms(row), the rms
                           * from these sums of squares (the norm's dim = w.cols; strided as ss) */
    float eps;
    bool residual;        /* out += x . w^T (+ bias), out the residual stream (n, w.rows) */
    const rt_tensor *next_norm; /* with residual: also xg = out * next_norm and ss += out's squares */
    void *xg;
    float *ss;            /* row i's sum at ss[i * RT_FUSION_SS_STRIDE], zero before the product */
    bool silu;            /* w is the gate/up matrix: out(n, w.rows / 2) = silu(gate) * up (no bias) */
    /* A hint, NULL for none: the weight the product after this one reads (ahead_halves: a gate/up
     * matrix, whose first blocks read the first rows of both halves), which a backend may ask its
     * memory for while this product ends. Backends may ignore it. */
    const rt_tensor *ahead;
    bool ahead_halves;
} rt_fusion;

typedef struct rt_backend_ops {
    const char *name;
    rt_dtype act_dtype; /* the type of activations and the KV cache */
    bool host_memory;   /* device buffers are plain host memory (the loader writes them directly) */
    bool quant_matmul;  /* matmul reads quantized weights as they are (else the loader dequantizes them) */

    void *(*alloc)(rt_backend *be, size_t bytes); /* NULL when out of memory */
    void (*free)(rt_backend *be, void *p);
    void (*upload)(rt_backend *be, void *dst, const void *src, size_t bytes);
    void (*download)(rt_backend *be, void *dst, const void *src, size_t bytes);
    void (*sync)(rt_backend *be);
    /* Host memory the device copies from without staging (pinned on a GPU); NULL when out of memory. */
    void *(*host_alloc)(rt_backend *be, size_t bytes);
    void (*host_free)(rt_backend *be, void *p);
    /* upload that returns before the copy is done: src (from host_alloc) must stay unchanged until
     * the next sync or download. */
    void (*upload_async)(rt_backend *be, void *dst, const void *src, size_t bytes);
    /* Optional (NULL: each step's sampled rows are read back before the next step starts; both or
     * neither). download_mark copies without waiting into dst (from host_alloc) and marks the copy's
     * end in slot (0 or 1); wait_mark returns once slot's last marked copy is in dst. */
    void (*download_mark)(rt_backend *be, void *dst, const void *src, size_t bytes, int slot);
    void (*wait_mark)(rt_backend *be, int slot);

    /* out(n, cols) = rows of table for tokens; a token outside [row_begin, row_begin + table.rows)
     * gives a zero row (vocab-parallel embedding: the tp all-reduce fills it in). chain (NULL: none):
     * where chain[t] >= 0, token t is instead prev[chain[t]].token, a row the step before sampled
     * (its device output: the host need not have read it yet). */
    void (*embedding)(rt_backend *be, void *out, const rt_tensor *table, int64_t row_begin,
                      const int32_t *tokens, int n, const int32_t *chain, const rt_sample_out *prev);
    /* Optional (NULL: weights stay row-major). Lays a matrix that only matmul reads out as the
     * backend's matmul reads it fastest (w->layout says which); -1 when out of memory, w unchanged. */
    int (*prepare_weight)(rt_backend *be, rt_tensor *w);
    /* out(n, w.rows) = x(n, w.cols) . w^T (+ bias when bias->data), fp32 accumulation; w quantized
     * too when quant_matmul (its values as rt_tensor_quant says). */
    void (*matmul)(rt_backend *be, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias,
                   int n);
    /* Optional (NULL: never; the three go together). Products of few rows fused with the ops around
     * them in a layer, as rt_fusion says: fuses says whether matmul_fused takes w at n rows;
     * norm_begin starts a chain of them: xg = x * w (n, dim = w.rows), ss[i * RT_FUSION_SS_STRIDE] =
     * sum of row i's squares, and the rest of ss[0 .. ss_len) zero (the chain's later sums). */
    bool (*fuses)(rt_backend *be, const rt_tensor *w, int n);
    void (*matmul_fused)(rt_backend *be, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias,
                         const rt_fusion *f, int n);
    void (*norm_begin)(rt_backend *be, void *xg, float *ss, size_t ss_len, const void *x, const rt_tensor *w, int n);
    /* out(n, dim) = rmsnorm(x) * w, dim = w.rows. */
    void (*rmsnorm)(rt_backend *be, void *out, const void *x, const rt_tensor *w, int n, float eps);
    /* x += delta, then out = rmsnorm(x) * w: the residual add fused with the next norm. */
    void (*add_rmsnorm)(rt_backend *be, void *x, const void *delta, void *out, const rt_tensor *w, int n,
                        float eps);
    /* qkv (n, (n_heads + 2 * n_kv_heads) * head_dim) holds each token's q, k and v side by side (the
     * fused QKV product): writes q rotated by position to q (n, n_heads * head_dim), and k rotated
     * and v to their KV slots (Hugging Face half-split layout, inv_freq has head_dim / 2 entries). */
    void (*rope_kv_write)(rt_backend *be, void *q, const void *qkv, const float *inv_freq, const rt_attn_batch *b,
                          const rt_attn_shape *s, rt_kv_layer *kv);
    /* out(n, n_heads * head_dim): causal (optionally windowed) attention of each token over the
     * cached positions [0, pos] of its sequence; grouped-query: head h reads KV head
     * h / (n_heads / n_kv_heads). */
    void (*attention)(rt_backend *be, void *out, const void *q, const rt_kv_layer *kv,
                      const rt_attn_batch *b, const rt_attn_shape *s);
    /* Optional (NULL, or false returned: rope_kv_write then attention, as rt_attend does). A decode
     * step's (b->decode) rope_kv_write and attention in one: q, k and v read from qkv's rows, k
     * rotated and v written to their KV slots, out as attention's (q's buffer is not written). */
    bool (*rope_attention)(rt_backend *be, void *out, const void *qkv, const float *inv_freq,
                           const rt_attn_batch *b, const rt_attn_shape *s, rt_kv_layer *kv);
    /* Optional (NULL, or false returned: matmul_fused into a qkv buffer, then rope_kv_write). The
     * fused chain's QKV product (w, bias, f and n as matmul_fused's) with rope_kv_write's work in its
     * last step: q rotated to q, k rotated and v to their KV slots, as the two would write them (no
     * qkv buffer is written). */
    bool (*matmul_rope)(rt_backend *be, void *q, const void *x, const rt_tensor *w, const rt_tensor *bias,
                        const rt_fusion *f, int n, const float *inv_freq, const rt_attn_batch *b,
                        const rt_attn_shape *s, rt_kv_layer *kv);
    /* x += y, n elements. */
    void (*add)(rt_backend *be, void *x, const void *y, size_t n);
    /* out(n, ffn) = silu(gate) * up, gate_up (n, 2 * ffn) holding each row's gate then up (the fused
     * gate/up product). */
    void (*silu_mul)(rt_backend *be, void *out, const void *gate_up, int n, int ffn);
    /* out(n, dim) = x rows listed in rows. */
    void (*gather_rows)(rt_backend *be, void *out, const void *x, const int32_t *rows, int n, int dim);
    /* out(n, dim)[i][c] = x(n, dim)[i][cols[c]], cols in device memory (a permuted product's inputs:
     * rt_tensor_quant.perm). */
    void (*gather_cols)(rt_backend *be, void *out, const void *x, const int32_t *cols, int n, int dim);
    /* out(n, cols) fp32 from activations (the logits leave in fp32). */
    void (*to_f32)(rt_backend *be, float *out, const void *x, size_t n);
    /* Optional (NULL, or false returned: matmul then to_f32). The LM head's product written in fp32
     * straight from its accumulators, out(n, w.rows) = x(n, w.cols) . w^T with no bias; false when
     * the backend's product of w at n rows cannot (nothing is done then). */
    bool (*matmul_f32)(rt_backend *be, float *out, const void *x, const rt_tensor *w, int n);
    /* Optional (NULL: the logits go to the host and rt_sample runs there). Samples each of the n
     * rows of fp32 logits (n, vocab) as rows[i] says, into out[i]; rows and out in device memory.
     * The distribution of rt_sample_with for the row's uniform draw; greedy rows and the logprobs
     * are exactly the host sampler's. */
    void (*sample)(rt_backend *be, rt_sample_out *out, const float *logits, int n, int vocab,
                   const rt_sample_row *rows);

    /* Optional (NULL: nothing is captured). Between graph_begin and graph_end the ops are recorded,
     * not run; graph_end returns the recording (NULL on failure, kept for check), which graph_launch
     * replays on the same buffers and graph_free releases. Nothing between them may wait for the
     * device. */
    void (*graph_begin)(rt_backend *be);
    void *(*graph_end)(rt_backend *be);
    void (*graph_launch)(rt_backend *be, void *graph);
    void (*graph_free)(rt_backend *be, void *graph);

    /* Ops return nothing; a device failure inside one (a CUDA or cuBLAS error) is kept on the
     * backend, the first one sticky. 0 while none happened, else -1 with it in err. The forward pass
     * checks once per step, the loader once per model. */
    int (*check)(rt_backend *be, base_err *err);

    void (*destroy)(rt_backend *be);
} rt_backend_ops;

struct rt_backend {
    const rt_backend_ops *ops;
    void *impl;
};

/* A layer's attention from its fused QKV product's rows: the backend's rope_attention where it takes
 * the step, else rope_kv_write (q rotated into q) then attention into out. */
void rt_attend(rt_backend *be, void *out, void *q, const void *qkv, const float *inv_freq, const rt_attn_batch *b,
               const rt_attn_shape *s, rt_kv_layer *kv);

/* The CPU backend: fp32, OpenMP threads (OMP_NUM_THREADS or n_threads when > 0). */
rt_backend *rt_cpu_backend_create(int n_threads);

#ifdef DINFER_HAVE_CUDA
/* The CUDA backend on device (cudaSetDevice'd on this thread), storing activations, weights and
 * the KV cache as dt with fp32 arithmetic. NULL with err filled when the device cannot be used.
 * rank only labels messages. */
rt_backend *rt_cuda_backend_create(int device, rt_dtype dt, int rank, base_err *err);
/* Free and total memory of the current device. */
int rt_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
/* The cudaStream_t the backend's ops run on (for NCCL). */
void *rt_cuda_backend_stream(rt_backend *be);
/* Measured device-to-device copy bandwidth of the current device, bytes read + written per second. */
double rt_cuda_copy_bandwidth(void);
#endif

#endif
