/* Element types: sizes and names, and the conversions to and from fp32 (exhaustive over every f16
 * and bf16 bit pattern, round to nearest even, overflow and underflow). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "runtime/dtype.h"

static void test_round_trips(void **state)
{
    (void)state;
    /* exhaustive: every f16 and bf16 bit pattern survives f32 and back (NaNs stay NaN) */
    for (uint32_t h = 0; h < 65536; h++) {
        float f = rt_f16_to_f32((uint16_t)h);
        if (isnan(f))
            assert_true(isnan(rt_f16_to_f32(rt_f32_to_f16(f))));
        else
            assert_int_equal(rt_f32_to_f16(f), h);
        float g = rt_bf16_to_f32((uint16_t)h);
        if (isnan(g))
            assert_true(isnan(rt_bf16_to_f32(rt_f32_to_bf16(g))));
        else
            assert_int_equal(rt_f32_to_bf16(g), h);
    }
    /* rounding to nearest even */
    assert_int_equal(rt_f32_to_bf16(1.0f + 0x1p-8f), rt_f32_to_bf16(1.0f));          /* tie, even stays */
    assert_int_equal(rt_f32_to_bf16(1.0f + 0x1p-8f + 0x1p-12f), rt_f32_to_bf16(1.0f + 0x1p-7f));
    assert_true(rt_f16_to_f32(rt_f32_to_f16(65520.0f)) == INFINITY);
    assert_true(rt_f16_to_f32(rt_f32_to_f16(65504.0f)) == 65504.0f);
    assert_true(rt_f16_to_f32(rt_f32_to_f16(0x1p-25f)) == 0.0f);                     /* tie to even: 0 */
    assert_true(rt_f16_to_f32(rt_f32_to_f16(0x1p-24f * 1.5f)) == 0x1p-23f);           /* tie to even: 2 */
}

/* The bulk conversions agree with the scalar ones, for every type and a length that is no multiple
 * of any vector width. */
static void test_bulk_conversions(void **state)
{
    (void)state;
    enum { N = 1037 };
    float src[N], back[N];
    uint8_t buf[N * 4];
    for (int i = 0; i < N; i++)
        src[i] = (float)(i - 500) * 0.37f + 1e-3f * (float)(i % 7);
    const rt_dtype types[] = {RT_F32, RT_F16, RT_BF16};
    for (int k = 0; k < 3; k++) {
        rt_convert_from_f32(buf, src, types[k], N);
        rt_convert_to_f32(back, buf, types[k], N);
        for (int i = 0; i < N; i++) {
            float want = types[k] == RT_F32 ? src[i]
                         : types[k] == RT_F16 ? rt_f16_to_f32(rt_f32_to_f16(src[i]))
                                              : rt_bf16_to_f32(rt_f32_to_bf16(src[i]));
            assert_true(back[i] == want);
        }
    }
}

static void test_names_and_sizes(void **state)
{
    (void)state;
    assert_int_equal(rt_dtype_size(RT_F32), 4);
    assert_int_equal(rt_dtype_size(RT_F16), 2);
    assert_int_equal(rt_dtype_size(RT_BF16), 2);
    assert_string_equal(rt_dtype_name(RT_F32), "F32");
    assert_string_equal(rt_dtype_name(RT_F16), "F16");
    assert_string_equal(rt_dtype_name(RT_BF16), "BF16");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_bulk_conversions),
        cmocka_unit_test(test_names_and_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
