/* libFuzzer target: arbitrary bytes as the body of POST /v1/completions, /v1/chat/completions,
 * /tokenize and /detokenize.
 * Each parse either succeeds with every field in its documented range or fails with a 4xx status,
 * a message and a valid error object; nothing leaks (ASan) and nothing reads past the body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "launch/server/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *body = malloc(size + 1); /* not NUL-terminated for the parser: the length is what counts */
    if (!body)
        return 0;
    memcpy(body, data, size);
    body[size] = 'x';
    oai_request r;
    oai_err e;
    if (oai_parse_completion(body, size, &r, &e) == 0) {
        if (r.n < 1 || r.n > OAI_MAX_N || r.max_tokens < 1 || r.logprobs < -1 || r.logprobs > 20 || r.top_k < 0 ||
            !(r.temperature >= 0) || !(r.top_p > 0 && r.top_p <= 1) || r.n_stop > OAI_MAX_STOP ||
            !!r.prompt_text == (r.n_prompt_ids > 0) || (r.include_usage && !r.stream))
            abort();
        for (int i = 0; i < r.n_stop; i++)
            if (!r.stop[i] || !*r.stop[i])
                abort();
        oai_request_free(&r);
    } else {
        if (e.status < 400 || e.status > 500 || !e.message[0])
            abort();
        char *j = oai_error_json(&e);
        free(j);
    }
    if (oai_parse_chat(body, size, &r, &e) == 0) { /* normalized messages: each a role and string content */
        if (!r.chat || r.max_tokens < 0 || r.logprobs < -1 || r.logprobs > 20 || !cJSON_IsArray(r.messages) ||
            !r.messages->child || r.prompt_text || r.n_prompt_ids)
            abort();
        for (const cJSON *m = r.messages->child; m; m = m->next) {
            const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
            if (!cJSON_IsString(role) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(m, "content")) ||
                (strcmp(role->valuestring, "system") && strcmp(role->valuestring, "user") &&
                 strcmp(role->valuestring, "assistant")))
                abort();
        }
        oai_request_free(&r);
    } else if (e.status < 400 || e.status > 500 || !e.message[0]) {
        abort();
    }
    oai_tokenize t;
    if (oai_parse_tokenize(body, size, &t, &e) == 0) {
        if (!t.text == !t.messages)
            abort();
        oai_tokenize_free(&t);
    }
    int32_t *ids;
    size_t n;
    if (oai_parse_detokenize(body, size, &ids, &n, &e) == 0) {
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0)
                abort();
        free(ids);
    }
    free(body);
    return 0;
}
