#include "launch/server/queue.h"

#include <fcntl.h>
#include <unistd.h>

int srv_queue_init(srv_queue *q)
{
    q->head = q->tail = NULL;
    if (pipe2(q->wake, O_NONBLOCK | O_CLOEXEC) != 0)
        return -1;
    pthread_mutex_init(&q->mu, NULL);
    return 0;
}

void srv_queue_destroy(srv_queue *q, void (*free_node)(srv_qnode *))
{
    for (srv_qnode *n = srv_queue_take(q), *next; n; n = next) {
        next = n->next;
        if (free_node)
            free_node(n);
    }
    close(q->wake[0]);
    close(q->wake[1]);
    pthread_mutex_destroy(&q->mu);
}

void srv_queue_push(srv_queue *q, srv_qnode *first, srv_qnode *last)
{
    if (!first)
        return;
    last->next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->tail)
        q->tail->next = first;
    else
        q->head = first;
    q->tail = last;
    pthread_mutex_unlock(&q->mu);
    srv_queue_wake(q);
}

srv_qnode *srv_queue_take(srv_queue *q)
{
    pthread_mutex_lock(&q->mu);
    srv_qnode *n = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return n;
}

int srv_queue_fd(const srv_queue *q)
{
    return q->wake[0];
}

void srv_queue_clear_wake(srv_queue *q)
{
    char buf[256];
    while (read(q->wake[0], buf, sizeof buf) > 0) {
    }
}

void srv_queue_wake(srv_queue *q)
{
    char b = 1;
    ssize_t r = write(q->wake[1], &b, 1); /* a full pipe already means "wake up" */
    (void)r;
}
