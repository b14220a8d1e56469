/* dinfer-server's rank 0: a network thread that owns every socket, and the engine loop on the
 * main thread that owns scheduling. They meet at two queues (requests in, encoded frames out)
 * and a statistics snapshot, each side woken through its own pipe; neither ever waits on the
 * other's work, so a slow or silent client cannot stall the engine. */
#ifndef DINFER_LAUNCH_SERVER_H
#define DINFER_LAUNCH_SERVER_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "proto/wire.h"
#include "runtime/scheduler.h"

typedef enum srv_in_kind {
    SRV_GENERATE,   /* frame holds the GenerateRequest */
    SRV_CANCEL,
    SRV_DISCONNECT, /* the connection is gone: cancel its requests */
} srv_in_kind;

typedef struct srv_in {
    srv_in_kind kind;
    uint64_t conn, rid;
    wire_frame *frame;
    double arrival;
    struct srv_in *next;
} srv_in;

typedef struct srv_out {
    uint64_t conn;
    wire_buf buf;
    struct srv_out *next;
} srv_out;

typedef struct srv_options {
    const char *host;
    int port;                 /* 0: any free port */
    const char *auth_token;   /* NULL: no authentication */
    size_t max_frame;
    size_t max_conn_buffer;   /* bytes queued to a client that does not read before it is dropped */
    int max_connections;
    int max_queue;            /* requests waiting or running */
    double drain_seconds;
    double comm_timeout;      /* a step running longer than this means a stuck or lost rank */
} srv_options;

/* Where every rank of the job runs: how rank 0 names a rank it lost. */
typedef struct srv_rank_info {
    char host[64];
    int pid;
} srv_rank_info;

/* What Health and Stats report, refreshed by the engine loop after every step. */
typedef struct srv_snapshot {
    char model[256], arch[64];
    int tp, pp, world, vocab, max_context;
    char device[160];
    uint64_t weight_bytes, workspace_bytes, kv_cache_bytes;
    rt_sched_stats st;
    int live;                 /* requests queued or running */
} srv_snapshot;

typedef struct srv_shared {
    srv_options opt;
    pthread_mutex_t mu;
    srv_in *in_head, *in_tail;
    srv_out *out_head, *out_tail;
    srv_snapshot snap;
    int connections;
    int engine_wake[2], net_wake[2]; /* pipes: write a byte to wake that side */
    volatile sig_atomic_t stop;      /* SIGTERM / SIGINT */
    bool engine_done;                /* the engine loop has queued its last frames */
    bool ready;
    char bound[128];                 /* "host:port" actually listening */
    double step_started;             /* when the running step began; 0 between steps */
    double longest_step;             /* seconds, of any step so far */
    double stop_at;                  /* when the stop signal was noticed */
    srv_rank_info *ranks;            /* (world) */
    int world;
} srv_shared;

int srv_shared_init(srv_shared *s, const srv_options *opt);
void srv_shared_destroy(srv_shared *s);
void srv_wake(int pipe_fds[2]);

/* The network thread. Binds before returning from srv_net_start (so "ready" follows a listening
 * socket); runs until the engine is done and every queued frame is written (or 2 s pass). */
int srv_net_start(srv_shared *s, pthread_t *th, char *err, size_t errlen);

/* The engine loop: runs on rank 0's main thread until a stop signal and the drain. */
int srv_engine_loop(srv_shared *s, rt_engine *e, const rt_sched_options *opt, base_err *err);


#endif
