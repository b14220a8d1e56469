/* libFuzzer target: arbitrary bytes as a chat template. Parsing either succeeds or names the
 * problem with its line; a parsed template renders a fixed conversation (with the special tokens
 * and add_generation_prompt, as the server renders one) within tight limits, to text or to an
 * error with a message: no crash, no hang, no leak (ASan), nothing read past the source. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/text/jinja.h"

static const char vars_json[] =
    "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"add_generation_prompt\": true, \"tools\": null,"
    " \"messages\": [{\"role\": \"system\", \"content\": \" Be brief. \"}, {\"role\": \"user\", \"content\":"
    " \"H\\u00e9llo {{ x }} \\ud83d\\ude00\\n\"}, {\"role\": \"assistant\", \"content\": \"<think>a</think>b\"},"
    " {\"role\": \"user\", \"content\": \"again\", \"name\": \"bob\"}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static cJSON *vars;
    if (!vars)
        vars = cJSON_Parse(vars_json);
    base_err err = {{0}};
    jinja_template *t = jinja_parse((const char *)data, size, &err);
    if (!t) {
        if (strncmp(err.msg, "line ", 5) != 0 && strcmp(err.msg, "out of memory") != 0)
            abort(); /* a syntax error names its line */
        return 0;
    }
    const jinja_limits lim = {.max_output = 1 << 16, .max_memory = 16 << 20, .max_steps = 20000};
    size_t len = 0;
    char *out = jinja_render(t, vars, &lim, &len, &err);
    if (out) {
        if (strlen(out) > len) /* NUL-terminated at len (the text itself may hold a NUL) */
            abort();
        free(out);
    } else if (!err.msg[0]) {
        abort();
    }
    jinja_free(t);
    return 0;
}
