/* Writes safetensors files: the header is laid out from a list of tensors, then the caller's fill
 * function produces each tensor's bytes in chunks, from several threads at once (chunks are
 * independent, so large models are written at disk speed). */
#ifndef DINFER_RUNTIME_ST_WRITER_H
#define DINFER_RUNTIME_ST_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "runtime/dtype.h"
#include "base/err.h"

typedef struct rt_st_spec {
    char name[128];
    rt_dtype dtype;
    const char *raw_dtype; /* another safetensors dtype ("I32", "F8_E4M3", ...) of raw_size-byte
                            * elements in place of dtype (quantized weights), or NULL */
    int raw_size;
    int n_dims;        /* 1 or 2 */
    int64_t shape[2];
} rt_st_spec;

size_t rt_st_spec_bytes(const rt_st_spec *t);

/* Fills bytes [offset, offset + n) of tensor `index`'s data into dst; must depend only on its
 * arguments (it is called from several threads, in any order). */
typedef void (*rt_st_fill_fn)(void *ctx, int index, const rt_st_spec *t, size_t offset, void *dst, size_t n);

/* Writes tensors[0..n) to path. */
int rt_st_write(const char *path, const rt_st_spec *tensors, int n, rt_st_fill_fn fill, void *ctx, base_err *err);

/* Writes a checkpoint folder: model.safetensors, or, when the tensors exceed shard_bytes,
 * model-0000K-of-0000N.safetensors files and model.safetensors.index.json. */
int rt_st_write_folder(const char *dir, const rt_st_spec *tensors, int n, size_t shard_bytes, rt_st_fill_fn fill,
                       void *ctx, base_err *err);

#endif
