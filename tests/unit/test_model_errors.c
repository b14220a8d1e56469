/* Bad model folders: each fails with one message that names the file and the problem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/model.h"
#include "runtime/safetensors.h"
#include "base/file.h"
#include "tests/unit/tiny_model.h"

static char *dir;

static int setup_each(void **state)
{
    (void)state;
    dir = tiny_tmpdir();
    return dir ? 0 : -1;
}

static int teardown_each(void **state)
{
    (void)state;
    tiny_rmtree(dir);
    free(dir);
    return 0;
}

static void write_model(rt_config c, size_t shard)
{
    base_err err;
    if (tiny_model_write(dir, &c, RT_F32, shard, &err))
        fail_msg("%s", err.msg);
}

/* Loads dir with config cfg_for_load (or its own config.json when NULL) and expects an error
 * mentioning every needle. */
static void expect_load_error(const rt_config *cfg_for_load, const char *n1, const char *n2)
{
    rt_config c;
    base_err err = {{0}};
    int rc = 0;
    if (cfg_for_load)
        c = *cfg_for_load;
    else
        rc = rt_config_load(&c, dir, &err);
    if (rc == 0) {
        rt_backend *be = rt_cpu_backend_create(1);
        rt_shard s;
        rt_shard_whole(&s, &c);
        rt_model m;
        rc = rt_model_load(&m, &c, &s, dir, be, &err);
        if (rc == 0)
            rt_model_free(&m);
        be->ops->destroy(be);
    }
    assert_int_equal(rc, -1);
    if (!strstr(err.msg, n1) || (n2 && !strstr(err.msg, n2)))
        fail_msg("error \"%s\" does not mention \"%s\" and \"%s\"", err.msg, n1, n2 ? n2 : "");
    assert_null(strchr(err.msg, '\n'));
}

static char *path_of(const char *name)
{
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

static void test_missing_files(void **state)
{
    (void)state;
    expect_load_error(NULL, "config.json", "cannot open");
    write_model(tiny_config(), 0);
    unlink(path_of("model.safetensors"));
    expect_load_error(NULL, dir, "no model.safetensors");
}

static void test_truncated(void **state)
{
    (void)state;
    write_model(tiny_config(), 0);
    struct stat st;
    stat(path_of("model.safetensors"), &st);
    assert_int_equal(truncate(path_of("model.safetensors"), st.st_size - 100), 0);
    expect_load_error(NULL, "model.safetensors", "truncated");
    assert_int_equal(truncate(path_of("model.safetensors"), 5), 0);
    expect_load_error(NULL, "model.safetensors", "shorter than the 8-byte header length");
    assert_int_equal(truncate(path_of("model.safetensors"), 0), 0);
    expect_load_error(NULL, "model.safetensors", "shorter");
}

static void test_shape_disagrees_with_config(void **state)
{
    (void)state;
    write_model(tiny_config(), 0);
    rt_config c = tiny_config();
    c.ffn_dim = 50;
    expect_load_error(&c, "model.safetensors", "'model.layers.0.mlp.gate_proj.weight' has shape [48, 32], expected [50, 32]");
}

/* Rewrites the first occurrence of `from` in the file with `to` (same length). */
static void patch(const char *file, const char *from, const char *to)
{
    FILE *f = fopen(file, "r+b");
    char buf[8192];
    size_t n = fread(buf, 1, sizeof buf, f);
    char *p = memmem(buf, n, from, strlen(from));
    assert_non_null(p);
    fseek(f, p - buf, SEEK_SET);
    fwrite(to, 1, strlen(to), f);
    fclose(f);
}

static void test_header_corruption(void **state)
{
    (void)state;
    write_model(tiny_config(), 0);
    /* the embedding declared as I32: same size, but not a weight type */
    patch(path_of("model.safetensors"), "\"dtype\":\"F32\"", "\"dtype\":\"I32\"");
    expect_load_error(NULL, "model.safetensors", "unsupported dtype I32");
    write_model(tiny_config(), 0);
    /* a shape that no longer matches its byte range */
    patch(path_of("model.safetensors"), "\"shape\":[64,32]", "\"shape\":[64,31]");
    expect_load_error(NULL, "model.safetensors", "shape x F32 size");
    write_model(tiny_config(), 0);
    /* offsets past the end of the file */
    patch(path_of("model.safetensors"), "\"data_offsets\":[0,", "\"data_offsets\":[9,");
    expect_load_error(NULL, "model.safetensors", "data_offsets");
}

static void write_json(const char *path, const cJSON *o)
{
    char *text = cJSON_Print(o);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    cJSON_free(text);
}

static void test_index_problems(void **state)
{
    (void)state;
    write_model(tiny_config(), 16000);
    char *text;
    size_t len;
    base_err err;
    char idx[512];
    snprintf(idx, sizeof idx, "%s", path_of("model.safetensors.index.json"));
    assert_int_equal(base_read_file(idx, RT_ST_MAX_INDEX, &text, &len, &err), 0);
    /* a tensor the model needs is not in the index */
    cJSON *o = cJSON_Parse(text);
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(o, "weight_map"), "lm_head.weight");
    write_json(idx, o);
    expect_load_error(NULL, "model.safetensors.index.json", "tensor 'lm_head.weight' is missing from the index");
    /* the index names a shard that is not there */
    cJSON_AddStringToObject(cJSON_GetObjectItem(o, "weight_map"), "lm_head.weight", "model-00042-of-00042.safetensors");
    write_json(idx, o);
    expect_load_error(NULL, "model-00042-of-00042.safetensors", "cannot open");
    /* the index names a path outside the folder */
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(o, "weight_map"), "lm_head.weight", cJSON_CreateString("../x"));
    write_json(idx, o);
    expect_load_error(NULL, "model.safetensors.index.json", "plain file name");
    cJSON_Delete(o);
    free(text);
}

static void test_tensor_missing_from_file(void **state)
{
    (void)state;
    rt_config c = tiny_config();
    c.tie_embeddings = true; /* written without lm_head.weight */
    write_model(c, 0);
    c.tie_embeddings = false;
    expect_load_error(&c, "model.safetensors", "tensor 'lm_head.weight' is missing");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_missing_files, setup_each, teardown_each),
        cmocka_unit_test_setup_teardown(test_truncated, setup_each, teardown_each),
        cmocka_unit_test_setup_teardown(test_shape_disagrees_with_config, setup_each, teardown_each),
        cmocka_unit_test_setup_teardown(test_header_corruption, setup_each, teardown_each),
        cmocka_unit_test_setup_teardown(test_index_problems, setup_each, teardown_each),
        cmocka_unit_test_setup_teardown(test_tensor_missing_from_file, setup_each, teardown_each),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
