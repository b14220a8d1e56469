/* config.json's quantization_config: the formats published quantized checkpoints use, each read
 * as its tools write it, and everything else refused by the field that makes it unreadable. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "runtime/config.h"

static const cJSON *qfield(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* An integer field, def when absent; -1 when present and not an integer. */
static int qint(const cJSON *obj, const char *key, int def, int *out)
{
    const cJSON *v = qfield(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || fabs(v->valuedouble) > 1e9)
        return -1;
    *out = (int)v->valuedouble;
    return 0;
}

static const char *qstr(const cJSON *obj, const char *key)
{
    const cJSON *v = qfield(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* A boolean field, def when absent; -1 when present and not a boolean. */
static int qbool(const cJSON *obj, const char *key, bool def, bool *out)
{
    const cJSON *v = qfield(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return -1;
    *out = cJSON_IsTrue(v);
    return 0;
}

/* [rows, cols] of positive integers. */
static int qpair(const cJSON *v, int *rows, int *cols)
{
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
        return -1;
    const cJSON *a = v->child, *b = a->next;
    if (!cJSON_IsNumber(a) || !cJSON_IsNumber(b) || a->valuedouble != floor(a->valuedouble) ||
        b->valuedouble != floor(b->valuedouble) || a->valuedouble < 1 || b->valuedouble < 1 ||
        a->valuedouble > 65536 || b->valuedouble > 65536)
        return -1;
    *rows = (int)a->valuedouble;
    *cols = (int)b->valuedouble;
    return 0;
}

/* compressed-tensors' kv_cache_scheme (NULL: none): static FP8 scales, one a layer or a KV head,
 * which the checkpoint's k_scale and v_scale tensors hold. */
static int parse_kv_scheme(const cJSON *kvs, const char *name, rt_kv_scales *kv, base_err *err)
{
    if (!kvs)
        return 0;
    if (!cJSON_IsObject(kvs))
        return base_errf(err, "%s: field 'quantization_config.kv_cache_scheme' must be an object or null", name);
    int bits = 0;
    bool sym = true, dynamic = false;
    const char *type = qstr(kvs, "type"), *strategy = qstr(kvs, "strategy");
    if (qint(kvs, "num_bits", 0, &bits) || bits != 8 || !type || strcmp(type, "float") != 0)
        return base_errf(err, "%s: field 'quantization_config.kv_cache_scheme' asks for %d-bit %.16s KV-cache "
                              "values: dinfer reads 8-bit float (FP8) ones", name, bits, type ? type : "(no type)");
    if (qbool(kvs, "dynamic", false, &dynamic) || dynamic)
        return base_errf(err, "%s: field 'quantization_config.kv_cache_scheme.dynamic' is not false: dinfer reads "
                              "static KV-cache scales (--kv-dtype fp8 alone computes a scale a token itself)", name);
    if (qbool(kvs, "symmetric", true, &sym) || !sym)
        return base_errf(err, "%s: field 'quantization_config.kv_cache_scheme.symmetric' is not true: FP8 KV-cache "
                              "scales are symmetric", name);
    if (strategy && strcmp(strategy, "tensor") == 0)
        *kv = RT_KV_SCALES_TENSOR;
    else if (strategy && strcmp(strategy, "attn_head") == 0)
        *kv = RT_KV_SCALES_HEAD;
    else
        return base_errf(err, "%s: field 'quantization_config.kv_cache_scheme.strategy' has unsupported value "
                              "\"%.16s\" (supported: tensor, attn_head)", name, strategy ? strategy : "(missing)");
    return 0;
}

/* compressed-tensors integer weights: "pack-quantized" (packed) of 4 or 8 bits, or a signed byte
 * each ("int-quantized": 8 bits; "naive-quantized": 4 or 8), a scale a row or a group, zero points
 * when asymmetric (packed only). Quantized activations (W8A8's input_activations) are not applied:
 * activations stay in the compute type, as with FP8's input scales. w: the group's weights. */
static int parse_ct_int(rt_quant *q, const cJSON *g, const cJSON *w, bool packed, bool naive, const char *name,
                        base_err *err)
{
    const char *type = qstr(w, "type"), *strategy = qstr(w, "strategy");
    int bits = 0;
    bool sym = true, dynamic = false;
    const cJSON *ao = qfield(w, "actorder");
    if (qint(w, "num_bits", 0, &bits) || (bits != 8 && (bits != 4 || !(packed || naive))) || !type ||
        strcmp(type, "int") != 0)
        return base_errf(err, "%s: field 'quantization_config.config_groups.%.32s.weights' holds %d-bit %.16s "
                              "weights: dinfer reads %s", name, g->string, bits, type ? type : "(no type)",
                         packed || naive ? "int4 and int8 ones" : "int-quantized int8 ones");
    if (qbool(w, "symmetric", true, &sym) || qbool(w, "dynamic", false, &dynamic) || dynamic)
        return base_errf(err, "%s: field 'quantization_config.config_groups.%.32s.weights': integer weights must "
                              "have static scales (dynamic false) and a boolean symmetric", name, g->string);
    if (!packed && !sym)
        return base_errf(err, "%s: field 'quantization_config.config_groups.%.32s.weights.symmetric' is false: "
                              "dinfer reads symmetric int-quantized and naive-quantized weights", name, g->string);
    if (ao && !cJSON_IsNull(ao) && !(cJSON_IsString(ao) && (strcmp(ao->valuestring, "group") == 0 ||
                                                            strcmp(ao->valuestring, "weight") == 0 ||
                                                            strcmp(ao->valuestring, "static") == 0)))
        return base_errf(err, "%s: field 'quantization_config.config_groups.%.32s.weights.actorder' has unsupported "
                              "value (supported: null, group, weight, static)", name, g->string);
    *q = (rt_quant){.method = RT_QUANT_CT_INT, .kind = RT_QK_INT, .bits = bits, .zero_point = !sym,
                    .symmetric = sym, .int8_weight = !packed};
    if (strategy && strcmp(strategy, "channel") == 0) {
        q->scale = RT_QSCALE_CHANNEL;
    } else if (strategy && strcmp(strategy, "group") == 0) {
        q->scale = RT_QSCALE_GROUP;
        if (qint(w, "group_size", 0, &q->group_size) || q->group_size < 8 || q->group_size % 8)
            return base_errf(err, "%s: field 'quantization_config.config_groups.%.32s.weights.group_size' must be "
                                  "a positive multiple of 8", name, g->string);
        /* "group": columns quantized out of order, weight_g_idx says each one's group ("weight" and
         * "static" keep the groups in order) */
        q->act_order = ao && cJSON_IsString(ao) && strcmp(ao->valuestring, "group") == 0;
    } else {
        return base_errf(err, "%s: field 'quantization_config.config_groups.%.32s.weights.strategy' has unsupported "
                              "value \"%.16s\" for integer weights (supported: channel, group)",
                         name, g->string, strategy ? strategy : "(missing)");
    }
    return 0;
}

/* compressed-tensors: one config group of FP8 weights, or of integer ones (pack-quantized,
 * int-quantized, or naive-quantized of type int). */
static int parse_ct(rt_quant *q, const cJSON *obj, const char *name, base_err *err)
{
    const char *fmt = qstr(obj, "format");
    const bool packed = fmt && strcmp(fmt, "pack-quantized") == 0, naive = fmt && strcmp(fmt, "naive-quantized") == 0;
    const bool ints = fmt && strcmp(fmt, "int-quantized") == 0;
    if (!fmt || (strcmp(fmt, "float-quantized") != 0 && !naive && !packed && !ints))
        return base_errf(err, "%s: field 'quantization_config.format' has unsupported value \"%.32s\": dinfer reads "
                              "compressed-tensors FP8 weights (float-quantized or naive-quantized) and integer ones "
                              "(pack-quantized, int-quantized)", name, fmt ? fmt : "(missing)");
    rt_kv_scales kv = RT_KV_SCALES_NONE;
    if (parse_kv_scheme(qfield(obj, "kv_cache_scheme"), name, &kv, err))
        return -1;
    const cJSON *groups = qfield(obj, "config_groups");
    if (!cJSON_IsObject(groups) || cJSON_GetArraySize(groups) != 1)
        return base_errf(err, "%s: field 'quantization_config.config_groups' must hold exactly one group (has %d)",
                         name, cJSON_IsObject(groups) ? cJSON_GetArraySize(groups) : 0);
    const cJSON *g = groups->child, *w = qfield(g, "weights");
    if (!cJSON_IsObject(w))
        return base_errf(err, "%s: field 'quantization_config.config_groups.%.32s.weights' is missing", name,
                         g->string);
    const char *wtype = qstr(w, "type");
    if (packed || ints || (naive && wtype && strcmp(wtype, "int") == 0)) {
        if (parse_ct_int(q, g, w, packed, naive, name, err))
            return -1;
        q->kv_scales = kv;
        return 0;
    }
    const char *type = qstr(w, "type"), *strategy = qstr(w, "strategy");
    int bits = 0;
    bool sym = true, dynamic = false;
    if (qint(w, "num_bits", 0, &bits) || bits != 8 || !type || strcmp(type, "float") != 0)
        return base_errf(err, "%s: field 'quantization_config.config_groups.%.32s.weights' holds %d-bit %.16s "
                              "weights: dinfer reads 8-bit float (FP8) ones from compressed-tensors",
                         name, g->string, bits, type ? type : "(no type)");
    if (qbool(w, "symmetric", true, &sym) || !sym || qbool(w, "dynamic", false, &dynamic) || dynamic)
        return base_errf(err, "%s: field 'quantization_config.config_groups.%.32s.weights': FP8 weights must be "
                              "symmetric with static scales", name, g->string);
    *q = (rt_quant){.method = RT_QUANT_CT_FP8, .kind = RT_QK_FP8, .bits = 8, .kv_scales = kv};
    if (strategy && strcmp(strategy, "tensor") == 0) {
        q->scale = RT_QSCALE_TENSOR;
    } else if (strategy && strcmp(strategy, "channel") == 0) {
        q->scale = RT_QSCALE_CHANNEL;
    } else if (strategy && strcmp(strategy, "group") == 0) {
        q->scale = RT_QSCALE_GROUP;
        if (qint(w, "group_size", 0, &q->group_size) || q->group_size < 1)
            return base_errf(err, "%s: field 'quantization_config.config_groups.%.32s.weights.group_size' must be "
                                  "a positive integer", name, g->string);
    } else if (strategy && strcmp(strategy, "block") == 0) {
        q->scale = RT_QSCALE_BLOCK;
        if (qpair(qfield(w, "block_structure"), &q->block_rows, &q->block_cols))
            return base_errf(err, "%s: field 'quantization_config.config_groups.%.32s.weights.block_structure' "
                                  "must be [rows, cols] of positive integers", name, g->string);
    } else {
        return base_errf(err, "%s: field 'quantization_config.config_groups.%.32s.weights.strategy' has unsupported "
                              "value \"%.16s\" (supported: tensor, channel, group, block)",
                         name, g->string, strategy ? strategy : "(missing)");
    }
    return 0;
}

static int parse_awq(rt_quant *q, const cJSON *obj, const char *name, base_err *err)
{
    int bits = 0, group = 0;
    bool zero = true;
    const char *version = qstr(obj, "version");
    if (qint(obj, "bits", 0, &bits) || bits != 4)
        return base_errf(err, "%s: field 'quantization_config.bits' is %d: AWQ checkpoints are read with 4 bits",
                         name, bits);
    if (qint(obj, "group_size", 0, &group) || group < 8 || group % 8)
        return base_errf(err, "%s: field 'quantization_config.group_size' is %d: AWQ needs a positive multiple of 8",
                         name, group);
    if (version && strcasecmp(version, "gemm") != 0)
        return base_errf(err, "%s: field 'quantization_config.version' has unsupported value \"%.16s\": dinfer reads "
                              "AWQ's GEMM packing", name, version);
    if (qbool(obj, "zero_point", true, &zero) || !zero)
        return base_errf(err, "%s: field 'quantization_config.zero_point' is false: dinfer reads AWQ checkpoints "
                              "with zero points", name);
    *q = (rt_quant){.method = RT_QUANT_AWQ, .kind = RT_QK_INT, .scale = RT_QSCALE_GROUP, .bits = 4,
                    .group_size = group, .zero_point = true, .scales_f16 = true};
    return 0;
}

static int parse_gptq(rt_quant *q, const cJSON *obj, const char *name, base_err *err)
{
    int bits = 0, group = 0;
    bool desc_act = false, sym = true;
    const char *fmt = qstr(obj, "checkpoint_format");
    if (qint(obj, "bits", 0, &bits) || (bits != 4 && bits != 8))
        return base_errf(err, "%s: field 'quantization_config.bits' is %d: GPTQ checkpoints are read with 4 or 8 bits",
                         name, bits);
    if (qint(obj, "group_size", -1, &group) || (group != -1 && (group < 8 || group % 8)))
        return base_errf(err, "%s: field 'quantization_config.group_size' is %d: GPTQ needs -1 (per channel) or a "
                              "positive multiple of 8", name, group);
    if (qbool(obj, "desc_act", false, &desc_act))
        return base_errf(err, "%s: field 'quantization_config.desc_act' must be true or false", name);
    if (qbool(obj, "sym", true, &sym))
        return base_errf(err, "%s: field 'quantization_config.sym' must be true or false", name);
    if (fmt && strcmp(fmt, "gptq") != 0 && strcmp(fmt, "gptq_v2") != 0)
        return base_errf(err, "%s: field 'quantization_config.checkpoint_format' has unsupported value \"%.16s\" "
                              "(supported: gptq, gptq_v2)", name, fmt);
    *q = (rt_quant){.method = RT_QUANT_GPTQ, .kind = RT_QK_INT, .bits = bits,
                    .scale = group == -1 ? RT_QSCALE_CHANNEL : RT_QSCALE_GROUP, .group_size = group > 0 ? group : 0,
                    .zero_point = true, /* stored even when symmetric: read as written */
                    .gptq_v1 = !fmt || strcmp(fmt, "gptq") == 0, .symmetric = sym, .scales_f16 = true,
                    .act_order = desc_act && group > 0 /* one group a row has no order */};
    return 0;
}

static int parse_fp8(rt_quant *q, const cJSON *obj, const char *name, base_err *err)
{
    *q = (rt_quant){.method = RT_QUANT_FP8, .kind = RT_QK_FP8, .scale = RT_QSCALE_BLOCK, .bits = 8};
    if (qpair(qfield(obj, "weight_block_size"), &q->block_rows, &q->block_cols))
        return base_errf(err, "%s: field 'quantization_config.weight_block_size' must be [rows, cols] of positive "
                              "integers", name);
    return 0;
}

int rt_quant_parse(rt_quant *q, const cJSON *obj, const char *name, base_err *err)
{
    memset(q, 0, sizeof *q);
    if (!obj || cJSON_IsNull(obj))
        return 0;
    if (!cJSON_IsObject(obj))
        return base_errf(err, "%s: field 'quantization_config' must be an object", name);
    const char *m = qstr(obj, "quant_method");
    if (!m)
        return base_errf(err, "%s: field 'quantization_config' has no quant_method: a quantized checkpoint dinfer "
                              "cannot read (load its BF16, F16 or F32 weights)", name);
    if (strcmp(m, "compressed-tensors") == 0)
        return parse_ct(q, obj, name, err);
    if (strcmp(m, "fp8") == 0)
        return parse_fp8(q, obj, name, err);
    if (strcmp(m, "awq") == 0)
        return parse_awq(q, obj, name, err);
    if (strcmp(m, "gptq") == 0)
        return parse_gptq(q, obj, name, err);
    int bits = 0;
    char shape[48] = "";
    if (!qint(obj, "bits", 0, &bits) && bits)
        snprintf(shape, sizeof shape, " (bits %d)", bits);
    return base_errf(err, "%s: field 'quantization_config.quant_method' has unsupported value \"%.32s\"%s: dinfer "
                          "reads compressed-tensors (FP8, int4, int8), fp8, awq and gptq checkpoints", name, m, shape);
}

int rt_quant_for_load(rt_quant *q, const char *mode)
{
    if (strcmp(mode, "fp8") == 0)
        *q = (rt_quant){.method = RT_QUANT_LOAD, .kind = RT_QK_FP8, .scale = RT_QSCALE_CHANNEL, .bits = 8};
    else if (strcmp(mode, "int8") == 0)
        *q = (rt_quant){.method = RT_QUANT_LOAD, .kind = RT_QK_INT, .scale = RT_QSCALE_CHANNEL, .bits = 8};
    else if (strcmp(mode, "int4") == 0)
        *q = (rt_quant){.method = RT_QUANT_LOAD, .kind = RT_QK_INT, .scale = RT_QSCALE_GROUP, .bits = 4,
                        .group_size = 128, .zero_point = true};
    else
        return -1;
    return 0;
}

cJSON *rt_quant_to_json(const rt_quant *q)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    switch (q->method) {
    case RT_QUANT_CT_FP8: {
        static const char *const strategies[] = {"tensor", "channel", "group", "block"};
        cJSON_AddStringToObject(o, "quant_method", "compressed-tensors");
        cJSON_AddStringToObject(o, "format", "float-quantized");
        cJSON_AddStringToObject(o, "quantization_status", "compressed");
        cJSON *g = cJSON_AddObjectToObject(cJSON_AddObjectToObject(o, "config_groups"), "group_0");
        const char *targets[] = {"Linear"};
        cJSON_AddItemToObject(g, "targets", cJSON_CreateStringArray(targets, 1));
        cJSON *w = cJSON_AddObjectToObject(g, "weights");
        cJSON_AddNumberToObject(w, "num_bits", 8);
        cJSON_AddStringToObject(w, "type", "float");
        cJSON_AddStringToObject(w, "strategy", strategies[q->scale]);
        cJSON_AddBoolToObject(w, "symmetric", 1);
        cJSON_AddBoolToObject(w, "dynamic", 0);
        if (q->scale == RT_QSCALE_GROUP)
            cJSON_AddNumberToObject(w, "group_size", q->group_size);
        if (q->scale == RT_QSCALE_BLOCK) {
            const int b[2] = {q->block_rows, q->block_cols};
            cJSON_AddItemToObject(w, "block_structure", cJSON_CreateIntArray(b, 2));
        }
        cJSON *a = cJSON_AddObjectToObject(g, "input_activations"); /* dynamic per token, as llm-compressor's FP8_DYNAMIC */
        cJSON_AddNumberToObject(a, "num_bits", 8);
        cJSON_AddStringToObject(a, "type", "float");
        cJSON_AddStringToObject(a, "strategy", "token");
        cJSON_AddBoolToObject(a, "symmetric", 1);
        cJSON_AddBoolToObject(a, "dynamic", 1);
        const char *ignore[] = {"lm_head"};
        cJSON_AddItemToObject(o, "ignore", cJSON_CreateStringArray(ignore, 1));
        if (q->kv_scales != RT_KV_SCALES_NONE) { /* as llm-compressor writes an FP8 KV cache's static scales */
            cJSON *kv = cJSON_AddObjectToObject(o, "kv_cache_scheme");
            cJSON_AddNumberToObject(kv, "num_bits", 8);
            cJSON_AddStringToObject(kv, "type", "float");
            cJSON_AddStringToObject(kv, "strategy", q->kv_scales == RT_KV_SCALES_HEAD ? "attn_head" : "tensor");
            cJSON_AddBoolToObject(kv, "dynamic", 0);
            cJSON_AddBoolToObject(kv, "symmetric", 1);
        }
        break;
    }
    case RT_QUANT_FP8: {
        const int b[2] = {q->block_rows, q->block_cols};
        cJSON_AddStringToObject(o, "quant_method", "fp8");
        cJSON_AddStringToObject(o, "activation_scheme", "dynamic");
        cJSON_AddItemToObject(o, "weight_block_size", cJSON_CreateIntArray(b, 2));
        break;
    }
    case RT_QUANT_AWQ:
        cJSON_AddStringToObject(o, "quant_method", "awq");
        cJSON_AddNumberToObject(o, "bits", q->bits);
        cJSON_AddNumberToObject(o, "group_size", q->group_size);
        cJSON_AddBoolToObject(o, "zero_point", 1);
        cJSON_AddStringToObject(o, "version", "gemm");
        break;
    case RT_QUANT_GPTQ:
        cJSON_AddStringToObject(o, "quant_method", "gptq");
        cJSON_AddNumberToObject(o, "bits", q->bits);
        cJSON_AddNumberToObject(o, "group_size", q->scale == RT_QSCALE_GROUP ? q->group_size : -1);
        cJSON_AddBoolToObject(o, "desc_act", q->act_order);
        cJSON_AddBoolToObject(o, "sym", q->symmetric);
        cJSON_AddStringToObject(o, "checkpoint_format", q->gptq_v1 ? "gptq" : "gptq_v2");
        break;
    case RT_QUANT_CT_INT: { /* as llm-compressor writes W4A16 / W8A16 */
        cJSON_AddStringToObject(o, "quant_method", "compressed-tensors");
        cJSON_AddStringToObject(o, "format", q->int8_weight ? "int-quantized" : "pack-quantized");
        cJSON_AddStringToObject(o, "quantization_status", "compressed");
        cJSON *g = cJSON_AddObjectToObject(cJSON_AddObjectToObject(o, "config_groups"), "group_0");
        const char *targets[] = {"Linear"};
        cJSON_AddItemToObject(g, "targets", cJSON_CreateStringArray(targets, 1));
        if (q->int8_weight) { /* W8A8: int8 activations, dynamic per token (not applied by dinfer) */
            cJSON *a = cJSON_AddObjectToObject(g, "input_activations");
            cJSON_AddNumberToObject(a, "num_bits", 8);
            cJSON_AddStringToObject(a, "type", "int");
            cJSON_AddStringToObject(a, "strategy", "token");
            cJSON_AddBoolToObject(a, "symmetric", 1);
            cJSON_AddBoolToObject(a, "dynamic", 1);
        } else {
            cJSON_AddNullToObject(g, "input_activations");
        }
        cJSON *w = cJSON_AddObjectToObject(g, "weights");
        cJSON_AddNumberToObject(w, "num_bits", q->bits);
        cJSON_AddStringToObject(w, "type", "int");
        cJSON_AddStringToObject(w, "strategy", q->scale == RT_QSCALE_GROUP ? "group" : "channel");
        if (q->scale == RT_QSCALE_GROUP)
            cJSON_AddNumberToObject(w, "group_size", q->group_size);
        cJSON_AddBoolToObject(w, "symmetric", q->symmetric);
        cJSON_AddBoolToObject(w, "dynamic", 0);
        if (q->act_order)
            cJSON_AddStringToObject(w, "actorder", "group");
        else
            cJSON_AddNullToObject(w, "actorder");
        const char *ignore[] = {"lm_head"};
        cJSON_AddItemToObject(o, "ignore", cJSON_CreateStringArray(ignore, 1));
        break;
    }
    case RT_QUANT_NONE:
    case RT_QUANT_LOAD:
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

const char *rt_quant_describe(const rt_quant *q, char *buf, size_t size)
{
    static const char *const methods[] = {"float", "compressed-tensors", "fp8", "AWQ", "GPTQ", "compressed-tensors",
                                          "--quantize"};
    const char *what = q->kind == RT_QK_FP8 ? "FP8" : q->bits == 4 ? "int4" : "int8";
    if (q->method == RT_QUANT_NONE) {
        snprintf(buf, size, "float weights");
        return buf;
    }
    switch (q->scale) {
    case RT_QSCALE_TENSOR: snprintf(buf, size, "%s %s, a scale a matrix", methods[q->method], what); break;
    case RT_QSCALE_CHANNEL: snprintf(buf, size, "%s %s, a scale a row", methods[q->method], what); break;
    case RT_QSCALE_GROUP:
        snprintf(buf, size, "%s %s, groups of %d%s", methods[q->method], what, q->group_size,
                 q->act_order ? " in act order" : "");
        break;
    case RT_QSCALE_BLOCK:
        snprintf(buf, size, "%s %s, blocks of %d x %d", methods[q->method], what, q->block_rows, q->block_cols);
        break;
    }
    return buf;
}
