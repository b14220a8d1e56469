/* Element types of weights and activations, and conversions to and from fp32. */
#ifndef DINFER_RUNTIME_DTYPE_H
#define DINFER_RUNTIME_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum rt_dtype {
    RT_F32 = 0,
    RT_F16,
    RT_BF16,
} rt_dtype;

size_t rt_dtype_size(rt_dtype t);
const char *rt_dtype_name(rt_dtype t); /* "F32", "F16", "BF16": safetensors spelling */

float rt_bf16_to_f32(uint16_t h);
uint16_t rt_f32_to_bf16(float f); /* round to nearest even, NaN kept NaN */
float rt_f16_to_f32(uint16_t h);
uint16_t rt_f32_to_f16(float f); /* round to nearest even, overflow to inf */

/* FP8 e4m3 ("e4m3fn": no infinities, 0x7f / 0xff NaN, largest finite 448). */
float rt_fp8_to_f32(uint8_t b);
uint8_t rt_f32_to_fp8(float f); /* round to nearest even, saturating at +-448, NaN kept NaN */

/* Converts n elements of type t at src into fp32 at dst. */
void rt_convert_to_f32(float *dst, const void *src, rt_dtype t, size_t n);
/* Converts n fp32 elements into type t at dst. */
void rt_convert_from_f32(void *dst, const float *src, rt_dtype t, size_t n);

#endif
