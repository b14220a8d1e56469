/* The CPU reference implementation of the ops in runtime/backend.h: fp32 activations, fp32
 * weights, OpenMP threads. Semantics are documented at the op table. */
#ifndef DINFER_RUNTIME_CPU_OPS_H
#define DINFER_RUNTIME_CPU_OPS_H

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <string.h>

#include "runtime/backend.h"
#include "runtime/config.h" /* RT_MAX_HEAD_DIM */

/* for (int64_t i = 0; i < n; i++) { body } over the OpenMP threads, or as a plain loop when there
 * is one thread (or one iteration): an OpenMP region costs about a thousand instructions and a
 * heap allocation even then, which was a sixth of a small model's step (stories260K: 55 regions a
 * token). CPU_FOR_DYNAMIC hands out iterations four at a time (uneven work: attention). */
#define CPU_FOR_(sched, i, n, ...)                                   \
    do {                                                             \
        const int64_t cpu_n_ = (n);                                  \
        if (cpu_n_ <= 1 || omp_get_max_threads() == 1) {             \
            for (int64_t i = 0; i < cpu_n_; i++) {                   \
                __VA_ARGS__                                          \
            }                                                        \
        } else {                                                     \
            _Pragma(sched) for (int64_t i = 0; i < cpu_n_; i++)      \
            {                                                        \
                __VA_ARGS__                                          \
            }                                                        \
        }                                                            \
    } while (0)
#define CPU_FOR(i, n, ...) CPU_FOR_("omp parallel for schedule(static)", i, n, __VA_ARGS__)
#define CPU_FOR_DYNAMIC(i, n, ...) CPU_FOR_("omp parallel for schedule(dynamic, 4)", i, n, __VA_ARGS__)

/* The value of an FP8 e4m3 code, by bits so that a loop of them vectorizes (a table would be a
 * gather): sign, exponent and mantissa moved under a float's with the exponent 120 short, then
 * times 2^120 (exact, subnormal codes included); the NaN codes stay NaN. rt_fp8_to_f32's values. */
static inline float cpu_fp8(uint32_t b)
{
    const uint32_t bits = (b & 0x7Fu) << 20 | (b & 0x80u) << 24;
    float v;
    memcpy(&v, &bits, sizeof v);
    return (b & 0x7Fu) == 0x7Fu ? NAN : v * 0x1p120f;
}

void cpu_embedding(rt_backend *be, void *out, const rt_tensor *table, int64_t row_begin,
                   const int32_t *tokens, int n, const int32_t *chain, const rt_sample_out *prev);
void cpu_matmul(rt_backend *be, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n);
void cpu_rmsnorm(rt_backend *be, void *out, const void *x, const rt_tensor *w, int n, float eps);
void cpu_add_rmsnorm(rt_backend *be, void *x, const void *delta, void *out, const rt_tensor *w, int n,
                     float eps);
void cpu_rope_kv_write(rt_backend *be, void *q, const void *qkv, const float *inv_freq, const rt_attn_batch *b,
                       const rt_attn_shape *s, rt_kv_layer *kv);
void cpu_attention(rt_backend *be, void *out, const void *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                   const rt_attn_shape *s);
void cpu_add(rt_backend *be, void *x, const void *y, size_t n);
int cpu_prepare_weight(rt_backend *be, rt_tensor *w);
void cpu_silu_mul(rt_backend *be, void *out, const void *gate_up, int n, int ffn);
bool cpu_fuses(rt_backend *be, const rt_tensor *w, int n);
void cpu_matmul_fused(rt_backend *be, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias,
                      const rt_fusion *f, int n);
void cpu_norm_begin(rt_backend *be, void *xg, float *ss, size_t ss_len, const void *x, const rt_tensor *w, int n);
void cpu_gather_rows(rt_backend *be, void *out, const void *x, const int32_t *rows, int n, int dim);
void cpu_gather_cols(rt_backend *be, void *out, const void *x, const int32_t *cols, int n, int dim);

#endif
