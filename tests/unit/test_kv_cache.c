/* The paged KV cache: the block allocator's bookkeeping (every id handed out once, an allocation
 * that cannot be met takes nothing, freed ids come back), the pool's sizes per token, and the
 * pool itself on the CPU backend (every layer's k and v large enough and distinct). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/kv_cache.h"

static void test_allocator(void **state)
{
    (void)state;
    rt_kv_blocks a;
    base_err err;
    assert_int_equal(rt_kv_blocks_init(&a, 10, &err), 0);
    assert_int_equal(a.n_free, 10);
    int ids[10], more[10];
    assert_int_equal(rt_kv_blocks_alloc(&a, 7, ids), 0);
    assert_int_equal(a.n_free, 3);
    assert_int_equal(rt_kv_blocks_alloc(&a, 4, more), -1); /* three left: none taken */
    assert_int_equal(a.n_free, 3);
    assert_int_equal(rt_kv_blocks_alloc(&a, 3, ids + 7), 0);
    assert_int_equal(a.n_free, 0);
    int seen[10] = {0};
    for (int i = 0; i < 10; i++) {
        assert_true(ids[i] >= 0 && ids[i] < 10);
        assert_int_equal(seen[ids[i]]++, 0); /* each id once */
    }
    rt_kv_blocks_free(&a, 4, ids + 2);
    assert_int_equal(a.n_free, 4);
    assert_int_equal(rt_kv_blocks_alloc(&a, 4, more), 0);
    for (int i = 0; i < 4; i++) { /* the freed ids, and only those, come back */
        int found = 0;
        for (int j = 2; j < 6; j++)
            found |= more[i] == ids[j];
        assert_true(found);
    }
    assert_int_equal(rt_kv_blocks_alloc(&a, 0, more), 0);
    rt_kv_blocks_destroy(&a);
}

static void test_sizes(void **state)
{
    (void)state;
    /* 2 (k and v) x layers x KV heads x head_dim x element size */
    assert_int_equal(rt_kv_bytes_per_token(32, 8, 128, RT_BF16, RT_KV_FLOAT), 2 * 32 * 8 * 128 * 2);
    assert_int_equal(rt_kv_bytes_per_token(3, 1, 6, RT_F32, RT_KV_FLOAT), 2 * 3 * 1 * 6 * 4);
    /* FP8: a byte an element and a float scale a token and head: 1.94x BF16's tokens at head_dim 128 */
    assert_int_equal(rt_kv_bytes_per_token(32, 8, 128, RT_BF16, RT_KV_FP8_TOKEN), 2 * 32 * 8 * (128 + 4));
    /* under the checkpoint's static scales a byte an element only: 2x */
    assert_int_equal(rt_kv_bytes_per_token(32, 8, 128, RT_BF16, RT_KV_FP8_STATIC), 2 * 32 * 8 * 128);
    assert_int_equal(rt_kv_blocks_for(0, 16), 0);
    assert_int_equal(rt_kv_blocks_for(1, 16), 1);
    assert_int_equal(rt_kv_blocks_for(16, 16), 1);
    assert_int_equal(rt_kv_blocks_for(17, 16), 2);
}

static void test_pool(void **state)
{
    (void)state;
    rt_backend *be = rt_cpu_backend_create(1);
    rt_kv_cache kv;
    base_err err;
    const int layers = 3, blocks = 5, bs = 4, heads = 2, hd = 6;
    assert_int_equal(rt_kv_cache_create(&kv, be, layers, blocks, bs, heads, hd, RT_KV_FLOAT, &err), 0);
    const size_t n = (size_t)blocks * bs * heads * hd;
    for (int l = 0; l < layers; l++) { /* writable end to end (AddressSanitizer watches), and distinct */
        memset(kv.layers[l].k, l + 1, n * sizeof(float));
        memset(kv.layers[l].v, l + 11, n * sizeof(float));
    }
    for (int l = 0; l < layers; l++) {
        assert_int_equal(((unsigned char *)kv.layers[l].k)[n * sizeof(float) - 1], l + 1);
        assert_int_equal(((unsigned char *)kv.layers[l].v)[0], l + 11);
    }
    rt_kv_cache_destroy(&kv);
    be->ops->destroy(be);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allocator),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
