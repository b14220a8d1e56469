/* libFuzzer target: config.json parsing on arbitrary bytes. An accepted config must be
 * self-consistent, since everything downstream trusts it. */
#include <stdint.h>
#include <stdlib.h>

#include "runtime/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rt_config c;
    base_err err;
    if (rt_config_parse(&c, (const char *)data, size, "fuzz", &err) != 0)
        return 0;
    if (c.dim < 1 || c.n_heads < 1 || c.n_kv_heads < 1 || c.n_heads % c.n_kv_heads != 0 || c.head_dim < 2 || c.head_dim > RT_MAX_HEAD_DIM ||
        c.head_dim % 2 != 0 || c.vocab_size < 1 || c.n_layers < 1 || c.max_pos < 1 ||
        c.bos_id >= c.vocab_size || c.n_eos > RT_MAX_EOS || !(c.rope.theta > 0))
        abort();
    return 0;
}
