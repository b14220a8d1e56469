/* The CPU reference implementation of the ops in runtime/backend.h: fp32 activations, fp32
 * weights, OpenMP threads. Semantics are documented at the op table. */
#ifndef DINFER_RUNTIME_CPU_OPS_H
#define DINFER_RUNTIME_CPU_OPS_H

#include "runtime/backend.h"
#include "runtime/config.h" /* RT_MAX_HEAD_DIM */

void cpu_embedding(rt_backend *be, void *out, const rt_tensor *table, int64_t row_begin,
                   const int32_t *tokens, int n);
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
void cpu_gather_rows(rt_backend *be, void *out, const void *x, const int32_t *rows, int n, int dim);

#endif
