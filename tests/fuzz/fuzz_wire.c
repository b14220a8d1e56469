/* libFuzzer target: the wire decoder on arbitrary bytes arriving in arbitrary pieces. Every frame
 * it accepts must encode again and decode to a frame of the same size. */
#include <stdint.h>
#include <stdlib.h>

#include "proto/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    wire_decoder d;
    wire_decoder_init(&d, 1 << 16);
    size_t piece = (size_t)data[0] % 7 + 1, off = 1;
    char err[160];
    for (int broken = 0; off < size && !broken;) {
        size_t n = size - off < piece ? size - off : piece;
        if (wire_decoder_feed(&d, data + off, n) != 0)
            break;
        off += n;
        for (;;) {
            wire_frame *f = NULL;
            wire_status st = wire_decode_next(&d, &f, err, sizeof err);
            if (st == WIRE_NEED_MORE)
                break;
            if (st == WIRE_TOO_LARGE) {
                broken = 1;
                break;
            }
            if (st == WIRE_FRAME) {
                wire_buf b = {0};
                if (wire_buf_append(&b, f) == 0) {
                    wire_decoder d2;
                    wire_decoder_init(&d2, 1 << 20);
                    wire_frame *g = NULL;
                    if (wire_decoder_feed(&d2, b.data, b.len) == 0 &&
                        (wire_decode_next(&d2, &g, err, sizeof err) != WIRE_FRAME ||
                         dinfer__v1__frame__get_packed_size(g) != dinfer__v1__frame__get_packed_size(f)))
                        abort();
                    wire_frame_free(g);
                    wire_decoder_free(&d2);
                }
                wire_buf_free(&b);
                wire_frame_free(f);
            }
        }
    }
    wire_decoder_free(&d);
    return 0;
}
