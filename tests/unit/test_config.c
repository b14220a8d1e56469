/* config.json parsing: both key styles, every architecture, and an error naming the field and the
 * value for everything unsupported. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/config.h"

static int parse(rt_config *c, const char *json, base_err *err)
{
    return rt_config_parse(c, json, strlen(json), "config.json", err);
}

#define BASE "\"hidden_size\": 64, \"intermediate_size\": 128, \"num_hidden_layers\": 2, " \
             "\"num_attention_heads\": 8, \"vocab_size\": 100"

static void expect_error(const char *json, const char *needle)
{
    rt_config c;
    base_err err = {{0}};
    assert_int_equal(parse(&c, json, &err), -1);
    if (!strstr(err.msg, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", err.msg, needle);
    assert_non_null(strstr(err.msg, "config.json"));
}

static void test_old_style_llama3(void **state)
{
    (void)state;
    rt_config c;
    base_err err;
    const char *j = "{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"num_key_value_heads\": 2, "
                    "\"rms_norm_eps\": 1e-5, \"rope_theta\": 500000.0, \"max_position_embeddings\": 4096, "
                    "\"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8.0, \"low_freq_factor\": 1.0, "
                    "\"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 1024}, "
                    "\"torch_dtype\": \"bfloat16\", \"bos_token_id\": 7, \"eos_token_id\": [8, 9], "
                    "\"tie_word_embeddings\": true}";
    assert_int_equal(parse(&c, j, &err), 0);
    assert_int_equal(c.arch, RT_ARCH_LLAMA);
    assert_int_equal(c.dim, 64);
    assert_int_equal(c.ffn_dim, 128);
    assert_int_equal(c.n_layers, 2);
    assert_int_equal(c.n_heads, 8);
    assert_int_equal(c.n_kv_heads, 2);
    assert_int_equal(c.head_dim, 8);
    assert_int_equal(c.max_pos, 4096);
    assert_int_equal(c.rope.type, RT_ROPE_LLAMA3);
    assert_true(c.rope.theta == 500000.0);
    assert_true(c.rope.factor == 8.0);
    assert_int_equal(c.rope.orig_max_pos, 1024);
    assert_int_equal(c.dtype, RT_BF16);
    assert_int_equal(c.bos_id, 7);
    assert_int_equal(c.n_eos, 2);
    assert_true(rt_config_is_eos(&c, 9));
    assert_false(rt_config_is_eos(&c, 7));
    assert_true(c.tie_embeddings);
    assert_false(c.qkv_bias);
}

static void test_new_style_rope_parameters(void **state)
{
    (void)state;
    rt_config c;
    base_err err;
    const char *j = "{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"dtype\": \"float16\", "
                    "\"rope_parameters\": {\"rope_type\": \"linear\", \"factor\": 2.0, \"rope_theta\": 1234.0}}";
    assert_int_equal(parse(&c, j, &err), 0);
    assert_int_equal(c.rope.type, RT_ROPE_LINEAR);
    assert_true(c.rope.factor == 2.0);
    assert_true(c.rope.theta == 1234.0);
    assert_int_equal(c.dtype, RT_F16);
    assert_int_equal(c.n_kv_heads, 8); /* defaults to the query heads */
    assert_int_equal(c.bos_id, -1);
    assert_int_equal(c.n_eos, 0);

    const char *d = "{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", "
                    "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 99.0}}";
    assert_int_equal(parse(&c, d, &err), 0);
    assert_int_equal(c.rope.type, RT_ROPE_DEFAULT);
    assert_true(c.rope.theta == 99.0);
}

