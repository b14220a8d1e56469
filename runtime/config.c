#include "runtime/config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/file.h"

const char *rt_arch_name(rt_arch a)
{
    switch (a) {
    case RT_ARCH_LLAMA: return "LlamaForCausalLM";
    case RT_ARCH_MISTRAL: return "MistralForCausalLM";
    case RT_ARCH_QWEN2: return "Qwen2ForCausalLM";
    }
    return "?";
}

bool rt_config_is_eos(const rt_config *cfg, int token)
{
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_ids[i] == token)
            return true;
    return false;
}

/* ---- typed field access; every failure names the field ---- */

typedef struct reader {
    const char *name; /* file name for messages */
    base_err *err;
} reader;

static const cJSON *field(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return (v && !cJSON_IsNull(v)) ? v : NULL;
}

/* An integer field within [lo, hi]; absent or null gives def, or an error when required. */
static int get_int(reader *r, const cJSON *obj, const char *key, bool required, long def, long lo,
                   long hi, int *out)
{
    const cJSON *v = field(obj, key);
    if (!v) {
        if (required)
            return base_errf(r->err, "%s: field '%s' is missing", r->name, key);
        *out = (int)def;
        return 0;
    }
    if (!cJSON_IsNumber(v))
        return base_errf(r->err, "%s: field '%s' must be an integer", r->name, key);
    double d = v->valuedouble;
    if (!(d == floor(d)) || d < (double)lo || d > (double)hi)
        return base_errf(r->err, "%s: field '%s' has value %g, expected an integer in [%ld, %ld]",
                       r->name, key, d, lo, hi);
    *out = (int)d;
    return 0;
}

static int get_num(reader *r, const cJSON *obj, const char *prefix, const char *key, bool required,
                   double def, double lo, double hi, double *out)
{
    const cJSON *v = field(obj, key);
    if (!v) {
        if (required)
            return base_errf(r->err, "%s: field '%s%s' is missing", r->name, prefix, key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v))
        return base_errf(r->err, "%s: field '%s%s' must be a number", r->name, prefix, key);
    double d = v->valuedouble;
    if (!(d >= lo && d <= hi))
        return base_errf(r->err, "%s: field '%s%s' has value %g, expected a number in [%g, %g]",
                       r->name, prefix, key, d, lo, hi);
    *out = d;
    return 0;
}

