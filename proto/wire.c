#include "proto/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void wire_decoder_init(wire_decoder *d, size_t max_frame)
{
    memset(d, 0, sizeof *d);
    d->max_frame = max_frame ? max_frame : WIRE_MAX_FRAME_DEFAULT;
}

void wire_decoder_free(wire_decoder *d)
{
    free(d->buf);
    memset(d, 0, sizeof *d);
}

int wire_decoder_feed(wire_decoder *d, const void *data, size_t n)
{
    if (d->off > 0 && d->off == d->len)
        d->off = d->len = 0;
    if (d->len + n > d->cap) {
        if (d->off > 0) { /* compact before growing */
            memmove(d->buf, d->buf + d->off, d->len - d->off);
            d->len -= d->off;
            d->off = 0;
        }
        if (d->len + n > d->cap) {
            size_t cap = d->cap ? d->cap : 4096;
            while (cap < d->len + n)
                cap *= 2;
            uint8_t *nb = realloc(d->buf, cap);
            if (!nb)
                return -1;
            d->buf = nb;
            d->cap = cap;
        }
    }
    memcpy(d->buf + d->len, data, n);
    d->len += n;
    return 0;
}

size_t wire_decoder_pending(const wire_decoder *d)
{
    return d->len - d->off;
}

wire_status wire_decode_next(wire_decoder *d, wire_frame **out, base_err *err)
{
    size_t have = d->len - d->off;
    if (have < 4)
        return WIRE_NEED_MORE;
    const uint8_t *p = d->buf + d->off;
    uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    if (n > d->max_frame) {
        base_errf(err, "frame length %u is over the %zu-byte limit", n, d->max_frame);
        return WIRE_TOO_LARGE;
    }
    if (have - 4 < n)
        return WIRE_NEED_MORE;
    d->off += 4 + (size_t)n;
    *out = dinfer__v1__frame__unpack(NULL, n, p + 4);
    if (!*out) {
        base_errf(err, "a frame of %u bytes is not a valid dinfer.v1.Frame", n);
        return WIRE_BAD_FRAME;
    }
    return WIRE_FRAME;
}

void wire_frame_free(wire_frame *f)
{
    if (f)
        dinfer__v1__frame__free_unpacked(f, NULL);
}

int wire_buf_append(wire_buf *b, const wire_frame *f)
{
    size_t n = dinfer__v1__frame__get_packed_size(f);
    if (n > UINT32_MAX)
        return -1;
    if (b->off > 0 && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + 4 + n > b->cap) {
        if (b->off > 0) {
            memmove(b->data, b->data + b->off, b->len - b->off);
            b->len -= b->off;
            b->off = 0;
        }
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + 4 + n)
            cap *= 2;
        if (cap != b->cap) {
            uint8_t *nd = realloc(b->data, cap);
            if (!nd)
                return -1;
            b->data = nd;
            b->cap = cap;
        }
    }
    uint8_t *p = b->data + b->len;
    p[0] = (uint8_t)(n >> 24), p[1] = (uint8_t)(n >> 16), p[2] = (uint8_t)(n >> 8), p[3] = (uint8_t)n;
    dinfer__v1__frame__pack(f, p + 4);
    b->len += 4 + n;
    return 0;
}

size_t wire_buf_pending(const wire_buf *b)
{
    return b->len - b->off;
}

void wire_buf_consume(wire_buf *b, size_t n)
{
    b->off += n;
    if (b->off == b->len)
        b->off = b->len = 0;
}

void wire_buf_free(wire_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

int wire_send(int fd, const wire_frame *f)
{
    wire_buf b = {0};
    if (wire_buf_append(&b, f)) {
        errno = ENOMEM;
        return -1;
    }
    int rc = 0;
    while (wire_buf_pending(&b) > 0) {
        ssize_t w = send(fd, b.data + b.off, wire_buf_pending(&b), MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            rc = -1;
            break;
        }
        wire_buf_consume(&b, (size_t)w);
    }
    wire_buf_free(&b);
    return rc;
}

int wire_recv(int fd, wire_decoder *d, wire_frame **out, base_err *err)
{
    for (;;) {
        wire_status st = wire_decode_next(d, out, err);
        if (st == WIRE_FRAME)
            return 0;
        if (st != WIRE_NEED_MORE)
            return -1;
        uint8_t buf[16384];
        ssize_t r = recv(fd, buf, sizeof buf, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return base_errf(err, "%s", r == 0 ? "the server closed the connection" : strerror(errno));
        if (wire_decoder_feed(d, buf, (size_t)r))
            return base_errf(err, "out of memory");
    }
}

const char *wire_status_name(int code)
{
    switch (code) {
    case 0: return "OK";
    case 1: return "CANCELLED";
    case 3: return "INVALID_ARGUMENT";
    case 4: return "DEADLINE_EXCEEDED";
    case 5: return "NOT_FOUND";
    case 6: return "ALREADY_EXISTS";
    case 8: return "RESOURCE_EXHAUSTED";
    case 12: return "UNIMPLEMENTED";
    case 13: return "INTERNAL";
    case 14: return "UNAVAILABLE";
    case 16: return "UNAUTHENTICATED";
    }
    return "UNKNOWN";
}