static void test_qwen2_and_mistral(void **state)
{
    (void)state;
    rt_config c;
    base_err err;
    assert_int_equal(parse(&c, "{\"architectures\": [\"Qwen2ForCausalLM\"], " BASE
                               ", \"use_sliding_window\": false, \"sliding_window\": 4096}", &err), 0);
    assert_int_equal(c.arch, RT_ARCH_QWEN2);
    assert_true(c.qkv_bias);
    assert_false(c.o_bias);
    assert_int_equal(c.sliding_window, 0);
    assert_int_equal(parse(&c, "{\"architectures\": [\"MistralForCausalLM\"], " BASE ", \"sliding_window\": 32}", &err), 0);
    assert_int_equal(c.arch, RT_ARCH_MISTRAL);
    assert_int_equal(c.sliding_window, 32);
    assert_int_equal(parse(&c, "{\"architectures\": [\"MistralForCausalLM\"], " BASE ", \"sliding_window\": null}", &err), 0);
    assert_int_equal(c.sliding_window, 0);
    assert_int_equal(parse(&c, "{\"model_type\": \"llama\", " BASE ", \"attention_bias\": true, \"head_dim\": 16}", &err), 0);
    assert_true(c.qkv_bias && c.o_bias);
    assert_int_equal(c.head_dim, 16);
}

static void test_errors_name_field_and_value(void **state)
{
    (void)state;
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"intermediate_size\": 1, "
                 "\"num_hidden_layers\": 1, \"vocab_size\": 10}", "'num_attention_heads' is missing");
    expect_error("{\"architectures\": [\"GPT2LMHeadModel\"], " BASE "}", "\"GPT2LMHeadModel\"");
    expect_error("{\"model_type\": \"gemma\", " BASE "}", "\"gemma\"");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}",
                 "rope_scaling.rope_type' has unsupported value \"yarn\"");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_parameters\": {\"rope_type\": \"dynamic\"}}",
                 "rope_parameters.rope_type' has unsupported value \"dynamic\"");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 8}}",
                 "low_freq_factor' is missing");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"num_key_value_heads\": 3}",
                 "'num_key_value_heads' (3) must divide");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"torch_dtype\": \"float64\"}",
                 "'torch_dtype' has unsupported value \"float64\"");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"hidden_act\": \"gelu\"}",
                 "'hidden_act' has unsupported value \"gelu\"");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"mlp_bias\": true}", "'mlp_bias'");
    expect_error("{\"architectures\": [\"Qwen2ForCausalLM\"], " BASE ", \"use_sliding_window\": true}",
                 "'use_sliding_window'");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"eos_token_id\": 100}", "'eos_token_id'");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64.5, \"intermediate_size\": 1, "
                 "\"num_hidden_layers\": 1, \"num_attention_heads\": 8, \"vocab_size\": 10}", "'hidden_size' has value 64.5");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": \"64\", \"intermediate_size\": 1, "
                 "\"num_hidden_layers\": 1, \"num_attention_heads\": 8, \"vocab_size\": 10}", "'hidden_size' must be an integer");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 60, \"intermediate_size\": 1, "
                 "\"num_hidden_layers\": 1, \"num_attention_heads\": 8, \"vocab_size\": 10}", "not a multiple");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rms_norm_eps\": -1}", "'rms_norm_eps'");
#define QC(json) "{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"quantization_config\": " json "}"
    expect_error(QC("{\"quant_method\": \"bitsandbytes\", \"bits\": 4}"),
                 "'quantization_config.quant_method' has unsupported value \"bitsandbytes\" (bits 4)");
    expect_error(QC("{\"quant_method\": \"awq\", \"bits\": 4, \"group_size\": 128, \"version\": \"gemv\"}"),
                 "'quantization_config.version' has unsupported value \"gemv\"");
    expect_error(QC("{\"quant_method\": \"awq\", \"bits\": 3, \"group_size\": 128}"), "'quantization_config.bits' is 3");
    expect_error(QC("{\"quant_method\": \"awq\", \"bits\": 4, \"group_size\": 100}"),
                 "'quantization_config.group_size' is 100");
    expect_error(QC("{\"quant_method\": \"gptq\", \"bits\": 4, \"group_size\": 128, \"desc_act\": \"yes\"}"),
                 "'quantization_config.desc_act' must be true or false");
    expect_error(QC("{\"quant_method\": \"gptq\", \"bits\": 2, \"group_size\": 128}"), "'quantization_config.bits' is 2");
    expect_error(QC("{\"quant_method\": \"gptq\", \"bits\": 4, \"checkpoint_format\": \"marlin\"}"),
                 "'quantization_config.checkpoint_format' has unsupported value \"marlin\"");
    expect_error(QC("{\"quant_method\": \"compressed-tensors\", \"format\": \"marlin-24\"}"),
                 "'quantization_config.format' has unsupported value \"marlin-24\"");
    /* pack-quantized: weight-only int4 / int8, a scale a row or a group, actorder known */
