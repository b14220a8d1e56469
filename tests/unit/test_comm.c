/* comm over MPI, run under mpirun with 4 ranks as tp=2 x pp=2: the group layout, and every
 * collective with messages split into many small chunks (the path taken above INT_MAX elements). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm.h"

static comm *c;
static const comm_topology *t;
static base_err e; /* what a failed call says */

static void test_topology(void **state)
{
    (void)state;
    assert_int_equal(t->world_size, 4);
    assert_int_equal(t->stage, t->rank % 2);
    assert_int_equal(t->tp_rank, t->rank / 2);
    /* the tp group holds the two ranks of this stage: an all-reduce of world ranks shows which */
    int32_t sum = t->rank;
    assert_int_equal(comm_allreduce_sum(t->tp_group, &sum, 1, COMM_I32, &e), 0);
    assert_int_equal(sum, t->stage + (t->stage + 2));
    assert_int_equal(comm_group_size(t->tp_group), 2);
    assert_int_equal(comm_group_rank(t->tp_group), t->tp_rank);
    assert_int_equal(comm_group_size(t->pp_group), 2);
    assert_int_equal(comm_group_rank(t->pp_group), t->stage);
    assert_true(t->local_size >= 1 && t->local_rank < t->local_size);
}

/* The world rank at (stage, tp_rank) in this test's transposed layout. */
static int world_at(int stage, int tp_rank)
{
    return tp_rank * 2 + stage;
}

static void test_allreduce_and_bcast(void **state)
{
    (void)state;
    float v[10];
    for (int i = 0; i < 10; i++)
        v[i] = (float)(t->rank * 100 + i);
    assert_int_equal(comm_allreduce_sum(t->tp_group, v, 10, COMM_F32, &e), 0);
    int a = world_at(t->stage, 0), b = world_at(t->stage, 1); /* the two ranks of my tp group */
    for (int i = 0; i < 10; i++)
        assert_true(v[i] == (float)(a * 100 + b * 100 + 2 * i));
    int32_t w[11];
    for (int i = 0; i < 11; i++)
        w[i] = t->rank == 3 ? 1000 + i : -1;
    assert_int_equal(comm_bcast(t->world, w, 11, COMM_I32, 3, &e), 0);
    for (int i = 0; i < 11; i++)
        assert_int_equal(w[i], 1000 + i);
}

static void test_gathers(void **state)
{
    (void)state;
    int32_t mine[5], all[20];
    for (int i = 0; i < 5; i++)
        mine[i] = t->rank * 10 + i;
    assert_int_equal(comm_allgather(t->world, mine, all, 5, COMM_I32, &e), 0);
    for (int r = 0; r < 4; r++)
        for (int i = 0; i < 5; i++)
            assert_int_equal(all[r * 5 + i], r * 10 + i);
    /* uneven counts over the tp group, gathered on each of its ranks in turn */
    size_t counts[2] = {7, 3};
    float send[7], recv[10];
    size_t n = counts[t->tp_rank];
    for (size_t i = 0; i < n; i++)
        send[i] = (float)(t->rank * 1000 + (int)i);
    for (int root = 0; root < 2; root++) {
        memset(recv, 0, sizeof recv);
        assert_int_equal(comm_gatherv(t->tp_group, send, n, recv, counts, root, COMM_F32, &e), 0);
        if (t->tp_rank == root) {
            for (int i = 0; i < 7; i++)
                assert_true(recv[i] == (float)(world_at(t->stage, 0) * 1000 + i));
            for (int i = 0; i < 3; i++)
                assert_true(recv[7 + i] == (float)(world_at(t->stage, 1) * 1000 + i));
        }
    }
    /* a rank with nothing to give */
    size_t zc[2] = {0, 4};
    float z[4] = {1, 2, 3, 4}, zr[4] = {0};
    assert_int_equal(comm_gatherv(t->tp_group, z, zc[t->tp_rank], zr, zc, 0, COMM_F32, &e), 0);
    if (t->tp_rank == 0)
        assert_true(zr[0] == 1 && zr[3] == 4);
}

static void test_send_recv_and_any(void **state)
{
    (void)state;
    uint8_t buf[13];
    if (t->stage == 0) {
        for (int i = 0; i < 13; i++)
            buf[i] = (uint8_t)(t->tp_rank * 50 + i);
        assert_int_equal(comm_send(t->pp_group, buf, 13, COMM_U8, 1, &e), 0);
    } else {
        memset(buf, 0, sizeof buf);
        assert_int_equal(comm_recv(t->pp_group, buf, 13, COMM_U8, 0, &e), 0);
        for (int i = 0; i < 13; i++)
            assert_int_equal(buf[i], t->tp_rank * 50 + i);
    }
    int any = -1;
    assert_int_equal(comm_any(t->world, 0, &any, &e), 0);
    assert_int_equal(any, 0);
    assert_int_equal(comm_any(t->world, t->rank == 2, &any, &e), 0);
    assert_int_equal(any, 1);
}

/* A failing call says which rank and which call, in the caller's base_err. */
static void test_errors(void **state)
{
    (void)state;
    uint16_t h[2] = {0};
    e.msg[0] = 0;
    assert_int_equal(comm_allreduce_sum(t->tp_group, h, 2, COMM_BF16, &e), -1);
    char want[64];
    snprintf(want, sizeof want, "rank %d: MPI cannot sum 16-bit floats", t->rank);
    assert_string_equal(e.msg, want);
}

static void test_counters(void **state)
{
    (void)state;
    comm_reset_counters(c);
    float v[6] = {0};
    assert_int_equal(comm_allreduce_sum(t->tp_group, v, 6, COMM_F32, &e), 0);
    comm_counters k = comm_get_counters(c);
    assert_int_equal(k.tp_bytes, 24);
    assert_int_equal(k.pp_bytes, 0);
}

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    base_err err;
    /* comm builds its groups from the places it is given: here not the plan's layout (stage =
     * rank / tp) but its transpose, so the test shows the groups follow the caller */
    int rank;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    /* places that collide (ranks 0 and 1 both at stage 0, tp rank 0) or fall outside are refused on
     * every rank */
    if (comm_mpi_create(&c, 2, 2, rank / 2, rank == 1 ? 0 : rank % 2, &err) == 0 || !strstr(err.msg, "same place") ||
        comm_mpi_create(&c, 2, 2, rank == 3 ? 2 : rank / 2, rank % 2, &err) == 0 || !strstr(err.msg, "outside")) {
        fprintf(stderr, "test_comm: bad places were not refused (%s)\n", err.msg);
        MPI_Finalize();
        return 1;
    }
    if (comm_mpi_create(&c, 2, 2, rank % 2, rank / 2, &err) != 0) {
        fprintf(stderr, "test_comm: %s (run it under mpirun -np 4)\n", err.msg);
        MPI_Finalize();
        return 1;
    }
    t = comm_topo(c);
    comm_set_chunk_elems(c, 2); /* every message above 2 elements goes in chunks */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topology),
        cmocka_unit_test(test_allreduce_and_bcast),
        cmocka_unit_test(test_gathers),
        cmocka_unit_test(test_send_recv_and_any),
        cmocka_unit_test(test_counters),
        cmocka_unit_test(test_errors),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    int any = 0;
    comm_any(t->world, rc != 0, &any, &err);
    comm_destroy(c);
    MPI_Finalize();
    return any ? 1 : 0;
}
