/* The queue between the coordinator's two threads: a mutex-guarded list of nodes and a wake pipe.
 * A producer appends a chain of nodes and wakes the consumer; the consumer polls the pipe's read
 * end and takes the whole list at once. Nodes embed srv_qnode as their first member. */
#ifndef DINFER_LAUNCH_SERVER_QUEUE_H
#define DINFER_LAUNCH_SERVER_QUEUE_H

#include <pthread.h>

typedef struct srv_qnode {
    struct srv_qnode *next;
} srv_qnode;

typedef struct srv_queue {
    pthread_mutex_t mu;
    srv_qnode *head, *tail;
    int wake[2]; /* non-blocking pipe: a byte in it means "look at the queue" */
} srv_queue;

/* 0, or -1 with errno when the pipe cannot be made. */
int srv_queue_init(srv_queue *q);
/* Frees what is still queued with free_node (may be NULL when the queue is known empty). */
void srv_queue_destroy(srv_queue *q, void (*free_node)(srv_qnode *));

/* Appends the chain first..last (linked by next) and wakes the consumer. */
void srv_queue_push(srv_queue *q, srv_qnode *first, srv_qnode *last);
/* Takes every queued node, oldest first (NULL when empty). */
srv_qnode *srv_queue_take(srv_queue *q);

/* The consumer's side of the wake pipe, for poll(); and emptying it after a wake. */
int srv_queue_fd(const srv_queue *q);
void srv_queue_clear_wake(srv_queue *q);
/* Wakes the consumer without queueing anything (async-signal-safe: one write). */
void srv_queue_wake(srv_queue *q);

#endif
