/* Quantized weight matrices: every format (compressed-tensors FP8, transformers' block FP8, AWQ,
 * GPTQ, and --quantize of a float checkpoint) read into one host form, rt_qmat, from which a
 * backend takes the codes as they are or the dequantized floats. */
#ifndef DINFER_RUNTIME_QUANT_H
#define DINFER_RUNTIME_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "runtime/config.h"
#include "runtime/safetensors.h"

/* A slice (rows, cols) of a weight matrix (out, in): w[r][c] = value(codes[r][c]) * scales[r][g(c)]
 * where value is the FP8 number of the code (RT_QK_FP8) or code - zero (RT_QK_INT), and g(c) is
 * c / group, or gidx[c] for columns quantized out of order (GPTQ's act order). */
typedef struct rt_qmat {
    rt_quant_kind kind;
    int bits;
    int64_t rows, cols;
    int64_t group;    /* columns a scale covers; a row's last group may be shorter */
    int64_t n_groups; /* ceil(cols / group), or with gidx the whole matrix's groups */
    uint8_t *codes;   /* (rows, cols), a code a byte */
    float *scales;    /* (rows, n_groups) */
    uint16_t *zeros;  /* (rows, n_groups) for RT_QK_INT with zero points; NULL: the zero is 2^(bits-1) */
    int32_t *gidx;    /* (cols) each column's group, or NULL: in order */
} rt_qmat;

void rt_qmat_free(rt_qmat *m);
/* m's storage for a slice of rows x cols: codes, scales and (when zeros) zero points, a scale a
 * group of columns (the format readers' and rt_qmat_quantize's). */
int rt_qmat_alloc(rt_qmat *m, rt_quant_kind kind, int bits, int64_t rows, int64_t cols, int64_t group, bool zeros,
                  base_err *err);
/* The codes as a backend's matmul reads them (rt_tensor_quant): a byte each, or at 4 bits two a
 * byte, the even column in the low nibble (cols even). out holds rows * rt_qmat_row_bytes(m). */
int64_t rt_qmat_row_bytes(const rt_qmat *m);
void rt_qmat_pack_codes(const rt_qmat *m, uint8_t *out);
/* w (rows, cols) = the slice's values, in fp32 (one rounding: the code's value times its scale). */
void rt_qmat_dequantize(const rt_qmat *m, float *w);
/* A slice with gidx rearranged so that its groups are runs of `group` columns again, in the order
 * of their numbers (the groups the slice holds none of dropped): perm[c] (cols) receives the old
 * column that column c now holds, the one whose input a product must take there. 1 (m unchanged)
 * when the slice holds part of a group (a tensor-parallel split across act-order groups). */
int rt_qmat_order(rt_qmat *m, int32_t *perm, base_err *err);
/* Keeps the rows idx[0 .. n) of m (output rows), in that order. */
int rt_qmat_take_rows(rt_qmat *m, const int32_t *idx, int64_t n, base_err *err);
/* Keeps the columns idx[0 .. n) of m (input columns), in that order, each with its group: m gains
 * gidx (rt_qmat_order puts the groups back in runs). */
int rt_qmat_take_cols(rt_qmat *m, const int32_t *idx, int64_t n, base_err *err);

/* The input order of an act-order GPTQ weight (module, full shape (rows, cols)) that puts its groups
 * in runs, in the order of their numbers (each group's columns in their own order): *order (malloc'd,
 * cols) holds the old column of each new one, or NULL when g_idx is in order already. Relabelling a
 * dimension by it changes no output when every weight that meets it moves alike (the FFN: gate's and
 * up's rows with down's inputs). */
int rt_quant_input_order(rt_ckpt *ck, const rt_quant *q, const char *module, int64_t cols, int32_t **order,
                         base_err *err);

/* Whether `module` ("model.layers.3.mlp.down_proj") holds its weight quantized as q says (a
 * checkpoint may leave some float: compressed-tensors' ignore list, AWQ without lm_head). */
bool rt_quant_stored(const rt_ckpt *ck, const rt_quant *q, const char *module);

/* Reads rows [r0, r1) and columns [c0, c1) of the quantized weight of `module`, whose full shape
 * must be (rows, cols). Fails naming the tensor for a wrong dtype or shape, and naming the split for
 * a slice that cuts a group or a packed word. *bytes (may be NULL) gains the bytes read. */
int rt_qmat_read(rt_qmat *m, rt_ckpt *ck, const rt_quant *q, const char *module, int64_t rows, int64_t cols,
                 int64_t r0, int64_t r1, int64_t c0, int64_t c1, size_t *bytes, base_err *err);

/* Quantizes w (rows, cols), float, as q says (round to nearest; scales from the whole row, groups
 * from column 0, so that a slice is the same whichever rank takes it; block scales over blocks of
 * rows from row 0), keeping columns [c0, c1). `what` names the matrix in messages. */
int rt_qmat_quantize(rt_qmat *m, const rt_quant *q, const float *w, int64_t rows, int64_t cols, int64_t c0,
                     int64_t c1, const char *what, base_err *err);

/* One tensor of a format's stored form. */
typedef struct rt_qtensor {
    const char *suffix; /* after the module's name: "weight", "weight_scale", "qweight", ... */
    const char *dtype;  /* safetensors dtype: "F8_E4M3", "F32", "F16", "I32" */
    int elem_size;
    int n_dims;
    int64_t shape[2];
    void *data;         /* malloc'd, row-major */
} rt_qtensor;

#define RT_QTENSORS_MAX 5

/* The tensors a checkpoint of method q->method stores for the whole matrix m (out, in), packed as
 * the format's tools lay them out: the inverse of rt_qmat_read. Fails naming a shape the format
 * cannot pack (AWQ needs outputs a multiple of 8, ...), or scales the layout cannot express. */
int rt_qmat_pack(const rt_qmat *m, const rt_quant *q, rt_qtensor *out, int *n, base_err *err);
void rt_qtensors_free(rt_qtensor *t, int n);

#endif
