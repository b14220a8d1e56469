#include "launch/job.h"

#include <mpi.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LINE 640

/* "rank R (host H)" for messages */
static void who(const comm *c, char *buf, size_t n)
{
    char host[128] = "?";
    gethostname(host, sizeof host - 1);
    snprintf(buf, n, "rank %d (host %s)", comm_topo(c)->rank, host);
}

static int gather_lines(comm *c, const char *line, char **all)
{
    const comm_topology *t = comm_topo(c);
    char mine[LINE] = {0};
    snprintf(mine, sizeof mine, "%s", line);
    size_t *counts = malloc((size_t)t->world_size * sizeof *counts);
    *all = t->rank == 0 ? calloc((size_t)t->world_size, LINE) : NULL;
    if (!counts || (t->rank == 0 && !*all)) {
        free(counts);
        return -1;
    }
    for (int i = 0; i < t->world_size; i++)
        counts[i] = LINE;
    int rc = comm_gatherv(t->world, mine, LINE, *all, counts, 0, COMM_U8);
    free(counts);
    return rc;
}

int job_agree(comm *c, const char *prog, int rc, const rt_err *err)
{
    int any = 0;
    if (comm_any(comm_topo(c)->world, rc != 0, &any) != 0) {
        fprintf(stderr, "%s: %s\n", prog, comm_error(c));
        return -1;
    }
    if (!any)
        return 0;
    char line[LINE] = "", me[160];
    if (rc) {
        who(c, me, sizeof me);
        snprintf(line, sizeof line, "%s: %s", me, err->msg);
    }
    char *all = NULL;
    if (gather_lines(c, line, &all) == 0 && all) {
        /* each distinct message once, from the lowest rank that gave it */
        int n_failed = 0;
        const int W = comm_topo(c)->world_size;
        for (int i = 0; i < W; i++) {
            const char *msg = all + (size_t)i * LINE;
            if (!*msg)
                continue;
            n_failed++;
            const char *text = strstr(msg, "): ");
            bool seen = false;
            for (int j = 0; j < i && text && !seen; j++) {
                const char *prev = strstr(all + (size_t)j * LINE, "): ");
                seen = prev && strcmp(prev, text) == 0;
            }
            if (!seen)
                fprintf(stderr, "%s: %s\n", prog, msg);
        }
        if (n_failed > 1)
            fprintf(stderr, "%s: %d of %d ranks failed\n", prog, n_failed, W);
    }
    free(all);
    return -1;
}

int job_print_by_rank(comm *c, FILE *f, const char *line)
{
    char *all = NULL;
    if (gather_lines(c, line, &all) != 0)
        return -1;
    for (int i = 0; all && i < comm_topo(c)->world_size; i++)
        fprintf(f, "%s\n", all + (size_t)i * LINE);
    free(all);
    return 0;
}

void job_abort(comm *c, const char *prog, const rt_err *err)
{
    char me[160] = "rank ?";
    if (c)
        who(c, me, sizeof me);
    fprintf(stderr, "%s: %s: %s\n", prog, me, err->msg);
    fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

int job_threads(const comm *c, int requested)
{
    if (requested > 0)
        return requested;
    const char *env = getenv("OMP_NUM_THREADS");
    if (env && atoi(env) > 0)
        return atoi(env);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int local = c ? comm_topo(c)->local_size : 1;
    long n = cores / (local > 0 ? local : 1);
    return n > 0 ? (int)n : 1;
}

int job_load(comm *c, const char *prog, const char *dir, int tp, int pp, const int *lps, int threads,
             bool verbose, job_model *jm)
{
    memset(jm, 0, sizeof *jm);
    const comm_topology *t = comm_topo(c);
    rt_err err = {{0}};
    int rc = rt_config_load(&jm->cfg, dir, &err);
    if (rc == 0)
        rc = plan_make(&jm->plan, &jm->cfg, tp, pp, lps, RT_F32, &err);
    if (job_agree(c, prog, rc, &err))
        return -1;
    jm->threads = job_threads(c, threads);
    jm->be = rt_cpu_backend_create(jm->threads);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = jm->be ? rt_model_load(&jm->model, &jm->cfg, &jm->plan.ranks[t->rank].shard, dir, jm->be, &err)
                : rt_errf(&err, "cannot create the CPU backend");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (job_agree(c, prog, rc, &err)) {
        job_model_free(jm);
        return -1;
    }
    if (verbose) {
        const rt_shard *s = &jm->model.shard;
        char line[320];
        snprintf(line, sizeof line,
                 "rank %d (stage %d, tp %d): layers %d-%d, heads %d-%d, KV heads %d-%d, FFN %d-%d, vocab %d-%d: "
                 "loaded %zu bytes in %.2f s, %d threads",
                 t->rank, t->stage, t->tp_rank, s->layer_begin, s->layer_end - 1, s->head_begin,
                 s->head_begin + s->n_heads - 1, s->kv_head_begin, s->kv_head_begin + s->n_kv_heads - 1,
                 s->ffn_begin, s->ffn_end - 1, s->vocab_begin, s->vocab_end - 1, jm->model.bytes_loaded,
                 (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec), jm->threads);
        if (t->rank == 0)
            fprintf(stderr, "%s: %s, tp=%d x pp=%d\n", dir, rt_arch_name(jm->cfg.arch), tp, pp);
        job_print_by_rank(c, stderr, line);
    }
    return 0;
}

void job_model_free(job_model *jm)
{
    rt_model_free(&jm->model);
    if (jm->be)
        jm->be->ops->destroy(jm->be);
    plan_free(&jm->plan);
    memset(jm, 0, sizeof *jm);
}
