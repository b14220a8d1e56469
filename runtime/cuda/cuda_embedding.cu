/* Embedding rows of a vocabulary shard; tokens outside it give zero rows (the tp all-reduce fills
 * them in). */
#include "runtime/cuda/cuda_common.cuh"
#include "runtime/cuda/cuda_ops.h"

template <typename T>
__global__ void embedding_kernel(T *out, const T *table, int64_t rows, int64_t dim, int64_t row_begin,
                                 const int32_t *tokens, const int32_t *chain, const rt_sample_out *prev)
{
    pdl_wait();
    pdl_trigger();
    const int t = blockIdx.x;
    const int64_t r = (int64_t)(chain && chain[t] >= 0 ? prev[chain[t]].token : tokens[t]) - row_begin;
    T *o = out + (int64_t)t * dim;
    const bool in = r >= 0 && r < rows;
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x)
        o[i] = in ? table[r * dim + i] : T(0.0f);
}

template <typename T>
static void launch(cuda_ctx *c, void *out, const rt_tensor *table, int64_t row_begin, const int32_t *tokens, int n,
                   const int32_t *chain, const rt_sample_out *prev)
{
    cuda_launch(c, embedding_kernel<T>, n, 256, 0, (T *)out, (const T *)table->data, table->rows, table->cols,
                                                   row_begin, tokens, chain, prev);
}

extern "C" void cuda_embedding(rt_backend *be, void *out, const rt_tensor *table, int64_t row_begin,
                               const int32_t *tokens, int n, const int32_t *chain, const rt_sample_out *prev)
{
    cuda_ctx *c = cuda_ctx_of(be);
    if (n <= 0)
        return;
    CUDA_DISPATCH(c->dt, launch, c, out, table, row_begin, tokens, n, chain, prev);
    CUDA_LAUNCHED(c);
}
