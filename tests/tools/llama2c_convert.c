/* Test helper: converts a llama2.c "v0" checkpoint (such as stories260K.bin) into a Hugging Face
 * folder (config.json + model.safetensors, and tokenizer.json from llama2.c's tokenizer file), as transformers' own Llama conversion does: the rows
 * of wq and wk are permuted within each head from Meta's interleaved RoPE pairs (i, i+1) to the
 * half-split pairs (i, i + head_size/2) that Hugging Face's Llama rotates. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

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

/* A tokenizer piece as SentencePiece writes it: llama2.c's export turned "\u2581" into spaces and
 * BOS/EOS into "\n<s>\n" / "\n</s>\n"; this undoes both. */
static char *sp_piece(const char *t, int id)
{
    if (id == 1)
        return strdup("<s>");
    if (id == 2)
        return strdup("</s>");
    size_t n = strlen(t), k = 0;
    char *o = malloc(3 * n + 1);
    for (size_t i = 0; i < n; i++) {
        if (t[i] == ' ') {
            memcpy(o + k, "\xe2\x96\x81", 3);
            k += 3;
        } else {
            o[k++] = t[i];
        }
    }
    o[k] = '\0';
    return o;
}

typedef struct merge_cand {
    int l, r;     /* vocabulary ids of the two parts */
    float score;  /* the merged piece's */
    int merged;   /* its id (order among equal scores: the vocabulary's) */
} merge_cand;

static int cmp_merge(const void *a, const void *b)
{
    const merge_cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1; /* higher scores merge first */
    if (x->merged != y->merged)
        return x->merged < y->merged ? -1 : 1;
    if (x->l != y->l)
        return x->l < y->l ? -1 : 1;
    return x->r < y->r ? -1 : x->r > y->r;
}

/* OUT_DIR/tokenizer.json from llama2.c's tokenizer file, as transformers' LlamaConverter builds it
 * from a SentencePiece model: BPE with byte fallback and fused unknowns; every piece's splits into
 * two pieces are its merges, ordered by the merged piece's score (then its id, then the parts'
 * ids); "\u2581" prepended and spaces replaced on the way in, undone on the way out; BOS added. */
