/* dinfer-server's coordinator (rank 0): a network thread that owns every socket (net.c) and the
 * engine loop on the main thread that owns scheduling (engine_loop.c). They meet at two queues
 * (requests in, encoded frames out) and a statistics snapshot; the watchdog (watchdog.c) watches
 * the steps in flight. Neither thread waits on the other's work, so a slow or silent client
 * cannot stall the engine, and a lost rank cannot silence the clients. */
#ifndef DINFER_LAUNCH_SERVER_SERVER_H
#define DINFER_LAUNCH_SERVER_SERVER_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"
#include "launch/server/metrics.h"
#include "launch/server/queue.h"
#include "launch/server/watchdog.h"
#include "proto/wire.h"
#include "runtime/scheduler.h"
#include "runtime/text/chat_template.h"
#include "runtime/text/tokenizer.h"

/* A request from the network thread to the engine loop. */
typedef enum srv_in_kind {
    SRV_GENERATE,   /* frame holds the GenerateRequest */
    SRV_CANCEL,
    SRV_DISCONNECT, /* the connection is gone: cancel its requests */
} srv_in_kind;

typedef struct srv_in {
    srv_qnode node;
    srv_in_kind kind;
    uint64_t conn, rid;
    wire_frame *frame;
    double arrival;
} srv_in;

/* Frames from the engine loop for one connection, and how many of its generate requests they end
 * (the network thread counts a connection's live requests: one with none may time out as idle). */
typedef struct srv_out {
    srv_qnode node;
    uint64_t conn;
    wire_buf buf;
    int ended;
} srv_out;

typedef struct srv_options {
    const char *host;
    int port;                 /* 0: any free port */
    int http_port;            /* OpenAI's HTTP API on host:http_port; -1: off, 0: any free port */
    const char *auth_token;   /* NULL: no authentication */
    size_t max_frame;         /* largest frame (or HTTP request body) a client may send */
    size_t max_conn_buffer;   /* bytes queued for a client (every reply counts) before it is dropped */
    int max_connections;      /* more are refused with RESOURCE_EXHAUSTED */
    int max_queue;            /* requests waiting or running */
    double idle_timeout;      /* a connection with no live request and no traffic this long is closed */
    double frame_timeout;     /* a frame begun must be complete within this */
    double drain_seconds;
    double comm_timeout;      /* a step running longer than this means a stuck or lost rank */
} srv_options;

/* What Health and Stats report, refreshed by the engine loop after every step. */
typedef struct srv_snapshot {
    char model[256], arch[64];
    int tp, pp, world, vocab, max_context;
    char device[160];
    uint64_t weight_bytes, workspace_bytes, kv_cache_bytes;
    rt_sched_stats st;
} srv_snapshot;

typedef struct srv_shared {
    srv_options opt;
    const rt_tokenizer *tok;         /* the model's tokenizer.json; NULL: text requests are refused */
    const rt_chat *chat;             /* its chat template; NULL: chat requests are refused */
    srv_queue to_engine;             /* srv_in */
    srv_queue to_net;                /* srv_out */
    srv_watchdog wd;
    pthread_mutex_t mu;              /* guards the fields below */
    srv_snapshot snap;
    srv_metrics metrics;             /* the engine loop's, as of its last step */
    bool ready;
    bool engine_done;                /* the engine loop has queued its last frames */
    char bound[128];                 /* "host:port" actually listening */
    char http_bound[128];            /* the same for HTTP ("" when off) */
    int n_socket_conns;              /* the network thread's own count (it alone reads it) */
    /* set by the signal handler */
    volatile sig_atomic_t stop;      /* SIGTERM, SIGINT or SIGUSR1: drain and stop */
    volatile sig_atomic_t stop_signal, stop_sender;
} srv_shared;

int srv_shared_init(srv_shared *s, const srv_options *opt);
void srv_shared_destroy(srv_shared *s);

/* The signal handler's part: records the signal and its sender and wakes both threads. */
void srv_note_signal(srv_shared *s, int sig, int sender_pid);

/* Queues a request for the engine loop (the network thread and the HTTP front end); the engine
 * owns f (may be NULL) from here on. */
void srv_send_in(srv_shared *s, srv_in_kind kind, uint64_t conn, uint64_t rid, wire_frame *f);

/* A listening TCP socket on host:port (0: a free one), non-blocking; bound gets "host:port". */
int srv_listen(const char *host, int port, int *fd, char *bound, size_t bound_len, base_err *err);

/* The network thread. Binds before returning (so "ready" follows a listening socket); runs until
 * the engine is done and every queued frame is written (or 2 s pass). */
int srv_net_start(srv_shared *s, pthread_t *th, base_err *err);

/* The engine loop: runs on rank 0's main thread until a stop signal and the drain. */
int srv_engine_loop(srv_shared *s, rt_engine *e, const rt_sched_options *opt, base_err *err);

#endif