static int get_bool(reader *r, const cJSON *obj, const char *key, bool def, bool *out)
{
    const cJSON *v = field(obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return base_errf(r->err, "%s: field '%s' must be true or false", r->name, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int parse_arch(reader *r, const cJSON *root, rt_arch *arch)
{
    static const struct { const char *cls, *type; rt_arch arch; } known[] = {
        {"LlamaForCausalLM", "llama", RT_ARCH_LLAMA},
        {"MistralForCausalLM", "mistral", RT_ARCH_MISTRAL},
        {"Qwen2ForCausalLM", "qwen2", RT_ARCH_QWEN2},
    };
    const cJSON *archs = field(root, "architectures");
    if (archs) {
        const cJSON *first = cJSON_IsArray(archs) ? cJSON_GetArrayItem(archs, 0) : NULL;
        if (!first || !cJSON_IsString(first))
            return base_errf(r->err, "%s: field 'architectures' must be a list of class names", r->name);
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            if (strcmp(first->valuestring, known[i].cls) == 0) {
                *arch = known[i].arch;
                return 0;
            }
        return base_errf(r->err,
                       "%s: field 'architectures' has unsupported value \"%.64s\" (supported: "
                       "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)",
                       r->name, first->valuestring);
    }
    const cJSON *mt = field(root, "model_type");
    if (!mt)
        return base_errf(r->err, "%s: field 'architectures' is missing (and no 'model_type')", r->name);
    if (!cJSON_IsString(mt))
        return base_errf(r->err, "%s: field 'model_type' must be a string", r->name);
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(mt->valuestring, known[i].type) == 0) {
            *arch = known[i].arch;
            return 0;
        }
    return base_errf(r->err, "%s: field 'model_type' has unsupported value \"%.64s\"", r->name,
                   mt->valuestring);
}

/* rope_theta and scaling from either key style: transformers 5 writes rope_parameters (with the
 * theta inside), older versions top-level rope_theta and rope_scaling. */
static int parse_rope(reader *r, const cJSON *root, int max_pos, rt_rope *rope)
{
    const cJSON *params = field(root, "rope_parameters");
    const cJSON *scaling = field(root, "rope_scaling");
    if (params && !cJSON_IsObject(params))
        return base_errf(r->err, "%s: field 'rope_parameters' must be an object", r->name);
    if (scaling && !cJSON_IsObject(scaling))
        return base_errf(r->err, "%s: field 'rope_scaling' must be an object or null", r->name);

    memset(rope, 0, sizeof *rope);
    double theta;
    if (params && field(params, "rope_theta")) {
        if (get_num(r, params, "rope_parameters.", "rope_theta", true, 0, 1e-3, 1e12, &theta))
            return -1;
    } else if (get_num(r, root, "", "rope_theta", false, 10000.0, 1e-3, 1e12, &theta)) {
        return -1;
    }
    rope->theta = theta;
    rope->factor = 1.0;

    const cJSON *src = scaling ? scaling : params;
    const char *where = scaling ? "rope_scaling." : "rope_parameters.";
    if (!src)
        return 0;
    const char *tkey = field(src, "rope_type") ? "rope_type" : "type";
    const cJSON *t = field(src, tkey);
    if (!t)
        return scaling ? base_errf(r->err, "%s: field 'rope_scaling.rope_type' is missing", r->name) : 0;
    if (!cJSON_IsString(t))
        return base_errf(r->err, "%s: field '%s%s' must be a string", r->name, where, tkey);
    const char *ty = t->valuestring;
    if (strcmp(ty, "default") == 0)
        return 0;
    if (strcmp(ty, "linear") == 0) {
        rope->type = RT_ROPE_LINEAR;
        return get_num(r, src, where, "factor", true, 0, 1e-6, 1e6, &rope->factor);
    }
    if (strcmp(ty, "llama3") == 0) {
        rope->type = RT_ROPE_LLAMA3;
        double orig;
        if (get_num(r, src, where, "factor", true, 0, 1e-6, 1e6, &rope->factor) ||
            get_num(r, src, where, "low_freq_factor", true, 0, 1e-6, 1e6, &rope->low_freq_factor) ||
            get_num(r, src, where, "high_freq_factor", true, 0, 1e-6, 1e6, &rope->high_freq_factor) ||
            get_num(r, src, where, "original_max_position_embeddings", true, 0, 1, 1 << 30, &orig))
            return -1;
        if (!(rope->high_freq_factor > rope->low_freq_factor))
            return base_errf(r->err, "%s: field '%shigh_freq_factor' (%g) must exceed low_freq_factor (%g)",
                           r->name, where, rope->high_freq_factor, rope->low_freq_factor);
        rope->orig_max_pos = (int)orig;
        (void)max_pos;
        return 0;
    }
    return base_errf(r->err, "%s: field '%s%s' has unsupported value \"%.64s\" (supported: default, linear, llama3)",
                   r->name, where, tkey, ty);
}

static int parse_token_ids(reader *r, const cJSON *root, const char *key, int vocab, int *ids,
                           int max_ids, int *n)
{
    const cJSON *v = field(root, key);
    *n = 0;
    if (!v)
        return 0;
    const cJSON *item = cJSON_IsArray(v) ? v->child : v;
    for (; item; item = cJSON_IsArray(v) ? item->next : NULL) {
        if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble) ||
            item->valuedouble < 0 || item->valuedouble >= vocab)
            return base_errf(r->err, "%s: field '%s' must be token ids in [0, %d)", r->name, key, vocab);
        if (*n == max_ids)
            return base_errf(r->err, "%s: field '%s' lists more than %d ids", r->name, key, max_ids);
        ids[(*n)++] = (int)item->valuedouble;
    }
    return 0;
}