static int write_tokenizer(const char *bin, int vocab, const char *dir)
{
    FILE *f = fopen(bin, "rb");
    if (!f) {
        fprintf(stderr, "llama2c_convert: %s: cannot open\n", bin);
        return 1;
    }
    int max_len;
    char **piece = calloc((size_t)vocab, sizeof *piece);
    float *score = calloc((size_t)vocab, sizeof *score);
    if (fread(&max_len, 4, 1, f) != 1)
        goto short_read;
    for (int i = 0; i < vocab; i++) {
        int len;
        if (fread(&score[i], 4, 1, f) != 1 || fread(&len, 4, 1, f) != 1 || len < 0 || len > 1024)
            goto short_read;
        char *t = malloc((size_t)len + 1);
        if (fread(t, 1, (size_t)len, f) != (size_t)len) {
            free(t);
            goto short_read;
        }
        t[len] = '\0';
        piece[i] = sp_piece(t, i);
        free(t);
    }
    fclose(f);
    cJSON *root = cJSON_CreateObject(), *v = cJSON_CreateObject(), *m = cJSON_CreateArray();
    for (int i = 0; i < vocab; i++)
        cJSON_AddNumberToObject(v, piece[i], i);
    /* merges: every split of a piece, at character boundaries, into two pieces */
    size_t n = 0, cap = 1024;
    merge_cand *mc = malloc(cap * sizeof *mc);
    for (int i = 0; i < vocab; i++) {
        const char *s = piece[i];
        for (size_t at = 1; s[at]; at++) {
            if (((unsigned char)s[at] & 0xC0) == 0x80)
                continue; /* inside a character */
            int l = -1, r = -1;
            for (int j = 0; j < vocab; j++) {
                if (strlen(piece[j]) == at && memcmp(piece[j], s, at) == 0)
                    l = j;
                if (strcmp(piece[j], s + at) == 0)
                    r = j;
            }
            if (l < 0 || r < 0)
                continue;
            if (n == cap)
                mc = realloc(mc, (cap *= 2) * sizeof *mc);
            mc[n++] = (merge_cand){l, r, score[i], i};
        }
    }
    qsort(mc, n, sizeof *mc, cmp_merge);
    for (size_t i = 0; i < n; i++) {
        cJSON *pair = cJSON_CreateArray();
        cJSON_AddItemToArray(pair, cJSON_CreateString(piece[mc[i].l]));
        cJSON_AddItemToArray(pair, cJSON_CreateString(piece[mc[i].r]));
        cJSON_AddItemToArray(m, pair);
    }
    free(mc);
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (int i = 0; i < 3; i++) {
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", i);
        cJSON_AddStringToObject(a, "content", piece[i]);
        cJSON_AddBoolToObject(a, "single_word", 0);
        cJSON_AddBoolToObject(a, "lstrip", 0);
        cJSON_AddBoolToObject(a, "rstrip", 0);
        cJSON_AddBoolToObject(a, "normalized", 0);
        cJSON_AddBoolToObject(a, "special", 1);
        cJSON_AddItemToArray(added, a);
    }
    cJSON *norm = cJSON_Parse("{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": "
                              "\"\\u2581\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": "
                              "\"\\u2581\"}]}");
    cJSON_AddItemToObject(root, "normalizer", norm);
    cJSON_AddNullToObject(root, "pre_tokenizer");
    cJSON_AddItemToObject(root, "post_processor",
                          cJSON_Parse("{\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": "
                                      "\"<s>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], "
                                      "\"pair\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}}, {\"Sequence\": "
                                      "{\"id\": \"A\", \"type_id\": 0}}, {\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": "
                                      "1}}, {\"Sequence\": {\"id\": \"B\", \"type_id\": 1}}], \"special_tokens\": {\"<s>\": "
                                      "{\"id\": \"<s>\", \"ids\": [1], \"tokens\": [\"<s>\"]}}}"));
    cJSON_AddItemToObject(root, "decoder",
                          cJSON_Parse("{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": "
                                      "{\"String\": \"\\u2581\"}, \"content\": \" \"}, {\"type\": \"ByteFallback\"}, "
                                      "{\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, "
                                      "\"stop\": 0}]}"));
    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddStringToObject(model, "unk_token", "<unk>");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", 1);
    cJSON_AddBoolToObject(model, "byte_fallback", 1);
    cJSON_AddBoolToObject(model, "ignore_merges", 0);
    cJSON_AddItemToObject(model, "vocab", v);
    cJSON_AddItemToObject(model, "merges", m);
    char *text = cJSON_Print(root);
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    FILE *o = fopen(path, "w");
    const int bad = !o || !text || fputs(text, o) < 0 || fputc('\n', o) == EOF;
    if (o && fclose(o) != 0) {
        fprintf(stderr, "llama2c_convert: %s: cannot write\n", path);
        return 1;
    }
    cJSON_Delete(root);
    free(text);
    for (int i = 0; i < vocab; i++)
        free(piece[i]);
    free(piece), free(score);
    if (bad)
        fprintf(stderr, "llama2c_convert: %s: cannot write\n", path);
    return bad;
short_read:
    fclose(f);
    fprintf(stderr, "llama2c_convert: %s: short read\n", bin);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: llama2c_convert MODEL.bin OUT_DIR [TOKENIZER.bin]\n"
                        "Writes OUT_DIR/config.json and model.safetensors, and with TOKENIZER.bin (llama2.c's\n"
                        "tokenizer file) OUT_DIR/tokenizer.json.\n");
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
    return argc == 4 ? write_tokenizer(argv[3], vocab, argv[2]) : 0;
}
