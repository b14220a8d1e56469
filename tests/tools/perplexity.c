/* perplexity: how well a model (optionally quantized as it loads) predicts a text, on one CPU rank.
 *
 *   perplexity --model DIR --text FILE [--quantize fp8|int8|int4|bf16] [--quantize-lm-head fp8|int8|int4]
 *              [--kv-dtype fp8] [--window N]
 *
 * bf16 rounds every weight (embeddings and norms too) to BF16, as a BF16 checkpoint of the same
 * model would hold them, computing in fp32 like the rest.
 * The text is encoded with DIR/tokenizer.json (a BOS first, as the tokenizer adds it) and cut into
 * windows of N tokens (default: the context length), each scored from its start; every token after
 * a window's first is scored by the log-softmax the model gives it, fp32 on the CPU. Prints the
 * tokens scored, the mean negative log-likelihood and its exponential, the perplexity. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"
#include "runtime/backend.h"
#include "runtime/config.h"
#include "runtime/dtype.h"
#include "runtime/forward.h"
#include "runtime/kv_cache.h"
#include "runtime/model.h"
#include "runtime/text/tokenizer.h"
#include "tests/tools/lse.h"

/* Every element of a weight rounded to BF16 (the CPU backend's fp32 in host memory; a panel
 * layout's padding rows are zeros and stay so). */
static void round_bf16(rt_tensor *t)
{
    if (!t->data || t->q.kind)
        return;
    int64_t rows = t->layout == RT_PANELS8 ? (t->rows + 7) / 8 * 8 : t->rows;
    float *w = t->data;
    for (int64_t i = 0; i < rows * t->cols; i++)
        w[i] = rt_bf16_to_f32(rt_f32_to_bf16(w[i]));
}

