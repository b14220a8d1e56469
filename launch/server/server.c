/* The state the coordinator's two threads share, and the signal handler's part of it. */
#include "launch/server/server.h"

#include <stdlib.h>
#include <string.h>

#include "base/clock.h"

static void free_in(srv_qnode *n)
{
    srv_in *m = (srv_in *)n;
    wire_frame_free(m->frame);
    free(m);
}

static void free_out(srv_qnode *n)
{
    srv_out *o = (srv_out *)n;
    wire_buf_free(&o->buf);
    free(o);
}

int srv_shared_init(srv_shared *s, const srv_options *opt)
{
    memset(s, 0, sizeof *s);
    s->opt = *opt;
    if (srv_queue_init(&s->to_engine) != 0)
        return -1;
    if (srv_queue_init(&s->to_net) != 0) {
        srv_queue_destroy(&s->to_engine, NULL);
        return -1;
    }
    pthread_mutex_init(&s->mu, NULL);
    srv_metrics_init(&s->metrics);
    srv_watchdog_init(&s->wd, opt->comm_timeout);
    return 0;
}

void srv_shared_destroy(srv_shared *s)
{
    srv_queue_destroy(&s->to_engine, free_in);
    srv_queue_destroy(&s->to_net, free_out);
    srv_watchdog_destroy(&s->wd);
    pthread_mutex_destroy(&s->mu);
}

void srv_note_signal(srv_shared *s, int sig, int sender_pid)
{
    s->stop_signal = sig;
    s->stop_sender = sender_pid;
    s->stop = 1;
    srv_queue_wake(&s->to_engine);
    srv_queue_wake(&s->to_net);
}

void srv_send_in(srv_shared *s, srv_in_kind kind, uint64_t conn, uint64_t rid, wire_frame *f)
{
    srv_in *m = calloc(1, sizeof *m);
    if (!m) {
        wire_frame_free(f);
        return;
    }
    m->kind = kind, m->conn = conn, m->rid = rid, m->frame = f, m->arrival = base_now();
    srv_queue_push(&s->to_engine, &m->node, &m->node);
}