static int parse_dtype(reader *r, const cJSON *root, rt_dtype *dt)
{
    const char *key = field(root, "dtype") ? "dtype" : "torch_dtype";
    const cJSON *v = field(root, key);
    *dt = RT_F32;
    if (!v)
        return 0;
    if (!cJSON_IsString(v))
        return base_errf(r->err, "%s: field '%s' must be a string", r->name, key);
    if (strcmp(v->valuestring, "float32") == 0)
        *dt = RT_F32;
    else if (strcmp(v->valuestring, "float16") == 0)
        *dt = RT_F16;
    else if (strcmp(v->valuestring, "bfloat16") == 0)
        *dt = RT_BF16;
    else
        return base_errf(r->err, "%s: field '%s' has unsupported value \"%.64s\" (supported: float32, float16, bfloat16)",
                       r->name, key, v->valuestring);
    return 0;
}

static int parse_root(reader *r, const cJSON *root, rt_config *c)
{
    memset(c, 0, sizeof *c);
    if (!cJSON_IsObject(root))
        return base_errf(r->err, "%s: not a JSON object", r->name);
    if (parse_arch(r, root, &c->arch))
        return -1;
    const long big = 1L << 24;
    if (get_int(r, root, "hidden_size", true, 0, 1, 1 << 20, &c->dim) ||
        get_int(r, root, "intermediate_size", true, 0, 1, 1 << 22, &c->ffn_dim) ||
        get_int(r, root, "num_hidden_layers", true, 0, 1, 4096, &c->n_layers) ||
        get_int(r, root, "num_attention_heads", true, 0, 1, 4096, &c->n_heads) ||
        get_int(r, root, "num_key_value_heads", false, c->n_heads, 1, 4096, &c->n_kv_heads) ||
        get_int(r, root, "vocab_size", true, 0, 1, big, &c->vocab_size) ||
        get_int(r, root, "max_position_embeddings", false, 2048, 1, big, &c->max_pos))
        return -1;
    if (c->n_heads % c->n_kv_heads != 0)
        return base_errf(r->err, "%s: field 'num_key_value_heads' (%d) must divide num_attention_heads (%d)",
                       r->name, c->n_kv_heads, c->n_heads);
    if (field(root, "head_dim")) {
        if (get_int(r, root, "head_dim", true, 0, 2, RT_MAX_HEAD_DIM, &c->head_dim))
            return -1;
    } else {
        if (c->dim % c->n_heads != 0)
            return base_errf(r->err, "%s: field 'hidden_size' (%d) is not a multiple of num_attention_heads (%d) and no head_dim is given",
                           r->name, c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
        if (c->head_dim > RT_MAX_HEAD_DIM)
            return base_errf(r->err, "%s: head_dim %d (hidden_size %d / num_attention_heads %d) is over the supported "
                                     "%d", r->name, c->head_dim, c->dim, c->n_heads, RT_MAX_HEAD_DIM);
    }
    if (c->head_dim % 2 != 0)
        return base_errf(r->err, "%s: head_dim %d must be even for rotary embeddings", r->name, c->head_dim);

    double eps;
    if (get_num(r, root, "", "rms_norm_eps", false, 1e-6, 1e-12, 0.1, &eps))
        return -1;
    c->norm_eps = eps;

    const char *act_key = field(root, "hidden_act") ? "hidden_act" : "hidden_activation";
    const cJSON *act = field(root, act_key);
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0))
        return base_errf(r->err, "%s: field '%s' has unsupported value \"%.32s\" (supported: silu)", r->name,
                       act_key, cJSON_IsString(act) ? act->valuestring : "?");

    if (get_bool(r, root, "tie_word_embeddings", false, &c->tie_embeddings))
        return -1;
    bool b = false;
    if (get_bool(r, root, "mlp_bias", false, &b))
        return -1;
    if (b)
        return base_errf(r->err, "%s: field 'mlp_bias' has unsupported value true", r->name);
    if (c->arch == RT_ARCH_QWEN2) {
        c->qkv_bias = true;
        if (get_bool(r, root, "use_sliding_window", false, &b))
            return -1;
        if (b)
            return base_errf(r->err, "%s: field 'use_sliding_window' has unsupported value true", r->name);
    } else if (c->arch == RT_ARCH_LLAMA) {
        if (get_bool(r, root, "attention_bias", false, &b))
            return -1;
        c->qkv_bias = c->o_bias = b;
    } else if (get_int(r, root, "sliding_window", false, 0, 1, big, &c->sliding_window)) {
        return -1;
    }
    if (rt_quant_parse(&c->quant, field(root, "quantization_config"), r->name, r->err) ||
        parse_rope(r, root, c->max_pos, &c->rope) || parse_dtype(r, root, &c->dtype))
        return -1;
    int nbos = 0;
    if (parse_token_ids(r, root, "bos_token_id", c->vocab_size, &c->bos_id, 1, &nbos) ||
        parse_token_ids(r, root, "eos_token_id", c->vocab_size, c->eos_ids, RT_MAX_EOS, &c->n_eos))
        return -1;
    if (nbos == 0)
        c->bos_id = -1;
    return 0;
}