static int fail(const char *what, const base_err *err)
{
    fprintf(stderr, "perplexity: %s%s%s\n", what, err ? ": " : "", err ? err->msg : "");
    return 1;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *text_path = NULL, *quantize = NULL, *quantize_head = NULL;
    bool kv_fp8 = false;
    int window = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--model") == 0)
            model = argv[i + 1];
        else if (strcmp(argv[i], "--text") == 0)
            text_path = argv[i + 1];
        else if (strcmp(argv[i], "--quantize") == 0)
            quantize = argv[i + 1];
        else if (strcmp(argv[i], "--quantize-lm-head") == 0)
            quantize_head = argv[i + 1];
        else if (strcmp(argv[i], "--kv-dtype") == 0)
            kv_fp8 = strcmp(argv[i + 1], "fp8") == 0;
        else if (strcmp(argv[i], "--window") == 0)
            window = atoi(argv[i + 1]);
        else
            return fail("usage: perplexity --model DIR --text FILE [--quantize fp8|int8|int4|bf16] "
                        "[--quantize-lm-head fp8|int8|int4] [--kv-dtype fp8] [--window N]", NULL);
    }
    if (!model || !text_path)
        return fail("usage: perplexity --model DIR --text FILE [--quantize fp8|int8|int4|bf16] "
                    "[--quantize-lm-head fp8|int8|int4] [--kv-dtype fp8] [--window N]", NULL);
    base_err err = {{0}};
    rt_config cfg;
    if (rt_config_load(&cfg, model, &err))
        return fail("config", &err);
    const bool bf16 = quantize && strcmp(quantize, "bf16") == 0;
    if (quantize && !bf16 && rt_quant_for_load(&cfg.quant, quantize))
        return fail("--quantize is not fp8, int8, int4 or bf16", NULL);
    if (quantize_head && rt_quant_for_load(&cfg.head_quant, quantize_head))
        return fail("--quantize-lm-head is not fp8, int8 or int4", NULL);
    cfg.kv_fp8 = kv_fp8;
    if (window <= 1 || window > cfg.max_pos)
        window = cfg.max_pos;
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer.json", model);
    rt_tokenizer *tok = rt_tokenizer_load(path, &err);
    size_t len = 0;
    char *text = NULL;
    if (tok && base_read_file(text_path, 64 << 20, &text, &len, &err))
        text = NULL;
    int32_t *ids = NULL;
    int n = text ? rt_tokenizer_encode(tok, text, len, true, &ids, &err) : -1;
    if (n < 2)
        return fail("reading the text", &err);

    rt_backend *be = rt_cpu_backend_create(0);
    rt_model m;
    rt_shard s;
    rt_shard_whole(&s, &cfg);
    const int bs = 16, nb = rt_kv_blocks_for(window, bs);
    rt_kv_cache kv;
    rt_forward *fw = NULL;
    rt_forward_limits lim = {.max_tokens = window, .max_seqs = 1, .max_blocks = nb, .max_logits = window};
    if (rt_model_load(&m, &cfg, &s, model, be, &err) ||
        rt_kv_cache_for_model(&kv, &m, nb, bs, &err) ||
        rt_forward_create(&fw, &m, &kv, &lim, NULL, &err))
        return fail("loading the model", &err);
    if (bf16) {
        for (int l = 0; l < m.n_layers; l++) {
            rt_tensor *ts[RT_LAYER_TENSORS];
            rt_layer_tensors(&m.layers[l], ts);
            for (int i = 0; i < RT_LAYER_TENSORS; i++)
                round_bf16(ts[i]);
        }
        round_bf16(&m.embed);
        round_bf16(&m.final_norm);
        if (m.lm_head.data != m.embed.data)
            round_bf16(&m.lm_head);
    }

    int32_t *pos = malloc(sizeof *pos * (size_t)window), *seq = calloc((size_t)window, sizeof *seq);
    int32_t *blocks = malloc(sizeof *blocks * (size_t)nb), *rows_ids = malloc(sizeof *rows_ids * (size_t)window);
    rt_step_sampling *rows = calloc((size_t)window, sizeof *rows);
    rt_sample_out *out = calloc((size_t)window, sizeof *out);
    if (!pos || !seq || !blocks || !rows_ids || !rows || !out)
        return fail("out of memory", NULL);
    for (int i = 0; i < window; i++)
        pos[i] = rows_ids[i] = i;
    for (int i = 0; i < nb; i++)
        blocks[i] = i;
    double nll = 0;
    long scored = 0;
    for (int start = 0; start + 1 < n; start += window) {
        const int w = n - start < window ? n - start : window;
        rt_batch b = {.n_tokens = w, .tokens = ids + start, .pos = pos, .seq = seq, .n_seqs = 1,
                      .block_tables = blocks, .max_blocks = nb, .n_logits = w, .logit_rows = rows_ids};
        if (rt_forward_step(fw, &b, rows, out, &err))
            return fail("the forward step", &err);
        const float *logits = rt_forward_host_logits(fw);
        if (!logits)
            return fail("no host logits", NULL);
        const int V = cfg.vocab_size;
        for (int i = 0; i + 1 < w; i++) {
            const float *l = logits + (size_t)i * (size_t)V;
            nll -= (double)l[ids[start + i + 1]] - row_lse(l, V);
            scored++;
        }
    }
    char what[96];
    char head[96] = "";
    if (quantize_head) {
        char hq[80];
        snprintf(head, sizeof head, ", LM head %s", rt_quant_describe(&cfg.head_quant, hq, sizeof hq));
    }
    printf("%s: %ld tokens scored (windows of %d), mean NLL %.5f, perplexity %.4f (%s%s%s)\n", model, scored, window,
           nll / (double)scored, exp(nll / (double)scored),
           bf16 ? "weights rounded to BF16" : rt_quant_describe(&cfg.quant, what, sizeof what), head,
           kv_fp8 ? ", FP8 KV cache" : "");
    rt_forward_destroy(fw);
    rt_kv_cache_destroy(&kv);
    rt_model_free(&m);
    be->ops->destroy(be);
    rt_tokenizer_free(tok);
    free(text);
    free(ids);
    free(pos);
    free(seq);
    free(blocks);
    free(rows_ids);
    free(rows);
    free(out);
    return 0;
}
