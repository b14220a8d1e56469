/* libFuzzer target: the safetensors header parser and reader on arbitrary bytes. Every header the
 * parser accepts must be safe to read whole. */
#include <stdint.h>
#include <stdlib.h>

#include "runtime/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rt_st_file f;
    base_err err;
    if (rt_st_parse(&f, data, size, "fuzz", &err) != 0)
        return 0;
    for (int i = 0; i < f.n_tensors; i++) {
        const rt_st_tensor *t = &f.tensors[i];
        if (!t->supported || t->n_dims < 1 || t->n_dims > 2)
            continue;
        int64_t rows = t->shape[0], cols = t->n_dims == 2 ? t->shape[1] : 1;
        if (rows * cols == 0)
            continue;
        float *out = malloc((size_t)(rows * cols) * sizeof *out);
        if (out && rt_st_read_f32(&f, t, 0, rows, 0, cols, out, &err) != 0)
            abort(); /* an accepted header must be readable */
        free(out);
    }
    rt_st_close(&f);
    return 0;
}
