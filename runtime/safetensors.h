/* Reader for the safetensors format and Hugging Face checkpoint folders (one model.safetensors, or
 * shards listed by model.safetensors.index.json). Files are memory-mapped; the whole header is
 * checked before any tensor is used: header length, JSON, dtypes, shape x dtype size equal to the
 * byte range, ranges inside the file, no overlaps, no duplicate names. */
#ifndef DINFER_RUNTIME_SAFETENSORS_H
#define DINFER_RUNTIME_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "runtime/dtype.h"
#include "base/err.h"

#define RT_ST_MAX_DIMS 8
#define RT_ST_MAX_HEADER (100u << 20) /* the format's own limit on the JSON header */
#define RT_ST_MAX_INDEX ((size_t)64 << 20) /* model.safetensors.index.json: a few MB for the largest models */

typedef struct rt_st_tensor {
    char *name;
    char dtype_name[12];           /* as written: "F32", "BF16", "I64", ... */
    bool supported;                /* F32, F16 or BF16: the types float weights may have */
    int elem_size;                 /* bytes per element of dtype_name (F8_E4M3 1, I32 4, ...) */
    rt_dtype dtype;                /* valid when supported */
    int n_dims;
    int64_t shape[RT_ST_MAX_DIMS];
    uint64_t begin, end;           /* byte range inside the data section */
} rt_st_tensor;

typedef struct rt_st_file {
    char *path;
    void *map;                     /* NULL when parsed from a caller's buffer */
    size_t map_size;
    const uint8_t *data;           /* the data section (after the header) */
    uint64_t data_size;
    int n_tensors;
    rt_st_tensor *tensors;         /* sorted by name */
} rt_st_file;

/* Parses and checks the header of a safetensors image held in bytes[0..size). Does not take
 * ownership of bytes, which must outlive f. `name` is used in messages. */
int rt_st_parse(rt_st_file *f, const uint8_t *bytes, size_t size, const char *name, base_err *err);
/* Maps path and parses it. */
int rt_st_open(rt_st_file *f, const char *path, base_err *err);
void rt_st_close(rt_st_file *f);
const rt_st_tensor *rt_st_find(const rt_st_file *f, const char *name);

/* Copies rows [r0, r1) and columns [c0, c1) of a 1-D ([rows]) or 2-D ([rows, cols]) tensor into
 * dst as fp32, row-major with (c1 - c0) columns. Fails if the tensor's dtype is not a float type. */
int rt_st_read_f32(const rt_st_file *f, const rt_st_tensor *t, int64_t r0, int64_t r1, int64_t c0,
                   int64_t c1, float *dst, base_err *err);

/* The same slice in the tensor's own dtype, no conversion (dst holds (r1 - r0) * (c1 - c0)
 * elements of t->elem_size bytes): any dtype, the packed integers and FP8 of quantized weights too. */
int rt_st_read_raw(const rt_st_file *f, const rt_st_tensor *t, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                   void *dst, base_err *err);

/* A checkpoint folder. */
typedef struct rt_ckpt_entry {
    char *name;
    int file;
} rt_ckpt_entry;

typedef struct rt_ckpt {
    char *dir;
    char *index_path;              /* the index file, or NULL for a single model.safetensors */
    int n_files;
    char **file_names;             /* (n_files) as the index names them */
    rt_st_file *files;             /* (n_files) mapped on first use: a rank maps only its shards */
    int n_entries;                 /* the index's weight_map, sorted by name; 0 without an index */
    rt_ckpt_entry *entries;
} rt_ckpt;

/* Opens DIR/model.safetensors.index.json (the shards it names are mapped and checked when a tensor
 * in them is first asked for), or maps DIR/model.safetensors. */
int rt_ckpt_open(rt_ckpt *c, const char *dir, base_err *err);
void rt_ckpt_close(rt_ckpt *c);
/* Finds a tensor, mapping its shard if needed; fails naming the tensor and the index or file it is
 * missing from, or the shard's own problem. */
int rt_ckpt_find(rt_ckpt *c, const char *name, const rt_st_file **file, const rt_st_tensor **t, base_err *err);
/* Whether the checkpoint names a tensor (the index's list, or the single file's header). */
bool rt_ckpt_has(const rt_ckpt *c, const char *name);

#endif