#define CTI(weights, acts) QC("{\"quant_method\": \"compressed-tensors\", \"format\": \"pack-quantized\", " \
                              "\"config_groups\": {\"g\": {\"weights\": " weights ", \"input_activations\": " acts "}}}")
    expect_error(CTI("{\"num_bits\": 2, \"type\": \"int\", \"strategy\": \"group\", \"group_size\": 128}", "null"),
                 "holds 2-bit int weights: dinfer reads int4 and int8 ones");
    /* int-quantized (W8A8): int8 a byte, symmetric; its activations' quantization is not applied */
#define CT8(weights) QC("{\"quant_method\": \"compressed-tensors\", \"format\": \"int-quantized\", \"config_groups\": " \
                        "{\"g\": {\"weights\": " weights ", \"input_activations\": {\"num_bits\": 8, \"type\": \"int\", " \
                        "\"strategy\": \"token\", \"dynamic\": true}}}}")
    expect_error(CT8("{\"num_bits\": 4, \"type\": \"int\", \"strategy\": \"channel\"}"),
                 "holds 4-bit int weights: dinfer reads int-quantized int8 ones");
    expect_error(CT8("{\"num_bits\": 8, \"type\": \"int\", \"strategy\": \"channel\", \"symmetric\": false}"),
                 "weights.symmetric' is false: dinfer reads symmetric int-quantized and naive-quantized weights");
    {
        rt_config kc;
        base_err err;
        static const char cfg[] = CT8("{\"num_bits\": 8, \"type\": \"int\", \"strategy\": \"channel\"}");
        assert_int_equal(parse(&kc, cfg, &err), 0);
        assert_true(kc.quant.method == RT_QUANT_CT_INT && kc.quant.int8_weight && kc.quant.bits == 8);
        /* naive-quantized int4: a signed byte each too */
        static const char naive[] = QC("{\"quant_method\": \"compressed-tensors\", \"format\": \"naive-quantized\", "
                                       "\"config_groups\": {\"g\": {\"weights\": {\"num_bits\": 4, \"type\": \"int\", "
                                       "\"strategy\": \"group\", \"group_size\": 128}}}}");
        assert_int_equal(parse(&kc, naive, &err), 0);
        assert_true(kc.quant.method == RT_QUANT_CT_INT && kc.quant.int8_weight && kc.quant.bits == 4);
    }
    expect_error(CTI("{\"num_bits\": 4, \"type\": \"int\", \"strategy\": \"tensor\"}", "null"),
                 "weights.strategy' has unsupported value \"tensor\" for integer weights");
    expect_error(CTI("{\"num_bits\": 4, \"type\": \"int\", \"strategy\": \"group\", \"group_size\": 100}", "null"),
                 "weights.group_size' must be a positive multiple of 8");
    expect_error(CTI("{\"num_bits\": 4, \"type\": \"int\", \"strategy\": \"group\", \"group_size\": 128, "
                     "\"actorder\": \"dynamic\"}", "null"),
                 "weights.actorder' has unsupported value");
    {
        rt_config kc;
        base_err err;
        static const char cfg[] = CTI("{\"num_bits\": 4, \"type\": \"int\", \"strategy\": \"group\", \"group_size\": "
                                      "128, \"symmetric\": false, \"actorder\": \"group\"}", "null");
        assert_int_equal(parse(&kc, cfg, &err), 0);
        assert_int_equal(kc.quant.method, RT_QUANT_CT_INT);
        assert_int_equal(kc.quant.bits, 4);
        assert_int_equal(kc.quant.group_size, 128);
        assert_true(kc.quant.zero_point && kc.quant.act_order);
    }
    expect_error(QC("{\"quant_method\": \"compressed-tensors\", \"format\": \"float-quantized\"}"),
                 "'quantization_config.config_groups' must hold exactly one group (has 0)");
    expect_error(QC("{\"quant_method\": \"compressed-tensors\", \"format\": \"float-quantized\", \"config_groups\": "
                    "{\"g\": {\"weights\": {\"num_bits\": 4, \"type\": \"int\", \"strategy\": \"group\"}}}}"),
                 "holds 4-bit int weights");
    expect_error(QC("{\"quant_method\": \"compressed-tensors\", \"format\": \"float-quantized\", \"config_groups\": "
                    "{\"g\": {\"weights\": {\"num_bits\": 8, \"type\": \"float\", \"strategy\": \"token\"}}}}"),
                 "weights.strategy' has unsupported value \"token\"");
    /* kv_cache_scheme: static FP8 scales, one a layer or a KV head, are read; the rest refused by field */
