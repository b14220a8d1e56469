#include "tests/unit/tiny_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/sampler.h"
#include "runtime/st_writer.h"

rt_config tiny_config(void)
{
    return (rt_config){.arch = RT_ARCH_LLAMA, .dim = 32, .ffn_dim = 48, .n_layers = 3, .n_heads = 4,
                       .n_kv_heads = 2, .head_dim = 8, .vocab_size = 64, .max_pos = 128, .norm_eps = 1e-5,
                       .rope = {.theta = 10000.0, .factor = 1.0}, .bos_id = 1, .n_eos = 1, .eos_ids = {2}};
}

static void fill(void *ctx, int index, const rt_st_spec *t, size_t off, void *dst, size_t n)
{
    (void)ctx;
    size_t es = rt_dtype_size(t->dtype);
    bool norm = strstr(t->name, "norm") != NULL;
    float scale = t->n_dims == 2 ? 1.7f / sqrtf((float)t->shape[1]) : 0.2f;
    for (size_t e = off / es; e < (off + n) / es; e++) {
        rt_rng r;
        rt_rng_seed(&r, (uint64_t)index * 1000003u + e);
        float v = (norm ? 1.0f : 0.0f) + scale * (rt_rng_uniform(&r) * 2 - 1);
        rt_convert_from_f32((char *)dst + (e - off / es) * es, &v, t->dtype, 1);
    }
}

static void spec(rt_st_spec *s, int *n, const char *name, rt_dtype dt, int64_t r, int64_t c)
{
    snprintf(s[*n].name, sizeof s[*n].name, "%s", name);
    s[*n].dtype = dt;
    s[*n].n_dims = c ? 2 : 1;
    s[*n].shape[0] = r;
    s[*n].shape[1] = c;
    (*n)++;
}

int tiny_model_write(const char *dir, const rt_config *c, rt_dtype dt, size_t shard_bytes, base_err *err)
{
    char path[512], nm[128];
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (rt_config_write(c, path, err))
        return -1;
    rt_st_spec *s = calloc(3 + 13 * (size_t)c->n_layers, sizeof *s);
    int n = 0;
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    spec(s, &n, "model.embed_tokens.weight", dt, c->vocab_size, c->dim);
    for (int l = 0; l < c->n_layers; l++) {
#define NM(x) (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, x), nm)
        spec(s, &n, NM("input_layernorm.weight"), dt, c->dim, 0);
        spec(s, &n, NM("self_attn.q_proj.weight"), dt, q, c->dim);
        spec(s, &n, NM("self_attn.k_proj.weight"), dt, kv, c->dim);
        spec(s, &n, NM("self_attn.v_proj.weight"), dt, kv, c->dim);
        if (c->qkv_bias) {
            spec(s, &n, NM("self_attn.q_proj.bias"), dt, q, 0);
            spec(s, &n, NM("self_attn.k_proj.bias"), dt, kv, 0);
            spec(s, &n, NM("self_attn.v_proj.bias"), dt, kv, 0);
        }
        spec(s, &n, NM("self_attn.o_proj.weight"), dt, c->dim, q);
        if (c->o_bias)
            spec(s, &n, NM("self_attn.o_proj.bias"), dt, c->dim, 0);
        spec(s, &n, NM("post_attention_layernorm.weight"), dt, c->dim, 0);
        spec(s, &n, NM("mlp.gate_proj.weight"), dt, c->ffn_dim, c->dim);
        spec(s, &n, NM("mlp.up_proj.weight"), dt, c->ffn_dim, c->dim);
        spec(s, &n, NM("mlp.down_proj.weight"), dt, c->dim, c->ffn_dim);
#undef NM
    }
    spec(s, &n, "model.norm.weight", dt, c->dim, 0);
    if (!c->tie_embeddings)
        spec(s, &n, "lm_head.weight", dt, c->vocab_size, c->dim);
    int rc = rt_st_write_folder(dir, s, n, shard_bytes ? shard_bytes : SIZE_MAX, fill, NULL, err);
    free(s);
    return rc;
}

char *tiny_tmpdir(void)
{
    char *d = strdup("/tmp/dinfer_test_XXXXXX");
    if (!d || !mkdtemp(d)) {
        free(d);
        return NULL;
    }
    return d;
}

void tiny_rmtree(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
}
