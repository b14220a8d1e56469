/* dinfer-server's HTTP front end: OpenAI's API, /health, /metrics, /tokenize and /detokenize,
 * served by libmicrohttpd inside the network thread's poll loop (MHD's external epoll mode: one
 * descriptor in our poll set, MHD_run when it fires). A generate request becomes the same
 * GenerateRequest frames a socket client sends, under a connection id of its own (the top bit
 * set), so both protocols share the one engine loop and scheduler; the engine's reply frames come
 * back through srv_http_deliver and leave as JSON or Server-Sent Events. Everything here runs on
 * the network thread. */
#ifndef DINFER_LAUNCH_SERVER_HTTP_H
#define DINFER_LAUNCH_SERVER_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "launch/server/server.h"

#define SRV_HTTP_CONN_BIT ((uint64_t)1 << 63) /* connection ids of HTTP requests */

typedef struct srv_http srv_http;

/* Listens on opt.host:opt.http_port (s->http_bound tells where); -1 with the reason. */
int srv_http_start(srv_shared *s, srv_http **out, base_err *err);
/* The descriptor to poll for reading, and how long poll may wait (ms, at most cap). */
int srv_http_fd(const srv_http *h);
int srv_http_timeout_ms(srv_http *h, int cap);
/* Lets libmicrohttpd do its work: accept, read, call our handlers, write. */
void srv_http_run(srv_http *h);
/* The engine's frames for one HTTP request (o->conn has SRV_HTTP_CONN_BIT); o stays the caller's. */
void srv_http_deliver(srv_http *h, const srv_out *o);
/* Draining: no new connections; requests in progress go on. */
void srv_http_quiesce(srv_http *h);
/* Responses still being written. */
int srv_http_active(const srv_http *h);
void srv_http_stop(srv_http *h);

#endif
