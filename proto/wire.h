/* Framing of the dinfer wire protocol: each frame is a 4-byte big-endian length, then a serialized
 * dinfer.v1.Frame of that many bytes. The decoder is incremental (bytes arrive in any pieces) and
 * trusts no length: a frame over the limit breaks the stream; one that does not parse is skipped
 * and reported, the stream stays in step. */
#ifndef DINFER_PROTO_WIRE_H
#define DINFER_PROTO_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"
#include "proto/dinfer.pb-c.h"

typedef Dinfer__V1__Frame wire_frame;

#define WIRE_MAX_FRAME_DEFAULT ((size_t)4 << 20)

typedef enum wire_status {
    WIRE_FRAME = 0,      /* a frame was decoded */
    WIRE_NEED_MORE = 1,  /* no complete frame yet */
    WIRE_BAD_FRAME = 2,  /* a frame of valid length did not parse: skipped, stream intact */
    WIRE_TOO_LARGE = 3,  /* a length over the limit: the stream cannot continue */
} wire_status;

typedef struct wire_decoder {
    uint8_t *buf;
    size_t len, cap, off; /* bytes [off, len) are not consumed yet */
    size_t max_frame;
} wire_decoder;

void wire_decoder_init(wire_decoder *d, size_t max_frame);
void wire_decoder_free(wire_decoder *d);
/* Appends received bytes; -1 when out of memory. */
int wire_decoder_feed(wire_decoder *d, const void *data, size_t n);
/* Bytes held that are not a complete frame yet. */
size_t wire_decoder_pending(const wire_decoder *d);
/* Takes the next frame. WIRE_FRAME gives *out (free with wire_frame_free); WIRE_BAD_FRAME and
 * WIRE_TOO_LARGE say why in err. */
wire_status wire_decode_next(wire_decoder *d, wire_frame **out, base_err *err);
void wire_frame_free(wire_frame *f);

/* A growing byte buffer of encoded frames waiting to be written. */
typedef struct wire_buf {
    uint8_t *data;
    size_t len, cap, off; /* bytes [off, len) are not sent yet */
} wire_buf;

/* Appends f, length-prefixed. -1 when out of memory. */
int wire_buf_append(wire_buf *b, const wire_frame *f);
size_t wire_buf_pending(const wire_buf *b);
void wire_buf_consume(wire_buf *b, size_t n);
void wire_buf_free(wire_buf *b);

/* Blocking helpers for clients: send one frame (0, or -1 with errno set), or read until one frame
 * is decoded (0, or -1 with the reason in err). */
int wire_send(int fd, const wire_frame *f);
int wire_recv(int fd, wire_decoder *d, wire_frame **out, base_err *err);

const char *wire_status_name(int code); /* "INVALID_ARGUMENT", ... for a StatusCode */

#endif
