/* libFuzzer target: tokenizer.json loading on arbitrary bytes. A file that loads must encode a
 * text into ids it can decode, every id within its vocabulary, or refuse the text (or the ids)
 * as one its normalizer (decoder) multiplies past the limit. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/text/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    base_err err;
    rt_tokenizer *t = rt_tokenizer_parse((const char *)data, size, "fuzz", &err);
    if (!t)
        return 0;
    static const char text[] = "Hello, wor\xc3\xb1ld! \xe4\xb8\x96 <s> 12345  \n\tx";
    int32_t *ids = NULL;
    const int n = rt_tokenizer_encode(t, text, sizeof text - 1, true, &ids, &err);
    if (n < 0 && strstr(err.msg, "normalizer grows") != NULL) { /* refused: it multiplies this text */
        rt_tokenizer_free(t);
        return 0;
    }
    if (n < 0) /* otherwise only memory can run out here */
        abort();
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= rt_tokenizer_n_ids(t))
            abort();
    char *back = rt_tokenizer_decode(t, ids, n, false, NULL, &err);
    if (!back && strstr(err.msg, "decoder grows") == NULL) /* refused only as multiplied by the decoder */
        abort();
    free(back);
    free(ids);
    rt_tokenizer_free(t);
    return 0;
}
