#include "runtime/dtype.h"

#include <math.h>
#include <string.h>

size_t rt_dtype_size(rt_dtype t)
{
    return t == RT_F32 ? 4 : 2;
}

const char *rt_dtype_name(rt_dtype t)
{
    switch (t) {
    case RT_F32: return "F32";
    case RT_F16: return "F16";
    case RT_BF16: return "BF16";
    }
    return "?";
}

static float bits_to_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t f32_to_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

float rt_bf16_to_f32(uint16_t h)
{
    return bits_to_f32((uint32_t)h << 16);
}

uint16_t rt_f32_to_bf16(float f)
{
    uint32_t u = f32_to_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float rt_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24 */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    if (exp == 31)
        return bits_to_f32(sign | 0x7f800000u | (man << 13));
    return bits_to_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t rt_f32_to_f16(float f)
{
    uint32_t u = f32_to_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return sign | 0x7e00u;
    if (a >= 0x477ff000u) /* rounds to >= 65520: overflow */
        return sign | 0x7c00u;
    if (a < 0x38800000u) {
        /* subnormal or zero in f16: round a * 2^24 to an integer, ties to even */
        float v = bits_to_f32(a) * 0x1p24f;
        return sign | (uint16_t)lrintf(v);
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
    return sign | (uint16_t)(r >> 13);
}

float rt_fp8_to_f32(uint8_t b)
{
    const int e = (b >> 3) & 15, m = b & 7;
    float v;
    if (e == 15 && m == 7)
        v = NAN;
    else if (e == 0)
        v = ldexpf((float)m, -9); /* subnormal: m / 8 * 2^-6 */
    else
        v = ldexpf((float)(8 + m), e - 10); /* (1 + m / 8) * 2^(e - 7) */
    return b & 0x80 ? -v : v;
}

uint8_t rt_f32_to_fp8(float f)
{
    if (isnan(f))
        return 0x7f;
    const uint8_t sign = signbit(f) ? 0x80 : 0;
    const float a = fabsf(f);
    if (a >= 448.0f)
        return sign | 0x7e;
    if (a < 0x1p-6f) /* subnormal codes m * 2^-9: a * 2^9 (exact) to the nearest integer, ties even */
        return sign | (uint8_t)rintf(a * 512.0f);
    /* normal: the float's exponent and top 3 mantissa bits, rounded to nearest even on the bits
     * below (a carry moves into the exponent), then e4m3's bias (7) for float's (127) */
    uint32_t u;
    memcpy(&u, &a, sizeof u);
    u += 0x7ffffu + ((u >> 20) & 1u);
    return sign | (uint8_t)((u >> 20) - ((127u - 7u) << 3));
}

void rt_convert_to_f32(float *dst, const void *src, rt_dtype t, size_t n)
{
    const uint16_t *h = src;
    switch (t) {
    case RT_F32:
        memcpy(dst, src, n * 4);
        break;
    case RT_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = rt_bf16_to_f32(h[i]);
        break;
    case RT_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = rt_f16_to_f32(h[i]);
        break;
    }
}

void rt_convert_from_f32(void *dst, const float *src, rt_dtype t, size_t n)
{
    uint16_t *h = dst;
    switch (t) {
    case RT_F32:
        memcpy(dst, src, n * 4);
        break;
    case RT_BF16:
        for (size_t i = 0; i < n; i++)
            h[i] = rt_f32_to_bf16(src[i]);
        break;
    case RT_F16:
        for (size_t i = 0; i < n; i++)
            h[i] = rt_f32_to_f16(src[i]);
        break;
    }
}
