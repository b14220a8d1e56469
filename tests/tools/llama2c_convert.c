/* Test helper: converts a llama2.c "v0" checkpoint (such as stories260K.bin) into a Hugging Face
 * folder (config.json + model.safetensors), as transformers' own Llama conversion does: the rows
 * of wq and wk are permuted within each head from Meta's interleaved RoPE pairs (i, i+1) to the
 * half-split pairs (i, i + head_size/2) that Hugging Face's Llama rotates. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/config.h"
#include "runtime/st_writer.h"

typedef struct src_tensor {
    const float *data;
    int64_t rows, cols;
    int permute_heads; /* > 0: number of heads whose rows are re-ordered */
} src_tensor;

typedef struct conv {
    src_tensor *t;
} conv;

/* Row r of the Hugging Face layout comes from row src_row(r) of the Meta layout. */
static int64_t src_row(int64_t r, int64_t rows, int heads)
{
    if (heads <= 0)
        return r;
    int64_t hs = rows / heads, h = r / hs, j = r % hs;
    return h * hs + (j < hs / 2 ? 2 * j : 2 * (j - hs / 2) + 1);
}

static void fill(void *ctx, int index, const rt_st_spec *spec, size_t off, void *dst, size_t n)
{
    (void)spec;
    const src_tensor *t = &((conv *)ctx)->t[index];
    float *out = dst;
    for (size_t e = off / 4; e < (off + n) / 4; e++) {
        int64_t r = (int64_t)e / t->cols, c = (int64_t)e % t->cols;
        *out++ = t->data[src_row(r, t->rows, t->permute_heads) * t->cols + c];
    }
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: llama2c_convert MODEL.bin OUT_DIR\n");
        return 2;
    }
    FILE *f = fopen(argv[1], "rb");
    if (!f) {
        fprintf(stderr, "llama2c_convert: %s: cannot open\n", argv[1]);
        return 1;
    }
    int32_t h[7];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    float *all = malloc((size_t)size);
    if (!all || fread(h, 4, 7, f) != 7 || fread(all, 1, (size_t)size - 28, f) != (size_t)size - 28) {
        fprintf(stderr, "llama2c_convert: %s: short read\n", argv[1]);
        return 1;
    }
    fclose(f);
    int dim = h[0], hidden = h[1], L = h[2], nh = h[3], nkv = h[4], vocab = abs(h[5]), seq = h[6];
    int hs = dim / nh;
    rt_config c = {.arch = RT_ARCH_LLAMA, .dim = dim, .ffn_dim = hidden, .n_layers = L, .n_heads = nh,
                   .n_kv_heads = nkv, .head_dim = hs, .vocab_size = vocab, .max_pos = seq, .norm_eps = 1e-5,
                   .rope = {.theta = 10000.0, .factor = 1.0}, .tie_embeddings = h[5] > 0, .bos_id = 1,
                   .n_eos = 1, .eos_ids = {2}, .dtype = RT_F32};
    const float *p = all;
    const float *emb = p; p += (size_t)vocab * dim;
    const float *rms_att = p; p += (size_t)L * dim;
    const float *wq = p; p += (size_t)L * dim * dim;
    const float *wk = p; p += (size_t)L * nkv * hs * dim;
    const float *wv = p; p += (size_t)L * nkv * hs * dim;
    const float *wo = p; p += (size_t)L * dim * dim;
    const float *rms_ffn = p; p += (size_t)L * dim;
    const float *w1 = p; p += (size_t)L * hidden * dim;
    const float *w2 = p; p += (size_t)L * dim * hidden;
    const float *w3 = p; p += (size_t)L * hidden * dim;
    const float *rms_final = p;

    int n = 0, max = 2 + 9 * L + 1;
    rt_st_spec *specs = calloc((size_t)max, sizeof *specs);
    src_tensor *src = calloc((size_t)max, sizeof *src);
#define ADD(nm, d, r, c_, perm) do { \
        snprintf(specs[n].name, sizeof specs[n].name, "%s", nm); specs[n].dtype = RT_F32; \
        specs[n].n_dims = (c_) > 1 ? 2 : 1; specs[n].shape[0] = (r); specs[n].shape[1] = (c_); \
        src[n] = (src_tensor){(d), (r), (c_) > 1 ? (c_) : 1, (perm)}; n++; } while (0)
    char nm[128];
    ADD("model.embed_tokens.weight", emb, vocab, dim, 0);
    for (int l = 0; l < L; l++) {
#define NM(s) (snprintf(nm, sizeof nm, "model.layers.%d.%s", l, s), nm)
        ADD(NM("input_layernorm.weight"), rms_att + (size_t)l * dim, dim, 1, 0);
        ADD(NM("self_attn.q_proj.weight"), wq + (size_t)l * dim * dim, dim, dim, nh);
        ADD(NM("self_attn.k_proj.weight"), wk + (size_t)l * nkv * hs * dim, nkv * hs, dim, nkv);
        ADD(NM("self_attn.v_proj.weight"), wv + (size_t)l * nkv * hs * dim, nkv * hs, dim, 0);
        ADD(NM("self_attn.o_proj.weight"), wo + (size_t)l * dim * dim, dim, dim, 0);
        ADD(NM("post_attention_layernorm.weight"), rms_ffn + (size_t)l * dim, dim, 1, 0);
        ADD(NM("mlp.gate_proj.weight"), w1 + (size_t)l * hidden * dim, hidden, dim, 0);
        ADD(NM("mlp.down_proj.weight"), w2 + (size_t)l * dim * hidden, dim, hidden, 0);
        ADD(NM("mlp.up_proj.weight"), w3 + (size_t)l * hidden * dim, hidden, dim, 0);
#undef NM
    }
    ADD("model.norm.weight", rms_final, dim, 1, 0);
    if (!c.tie_embeddings) {
        fprintf(stderr, "llama2c_convert: untied checkpoints are not handled\n");
        return 1;
    }
    mkdir(argv[2], 0755);
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", argv[2]);
    base_err err;
    conv cv = {src};
    if (rt_config_write(&c, path, &err) ||
        rt_st_write_folder(argv[2], specs, n, (size_t)1 << 40, fill, &cv, &err)) {
        fprintf(stderr, "llama2c_convert: %s\n", err.msg);
        return 1;
    }
    free(specs);
    free(src);
    free(all);
    return 0;
}
