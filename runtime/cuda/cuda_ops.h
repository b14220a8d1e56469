/* The CUDA implementation of the ops in runtime/backend.h (one .cu file per op, each a kernel and
 * its launcher on the backend's stream). Semantics are those of the op table; storage is the
 * backend's dtype (F32, BF16 or F16) with fp32 arithmetic and accumulation. */
#ifndef DINFER_RUNTIME_CUDA_OPS_H
#define DINFER_RUNTIME_CUDA_OPS_H

#include "runtime/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

void cuda_embedding(rt_backend *be, void *out, const rt_tensor *table, int64_t row_begin, const int32_t *tokens,
                    int n, const int32_t *chain, const rt_sample_out *prev);
void cuda_matmul(rt_backend *be, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias, int n);
bool cuda_fuses(rt_backend *be, const rt_tensor *w, int n);
void cuda_matmul_fused(rt_backend *be, void *out, const void *x, const rt_tensor *w, const rt_tensor *bias,
                       const rt_fusion *f, int n);
void cuda_norm_begin(rt_backend *be, void *xg, float *ss, size_t ss_len, const void *x, const rt_tensor *w, int n);
void cuda_rmsnorm(rt_backend *be, void *out, const void *x, const rt_tensor *w, int n, float eps);
void cuda_add_rmsnorm(rt_backend *be, void *x, const void *delta, void *out, const rt_tensor *w, int n, float eps);
void cuda_rope_kv_write(rt_backend *be, void *q, const void *qkv, const float *inv_freq, const rt_attn_batch *b,
                        const rt_attn_shape *s, rt_kv_layer *kv);
void cuda_attention(rt_backend *be, void *out, const void *q, const rt_kv_layer *kv, const rt_attn_batch *b,
                    const rt_attn_shape *s);
bool cuda_rope_attention(rt_backend *be, void *out, const void *qkv, const float *inv_freq, const rt_attn_batch *b,
                         const rt_attn_shape *s, rt_kv_layer *kv);
bool cuda_matmul_rope(rt_backend *be, void *q, const void *x, const rt_tensor *w, const rt_tensor *bias,
                      const rt_fusion *f, int n, const float *inv_freq, const rt_attn_batch *b, const rt_attn_shape *s,
                      rt_kv_layer *kv);
void cuda_add(rt_backend *be, void *x, const void *y, size_t n);
void cuda_silu_mul(rt_backend *be, void *out, const void *gate_up, int n, int ffn);
void cuda_gather_rows(rt_backend *be, void *out, const void *x, const int32_t *rows, int n, int dim);
void cuda_gather_cols(rt_backend *be, void *out, const void *x, const int32_t *cols, int n, int dim);
void cuda_to_f32(rt_backend *be, float *out, const void *x, size_t n);
bool cuda_matmul_f32(rt_backend *be, float *out, const void *x, const rt_tensor *w, int n);
int cuda_prepare_weight(rt_backend *be, rt_tensor *w);
void cuda_sample(rt_backend *be, rt_sample_out *out, const float *logits, int n, int vocab, const rt_sample_row *rows);

#ifdef __cplusplus
}
#endif

#endif