/* A key given twice in one object: cJSON would read the first, Python's json (and so transformers)
 * the last. Neither is safe to guess: refused, naming the key. */
static int cmp_key(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int check_duplicates(reader *r, const cJSON *obj, const char *where, int depth)
{
    int n = 0;
    for (const cJSON *a = obj->child; a; a = a->next)
        n++;
    const char **keys = malloc((size_t)(n ? n : 1) * sizeof *keys);
    if (!keys)
        return base_errf(r->err, "%s: out of memory", r->name);
    n = 0;
    for (const cJSON *a = obj->child; a; a = a->next)
        if (a->string)
            keys[n++] = a->string;
    qsort(keys, (size_t)n, sizeof *keys, cmp_key);
    for (int i = 1; i < n; i++)
        if (strcmp(keys[i - 1], keys[i]) == 0) {
            base_errf(r->err, "%s: field '%s%.64s' appears twice", r->name, where, keys[i]);
            free(keys);
            return -1;
        }
    free(keys);
    for (const cJSON *a = obj->child; a && depth < 4; a = a->next)
        if (cJSON_IsObject(a) && a->string) {
            char sub[160];
            snprintf(sub, sizeof sub, "%s%.64s.", where, a->string);
            if (check_duplicates(r, a, sub, depth + 1))
                return -1;
        }
    return 0;
}

int rt_config_parse(rt_config *cfg, const char *text, size_t len, const char *name, base_err *err)
{
    reader r = {name, err};
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root)
        return base_errf(err, "%s: not valid JSON", name);
    if (cJSON_IsObject(root) && check_duplicates(&r, root, "", 0)) {
        cJSON_Delete(root);
        return -1;
    }
    int rc = parse_root(&r, root, cfg);
    cJSON_Delete(root);
    return rc;
}

int rt_config_add_eos(rt_config *cfg, int id)
{
    if (id < 0 || id >= cfg->vocab_size)
        return -1;
    if (rt_config_is_eos(cfg, id))
        return 0;
    if (cfg->n_eos == RT_MAX_EOS)
        return -1;
    cfg->eos_ids[cfg->n_eos++] = id;
    return 0;
}

/* generation_config.json's eos_token_id (an id or a list), joined to the config's: what
 * transformers' generate() stops at. An absent file adds nothing; a bad one is refused by name. */
static int load_generation_eos(rt_config *cfg, const char *dir, base_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/generation_config.json", dir);
    char *text;
    size_t len;
    const int rc_read = base_read_file_if_present(path, RT_CONFIG_MAX_BYTES, &text, &len, err);
    if (rc_read != 0)
        return rc_read < 0 ? -1 : 0;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return base_errf(err, "%s: not a JSON object", path);
    }
    reader r = {path, err};
    int ids[RT_MAX_EOS], n = 0;
    int rc = parse_token_ids(&r, root, "eos_token_id", cfg->vocab_size, ids, RT_MAX_EOS, &n);
    for (int i = 0; rc == 0 && i < n; i++)
        if (rt_config_add_eos(cfg, ids[i]))
            rc = base_errf(err, "%s: eos_token_id: more than %d end-of-sequence ids with config.json's", path,
                           RT_MAX_EOS);
    cJSON_Delete(root);
    return rc;
}

