/* The safetensors reader: every header check, slicing and dtype conversion. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/safetensors.h"

/* An image: 8-byte length, the header text, then data_bytes of data filled with 0..255. */
static uint8_t *image(const char *header, size_t data_bytes, size_t *size)
{
    size_t h = strlen(header);
    *size = 8 + h + data_bytes;
    uint8_t *b = malloc(*size);
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)((uint64_t)h >> (8 * i));
    memcpy(b + 8, header, h);
    for (size_t i = 0; i < data_bytes; i++)
        b[8 + h + i] = (uint8_t)i;
    return b;
}

static void expect_bad(const char *header, size_t data_bytes, const char *needle)
{
    size_t size;
    uint8_t *b = image(header, data_bytes, &size);
    rt_st_file f;
    base_err err = {{0}};
    assert_int_equal(rt_st_parse(&f, b, size, "x.safetensors", &err), -1);
    if (!strstr(err.msg, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", err.msg, needle);
    assert_non_null(strstr(err.msg, "x.safetensors"));
    free(b);
}

static void test_valid_and_lookup(void **state)
{
    (void)state;
    size_t size;
    uint8_t *b = image("{\"__metadata__\": {\"format\": \"pt\"}, "
                       "\"b\": {\"dtype\": \"F32\", \"shape\": [2, 3], \"data_offsets\": [8, 32]}, "
                       "\"a\": {\"dtype\": \"BF16\", \"shape\": [4], \"data_offsets\": [0, 8]}, "
                       "\"z\": {\"dtype\": \"I64\", \"shape\": [], \"data_offsets\": [32, 40]}}",
                       40, &size);
    rt_st_file f;
    base_err err;
    assert_int_equal(rt_st_parse(&f, b, size, "x", &err), 0);
    assert_int_equal(f.n_tensors, 3);
    const rt_st_tensor *t = rt_st_find(&f, "b");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->dtype, RT_F32);
    assert_true(rt_st_find(&f, "a")->supported);
    assert_false(rt_st_find(&f, "z")->supported);
    assert_null(rt_st_find(&f, "c"));
    /* an unsupported dtype fails when read, naming the tensor and dtype */
    float out[8];
    assert_int_equal(rt_st_read_f32(&f, rt_st_find(&f, "z"), 0, 1, 0, 1, out, &err), -1);
    assert_non_null(strstr(err.msg, "unsupported dtype I64"));
    rt_st_close(&f);
    free(b);
}

static void test_header_checks(void **state)
{
    (void)state;
    const char *ok_entry = "\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]";
    char h[512];
    snprintf(h, sizeof h, "{\"t\": {%s}}", ok_entry);
    expect_bad(h, 4, "run past the end of the data");                       /* truncated data */
    expect_bad("{\"t\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 8]}}", 8, "shape x F32 size");
    expect_bad("{\"t\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 0]}}", 8, "backwards");
    expect_bad("{\"t\": {\"dtype\": \"Q4\", \"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "unknown dtype \"Q4\"");
    expect_bad("{\"t\": {\"dtype\": \"F32\", \"shape\": [-2], \"data_offsets\": [0, 8]}}", 8, "non-negative");
    expect_bad("{\"t\": {\"dtype\": \"F32\", \"shape\": [2.5], \"data_offsets\": [0, 8]}}", 8, "non-negative");
    expect_bad("{\"t\": {\"dtype\": \"F32\", \"shape\": [2]}}", 8, "data_offsets");
    expect_bad("{\"t\": {\"shape\": [2], \"data_offsets\": [0, 8]}}", 8, "dtype");
    expect_bad("{\"t\": 5}", 8, "not an object");
    expect_bad("{\"t\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
               "\"u\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [4, 12]}}", 12, "overlap");
    expect_bad("{\"t\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}, "
               "\"t\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}", 16, "appears twice");
    expect_bad("{\"t\": {\"dtype\": \"F32\", \"shape\": [4294967296, 4294967296, 4294967296], "
               "\"data_offsets\": [0, 8]}}", 8, "size");
    expect_bad("{\"t\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,1,1,1,1,1], \"data_offsets\": [0, 4]}}", 4, "dimensions");
    expect_bad("not json", 0, "not a JSON object");
    expect_bad("[]", 0, "not a JSON object");
    expect_bad("{\"__metadata__\": 3}", 0, "__metadata__");

    /* header length running past the file, and files shorter than the length field */
    uint8_t b[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0};
    rt_st_file f;
    base_err err;
    assert_int_equal(rt_st_parse(&f, b, sizeof b, "x", &err), -1);
    assert_non_null(strstr(err.msg, "runs past the end"));
    b[4] = 1;
    assert_int_equal(rt_st_parse(&f, b, sizeof b, "x", &err), -1);
    assert_non_null(strstr(err.msg, "over the"));
    assert_int_equal(rt_st_parse(&f, b, 5, "x", &err), -1);
    assert_non_null(strstr(err.msg, "shorter than the 8-byte"));
}

static void test_slices_and_conversion(void **state)
{
    (void)state;
    /* a 3x4 BF16 matrix and a 3x4 F16 matrix with exactly representable values */
    float vals[12];
    uint16_t bf[12], hf[12];
    for (int i = 0; i < 12; i++) {
        vals[i] = (float)(i - 5) * 0.25f;
        bf[i] = rt_f32_to_bf16(vals[i]);
        hf[i] = rt_f32_to_f16(vals[i]);
    }
    const char *h = "{\"m\": {\"dtype\": \"BF16\", \"shape\": [3, 4], \"data_offsets\": [0, 24]},"
                    " \"n\": {\"dtype\": \"F16\", \"shape\": [3, 4], \"data_offsets\": [24, 48]}}";
    size_t size;
    uint8_t *b = image(h, 48, &size);
    memcpy(b + size - 48, bf, 24);
    memcpy(b + size - 24, hf, 24);
    rt_st_file f;
    base_err err;
    assert_int_equal(rt_st_parse(&f, b, size, "x", &err), 0);
    for (int which = 0; which < 2; which++) {
        const rt_st_tensor *t = rt_st_find(&f, which ? "n" : "m");
        float out[4];
        assert_int_equal(rt_st_read_f32(&f, t, 1, 3, 1, 3, out, &err), 0); /* rows 1-2, cols 1-2 */
        assert_true(out[0] == vals[5] && out[1] == vals[6] && out[2] == vals[9] && out[3] == vals[10]);
        assert_int_equal(rt_st_read_f32(&f, t, 2, 4, 0, 4, out, &err), -1);
        assert_non_null(strstr(err.msg, "outside its shape"));
    }
    rt_st_close(&f);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_and_lookup),
        cmocka_unit_test(test_header_checks),
        cmocka_unit_test(test_slices_and_conversion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