#define KV(scheme) QC("{\"quant_method\": \"compressed-tensors\", \"format\": \"float-quantized\", \"config_groups\": " \
                      "{\"g\": {\"weights\": {\"num_bits\": 8, \"type\": \"float\", \"strategy\": \"channel\"}}}, " \
                      "\"kv_cache_scheme\": " scheme "}")
    expect_error(KV("{\"num_bits\": 8}"), "'quantization_config.kv_cache_scheme' asks for 8-bit (no type) KV-cache values");
    expect_error(KV("{\"num_bits\": 4, \"type\": \"int\", \"strategy\": \"tensor\"}"), "asks for 4-bit int KV-cache");
    expect_error(KV("{\"num_bits\": 8, \"type\": \"float\", \"strategy\": \"tensor\", \"dynamic\": true}"),
                 "'quantization_config.kv_cache_scheme.dynamic' is not false");
    expect_error(KV("{\"num_bits\": 8, \"type\": \"float\", \"strategy\": \"channel\"}"),
                 "'quantization_config.kv_cache_scheme.strategy' has unsupported value \"channel\"");
    expect_error(KV("[1]"), "'quantization_config.kv_cache_scheme' must be an object or null");
    {
        rt_config kc;
        base_err kerr = {{0}};
        assert_int_equal(parse(&kc, KV("{\"num_bits\": 8, \"type\": \"float\", \"strategy\": \"attn_head\", "
                                       "\"dynamic\": false, \"symmetric\": true}"), &kerr), 0);
        assert_int_equal(kc.quant.kv_scales, RT_KV_SCALES_HEAD);
        assert_int_equal(parse(&kc, KV("{\"num_bits\": 8, \"type\": \"float\", \"strategy\": \"tensor\"}"), &kerr), 0);
        assert_int_equal(kc.quant.kv_scales, RT_KV_SCALES_TENSOR);
        assert_int_equal(parse(&kc, KV("null"), &kerr), 0);
        assert_int_equal(kc.quant.kv_scales, RT_KV_SCALES_NONE);
    }
#undef KV
    expect_error(QC("{\"quant_method\": \"fp8\", \"weight_block_size\": [128]}"), "'quantization_config.weight_block_size'");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"quantization_config\": {\"bits\": 4}}",
                 "'quantization_config' has no quant_method");
    expect_error(QC("4"), "'quantization_config' must be an object");
#undef QC
    expect_error("[1, 2]", "not a JSON object");
    expect_error("{\"architectures\": ", "not valid JSON");
}

/* head_dim is bounded (RT_MAX_HEAD_DIM) whether given or derived: the kernels size stack and
 * register arrays by it, and a larger one overflowed them (a model folder crashed every rank). */