int rt_config_load(rt_config *cfg, const char *dir, base_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    char *text;
    size_t len;
    if (base_read_file(path, RT_CONFIG_MAX_BYTES, &text, &len, err))
        return -1;
    int rc = rt_config_parse(cfg, text, len, path, err);
    free(text);
    return rc ? rc : load_generation_eos(cfg, dir, err);
}

static const char *dtype_torch_name(rt_dtype t)
{
    return t == RT_BF16 ? "bfloat16" : t == RT_F16 ? "float16" : "float32";
}

int rt_config_write(const rt_config *c, const char *path, base_err *err)
{
    static const char *types[] = {"llama", "mistral", "qwen2"};
    cJSON *o = cJSON_CreateObject();
    cJSON *archs = cJSON_AddArrayToObject(o, "architectures");
    cJSON_AddItemToArray(archs, cJSON_CreateString(rt_arch_name(c->arch)));
    cJSON_AddStringToObject(o, "model_type", types[c->arch]);
    cJSON_AddNumberToObject(o, "hidden_size", c->dim);
    cJSON_AddNumberToObject(o, "intermediate_size", c->ffn_dim);
    cJSON_AddNumberToObject(o, "num_hidden_layers", c->n_layers);
    cJSON_AddNumberToObject(o, "num_attention_heads", c->n_heads);
    cJSON_AddNumberToObject(o, "num_key_value_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(o, "max_position_embeddings", c->max_pos);
    cJSON_AddNumberToObject(o, "rms_norm_eps", c->norm_eps);
    cJSON_AddStringToObject(o, "hidden_act", "silu");
    cJSON_AddNumberToObject(o, "rope_theta", c->rope.theta);
    if (c->rope.type == RT_ROPE_DEFAULT) {
        cJSON_AddNullToObject(o, "rope_scaling");
    } else {
        cJSON *s = cJSON_AddObjectToObject(o, "rope_scaling");
        cJSON_AddStringToObject(s, "rope_type", c->rope.type == RT_ROPE_LINEAR ? "linear" : "llama3");
        cJSON_AddNumberToObject(s, "factor", c->rope.factor);
        if (c->rope.type == RT_ROPE_LLAMA3) {
            cJSON_AddNumberToObject(s, "low_freq_factor", c->rope.low_freq_factor);
            cJSON_AddNumberToObject(s, "high_freq_factor", c->rope.high_freq_factor);
            cJSON_AddNumberToObject(s, "original_max_position_embeddings", c->rope.orig_max_pos);
        }
    }
    cJSON_AddBoolToObject(o, "tie_word_embeddings", c->tie_embeddings);
    if (c->arch == RT_ARCH_LLAMA)
        cJSON_AddBoolToObject(o, "attention_bias", c->qkv_bias);
    if (c->arch == RT_ARCH_MISTRAL && c->sliding_window > 0)
        cJSON_AddNumberToObject(o, "sliding_window", c->sliding_window);
    if (c->bos_id >= 0)
        cJSON_AddNumberToObject(o, "bos_token_id", c->bos_id);
    if (c->n_eos == 1)
        cJSON_AddNumberToObject(o, "eos_token_id", c->eos_ids[0]);
    else if (c->n_eos > 1)
        cJSON_AddItemToObject(o, "eos_token_id", cJSON_CreateIntArray(c->eos_ids, c->n_eos));
    cJSON_AddStringToObject(o, "torch_dtype", dtype_torch_name(c->dtype));
    cJSON *q = rt_quant_to_json(&c->quant); /* NULL: float weights */
    if (q)
        cJSON_AddItemToObject(o, "quantization_config", q);
    char *text = cJSON_Print(o);
    cJSON_Delete(o);
    if (!text)
        return base_errf(err, "%s: out of memory", path);
    FILE *f = fopen(path, "w");
    int rc = 0;
    if (!f || fputs(text, f) < 0 || fputc('\n', f) < 0)
        rc = base_errf(err, "%s: cannot write: %s", path, strerror(errno));
    if (f && fclose(f) != 0 && rc == 0)
        rc = base_errf(err, "%s: cannot write: %s", path, strerror(errno));
    cJSON_free(text);
    return rc;
}
