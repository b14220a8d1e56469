/* The wire format (proto/wire.c) and the server's frame builders (proto/frames.c): frames decoded
 * from bytes arriving in any pieces, a length over the limit breaks the stream, an unparsable
 * frame is skipped with the stream kept in step, the output buffer's bookkeeping, and every
 * builder's frame read back field by field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "proto/frames.h"
#include "proto/wire.h"

/* Decodes every frame of b, fed in pieces of `piece` bytes; returns how many came out. */
static int decode_all(const wire_buf *b, size_t piece, wire_frame **out, int max)
{
    wire_decoder d;
    wire_decoder_init(&d, 1 << 20);
    int n = 0;
    base_err err;
    for (size_t off = b->off; off < b->len; off += piece) {
        size_t k = b->len - off < piece ? b->len - off : piece;
        assert_int_equal(wire_decoder_feed(&d, b->data + off, k), 0);
        wire_frame *f;
        while (n < max && wire_decode_next(&d, &f, &err) == WIRE_FRAME)
            out[n++] = f;
    }
    assert_int_equal(wire_decoder_pending(&d), 0);
    wire_decoder_free(&d);
    return n;
}

static void test_builders_round_trip(void **state)
{
    (void)state;
    wire_buf b = {0};
    int32_t top_ids[3] = {5, 9, 2};
    float top_lp[3] = {-0.1f, -2.5f, -3.0f};
    wire_done done = {.finish_reason = "stop", .prompt_tokens = 7, .completion_tokens = 3, .ttft_ms = 1.5,
                      .total_ms = 9.25, .text = "h\xc3\xa9llo"};
    Dinfer__V1__HealthResponse h = DINFER__V1__HEALTH_RESPONSE__INIT;
    h.has_ready = 1, h.ready = 1, h.model = "m", h.has_tp = 1, h.tp = 2;
    Dinfer__V1__StatsResponse s = DINFER__V1__STATS_RESPONSE__INIT;
    s.has_running = 1, s.running = 4, s.device = "cpu";
    assert_int_equal(wire_put_error(&b, 11, DINFER__V1__STATUS_CODE__STATUS_UNAVAILABLE, "gone"), 0);
    assert_int_equal(wire_put_token(&b, 12, 42, -0.5f, 3, top_ids, top_lp, "hi"), 0);
    assert_int_equal(wire_put_token(&b, 13, 43, -1.5f, 0, NULL, NULL, NULL), 0);
    assert_int_equal(wire_put_done(&b, 14, &done), 0);
    assert_int_equal(wire_put_health(&b, 15, &h), 0);
    assert_int_equal(wire_put_stats(&b, 16, &s), 0);
    for (size_t piece = 1; piece <= 64; piece = piece * 3 + 1) {
        wire_frame *f[8];
        assert_int_equal(decode_all(&b, piece, f, 8), 6);
        for (int i = 0; i < 6; i++)
            assert_int_equal(f[i]->request_id, 11 + i);
        assert_int_equal(f[0]->body_case, DINFER__V1__FRAME__BODY_ERROR);
        assert_int_equal(f[0]->error->code, DINFER__V1__STATUS_CODE__STATUS_UNAVAILABLE);
        assert_string_equal(f[0]->error->message, "gone");
        assert_int_equal(f[1]->body_case, DINFER__V1__FRAME__BODY_CHUNK);
        assert_int_equal(f[1]->chunk->n_tokens, 1);
        assert_int_equal(f[1]->chunk->tokens[0], 42);
        assert_true(f[1]->chunk->logprobs[0] == -0.5f);
        assert_int_equal(f[1]->chunk->n_top, 1);
        assert_int_equal(f[1]->chunk->top[0]->n_token_ids, 3);
        assert_int_equal(f[1]->chunk->top[0]->token_ids[1], 9);
        assert_true(f[1]->chunk->top[0]->logprobs[2] == -3.0f);
        assert_string_equal(f[1]->chunk->text, "hi");
        assert_int_equal(f[2]->chunk->n_top, 0);
        assert_null(f[2]->chunk->text);
        assert_int_equal(f[3]->body_case, DINFER__V1__FRAME__BODY_DONE);
        assert_string_equal(f[3]->done->finish_reason, "stop");
        assert_int_equal(f[3]->done->completion_tokens, 3);
        assert_true(f[3]->done->total_ms == 9.25);
        assert_string_equal(f[3]->done->text, "h\xc3\xa9llo");
        assert_int_equal(f[4]->body_case, DINFER__V1__FRAME__BODY_HEALTH_RESPONSE);
        assert_true(f[4]->health_response->ready);
        assert_int_equal(f[4]->health_response->tp, 2);
        assert_int_equal(f[5]->body_case, DINFER__V1__FRAME__BODY_STATS_RESPONSE);
        assert_int_equal(f[5]->stats_response->running, 4);
        assert_string_equal(f[5]->stats_response->device, "cpu");
        for (int i = 0; i < 6; i++)
            wire_frame_free(f[i]);
    }
    wire_buf_free(&b);
}

static void test_limits_and_bad_frames(void **state)
{
    (void)state;
    wire_decoder d;
    wire_decoder_init(&d, 100);
    base_err err;
    wire_frame *f = NULL;
    /* an unparsable frame of valid length: reported, skipped, the next frame still decodes */
    const uint8_t junk[] = {0, 0, 0, 3, 0xff, 0xff, 0xff};
    wire_buf b = {0};
    assert_int_equal(wire_put_error(&b, 7, 3, "x"), 0);
    assert_int_equal(wire_decoder_feed(&d, junk, sizeof junk), 0);
    assert_int_equal(wire_decoder_feed(&d, b.data, b.len), 0);
    assert_int_equal(wire_decode_next(&d, &f, &err), WIRE_BAD_FRAME);
    assert_non_null(strstr(err.msg, "not a valid dinfer.v1.Frame"));
    assert_int_equal(wire_decode_next(&d, &f, &err), WIRE_FRAME);
    assert_int_equal(f->request_id, 7);
    wire_frame_free(f);
    assert_int_equal(wire_decode_next(&d, &f, &err), WIRE_NEED_MORE);
    /* a length over the limit: the stream cannot go on */
    const uint8_t big[] = {0, 0, 0, 101};
    assert_int_equal(wire_decoder_feed(&d, big, sizeof big), 0);
    assert_int_equal(wire_decode_next(&d, &f, &err), WIRE_TOO_LARGE);
    assert_non_null(strstr(err.msg, "frame length 101 is over the 100-byte limit"));
    wire_decoder_free(&d);
    /* the output buffer: consumed bytes are reclaimed */
    size_t one = wire_buf_pending(&b);
    assert_int_equal(wire_put_error(&b, 8, 3, "y"), 0);
    assert_true(wire_buf_pending(&b) > one);
    wire_buf_consume(&b, one);
    assert_int_equal(wire_buf_pending(&b), b.len - b.off);
    wire_buf_consume(&b, wire_buf_pending(&b));
    assert_int_equal(b.len, 0);
    assert_int_equal(b.off, 0);
    wire_buf_free(&b);
    assert_string_equal(wire_status_name(16), "UNAUTHENTICATED");
    assert_string_equal(wire_status_name(99), "UNKNOWN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builders_round_trip),
        cmocka_unit_test(test_limits_and_bad_frames),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
