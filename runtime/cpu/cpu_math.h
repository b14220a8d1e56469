/* Elementary functions the CPU kernels call once per key or per element, written so that the
 * compiler vectorizes the loops around them (libm's expf is a call per element). */
#ifndef DINFER_RUNTIME_CPU_MATH_H
#define DINFER_RUNTIME_CPU_MATH_H

#include <stdint.h>
#include <string.h>

/* e^x in fp32 for x <= 88, within a few ulp of expf (checked against expf over a dense grid by
 * unit.cpu_ops); 0 below -87.3 (where expf gives subnormals), +inf above 88. Range reduction
 * x = n ln2 + r with ln2 split in two, Cephes' degree-7 polynomial for e^r on |r| <= ln2/2, and 2^n
 * put into the exponent bits. No branches, so loops around it vectorize. */
static inline float cpu_expf(float x)
{
    const float lo = -87.33654f, hi = 88.0f;
    const float xc = x < lo ? lo : x > hi ? hi : x;
    const float n = __builtin_rintf(xc * 1.44269504088896341f);
    const float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float y = p * scale;
    y = x < lo ? 0.0f : y;
    return x > hi ? __builtin_inff() : y;
}

#endif
