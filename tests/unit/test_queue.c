/* The coordinator's queue: nodes from another thread arrive in order and whole chains at a time,
 * the consumer is woken through the pipe, and what is left at the end is freed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>

#include "launch/server/queue.h"

typedef struct item {
    srv_qnode node;
    int value;
} item;

static srv_queue q;
enum { N = 10000 };

static void *producer(void *arg)
{
    (void)arg;
    for (int i = 0; i < N; i += 2) { /* chains of two */
        item *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
        a->value = i, b->value = i + 1;
        a->node.next = &b->node;
        srv_queue_push(&q, &a->node, &b->node);
    }
    return NULL;
}

static int freed;
static void free_item(srv_qnode *n)
{
    freed++;
    free(n);
}

static void test_order_and_wake(void **state)
{
    (void)state;
    assert_int_equal(srv_queue_init(&q), 0);
    pthread_t th;
    pthread_create(&th, NULL, producer, NULL);
    int next = 0;
    while (next < N) {
        struct pollfd p = {.fd = srv_queue_fd(&q), .events = POLLIN};
        assert_true(poll(&p, 1, 5000) == 1); /* woken, never left waiting */
        srv_queue_clear_wake(&q);
        for (srv_qnode *n = srv_queue_take(&q), *nx; n; n = nx) {
            nx = n->next;
            assert_int_equal(((item *)n)->value, next++);
            free(n);
        }
    }
    pthread_join(th, NULL);
    assert_null(srv_queue_take(&q));
    /* what is still queued at the end goes to free_node */
    for (int i = 0; i < 3; i++) {
        item *a = calloc(1, sizeof *a);
        srv_queue_push(&q, &a->node, &a->node);
    }
    srv_queue_destroy(&q, free_item);
    assert_int_equal(freed, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_and_wake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
