/* libFuzzer target: the wire decoder on arbitrary bytes arriving in arbitrary pieces; every frame
 * it accepts goes through an encode/decode round trip. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/wire.h"

/* Encodes f and decodes it again. The first re-encoding may not parse (protobuf-c keeps unknown
 * fields as received, even field number 0, which it refuses to read back) and may differ from
 * the input (non-canonical varints are legal); from the first decodable encoding on, encoding is
 * stable: decode(encode(g)) encodes to the same bytes. */
static int encode(const wire_frame *f, wire_buf *b)
{
    *b = (wire_buf){0};
    return wire_buf_append(b, f);
}

static wire_frame *decode(const wire_buf *b)
{
    wire_decoder d;
    wire_decoder_init(&d, 1 << 20);
    wire_frame *g = NULL;
    base_err err;
    if (wire_decoder_feed(&d, b->data, b->len) != 0 || wire_decode_next(&d, &g, &err) != WIRE_FRAME)
        g = NULL;
    wire_decoder_free(&d);
    return g;
}

static void check_round_trip(const wire_frame *f)
{
    wire_buf b1, b2, b3;
    if (encode(f, &b1) != 0)
        return;
    wire_frame *g = decode(&b1), *h = NULL;
    if (g && encode(g, &b2) == 0) {
        h = decode(&b2);
        if (!h || encode(h, &b3) != 0 || b3.len != b2.len || memcmp(b3.data, b2.data, b2.len) != 0)
            abort();
        wire_buf_free(&b3);
        wire_buf_free(&b2);
    }
    wire_frame_free(h);
    wire_frame_free(g);
    wire_buf_free(&b1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    wire_decoder d;
    wire_decoder_init(&d, 1 << 16);
    size_t piece = (size_t)data[0] % 7 + 1, off = 1;
    base_err err;
    for (int broken = 0; off < size && !broken;) {
        size_t n = size - off < piece ? size - off : piece;
        if (wire_decoder_feed(&d, data + off, n) != 0)
            break;
        off += n;
        for (;;) {
            wire_frame *f = NULL;
            wire_status st = wire_decode_next(&d, &f, &err);
            if (st == WIRE_NEED_MORE)
                break;
            if (st == WIRE_TOO_LARGE) {
                broken = 1;
                break;
            }
            if (st == WIRE_FRAME)
                check_round_trip(f);
            wire_frame_free(f);
        }
    }
    wire_decoder_free(&d);
    return 0;
}