static void test_head_dim_limit(void **state)
{
    (void)state;
    rt_config c;
    base_err err;
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 1040, \"intermediate_size\": 8, "
                 "\"num_hidden_layers\": 1, \"num_attention_heads\": 1, \"vocab_size\": 10}",
                 "head_dim 1040 (hidden_size 1040 / num_attention_heads 1) is over the supported 1024");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"head_dim\": 1026}", "'head_dim' has value 1026");
    char j[256];
    snprintf(j, sizeof j, "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": %d, \"intermediate_size\": 8, "
             "\"num_hidden_layers\": 1, \"num_attention_heads\": 2, \"vocab_size\": 10}", 2 * RT_MAX_HEAD_DIM);
    assert_int_equal(parse(&c, j, &err), 0);
    assert_int_equal(c.head_dim, RT_MAX_HEAD_DIM);
}

/* Python's json keeps the last of two equal keys, cJSON the first: refused rather than guessed. */
static void test_duplicate_keys(void **state)
{
    (void)state;
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"vocab_size\": 200}",
                 "field 'vocab_size' appears twice");
    expect_error("{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"rope_scaling\": {\"rope_type\": \"linear\", "
                 "\"factor\": 2, \"factor\": 4}}", "field 'rope_scaling.factor' appears twice");
}

static void test_write_round_trip(void **state)
{
    (void)state;
    rt_config c, back;
    base_err err;
    const char *j = "{\"architectures\": [\"MistralForCausalLM\"], " BASE ", \"num_key_value_heads\": 4, "
                    "\"sliding_window\": 16, \"rope_scaling\": {\"type\": \"llama3\", \"factor\": 8.0, "
                    "\"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, \"original_max_position_embeddings\": 64}, "
                    "\"eos_token_id\": [3, 4]}";
    assert_int_equal(parse(&c, j, &err), 0);
    char dir[] = "/tmp/dinfer_cfg_XXXXXX", path[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/config.json", dir);
    assert_int_equal(rt_config_write(&c, path, &err), 0);
    assert_int_equal(rt_config_load(&back, dir, &err), 0);
    assert_memory_equal(&c, &back, sizeof c);
    remove(path);
    rmdir(dir);
}

/* generation_config.json's eos_token_id joins config.json's (an id or a list; repeats once); a bad
 * one is refused naming the file. */
static void test_generation_config_eos(void **state)
{
    (void)state;
    rt_config c;
    base_err err;
    const char *j = "{\"architectures\": [\"LlamaForCausalLM\"], " BASE ", \"eos_token_id\": 3}";
    assert_int_equal(parse(&c, j, &err), 0);
    char dir[] = "/tmp/dinfer_cfg_XXXXXX", path[256], gen[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/config.json", dir);
    snprintf(gen, sizeof gen, "%s/generation_config.json", dir);
    assert_int_equal(rt_config_write(&c, path, &err), 0);
    FILE *f = fopen(gen, "w");
    fputs("{\"bos_token_id\": 1, \"eos_token_id\": [3, 9]}", f);
    fclose(f);
    assert_int_equal(rt_config_load(&c, dir, &err), 0);
    assert_int_equal(c.n_eos, 2);
    assert_int_equal(c.eos_ids[0], 3);
    assert_int_equal(c.eos_ids[1], 9);
    assert_true(rt_config_is_eos(&c, 9));
    f = fopen(gen, "w");
    fputs("{\"eos_token_id\": 100000}", f);
    fclose(f);
    assert_int_equal(rt_config_load(&c, dir, &err), -1);
    assert_non_null(strstr(err.msg, "generation_config.json"));
    assert_non_null(strstr(err.msg, "eos_token_id"));
    f = fopen(gen, "w");
    fputs("[1]", f);
    fclose(f);
    assert_int_equal(rt_config_load(&c, dir, &err), -1);
    assert_non_null(strstr(err.msg, "generation_config.json: not a JSON object"));
    remove(gen);
    remove(path);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generation_config_eos),
        cmocka_unit_test(test_old_style_llama3),
        cmocka_unit_test(test_new_style_rope_parameters),
        cmocka_unit_test(test_qwen2_and_mistral),
        cmocka_unit_test(test_errors_name_field_and_value),
        cmocka_unit_test(test_write_round_trip),
        cmocka_unit_test(test_head_dim_limit),
        cmocka_unit_test(test_duplicate_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
