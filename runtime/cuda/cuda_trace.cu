/* Measuring: a step's kernels as they ran (cuda_common.cuh says what each block records). In a build
 * configured with -DDINFER_CUDA_TRACE=ON, DINFER_CUDA_TRACE_OUT=FILE records the graph replays
 * (decode steps) from DINFER_CUDA_TRACE_SKIP (default 16) for DINFER_CUDA_TRACE_STEPS (default 4)
 * and writes them to FILE when the backend goes, one line a record; tests/gpu/trace_step.py turns
 * them into each kernel's share of a step. */
#include "runtime/cuda/cuda_common.cuh"

#include <string.h>

#ifdef DINFER_CUDA_TRACE

#define TRACE_CAP 8192u /* records an SM (64 bytes each; ~1,300 a step of the 8B shape at batch 1) */
#define TRACE_ARMS 64

static void (*trace_arms[TRACE_ARMS])(cuda_trace_buf *);
static int trace_n_arms;

void cuda_trace_register(void (*arm)(cuda_trace_buf *))
{
    if (trace_n_arms < TRACE_ARMS)
        trace_arms[trace_n_arms++] = arm;
}

static int trace_count(const char *name, int dflt, base_err *err)
{
    const char *e = getenv(name);
    if (!e)
        return dflt;
    char *end = NULL;
    const long v = strtol(e, &end, 10);
    if (end == e || *end || v < 0 || v > 1000000) {
        base_errf(err, "%s is '%.32s': a count of graph replays, 0 to 1000000", name, e);
        return -1;
    }
    return (int)v;
}

int cuda_trace_open(cuda_ctx *c, base_err *err)
{
    const char *out = getenv("DINFER_CUDA_TRACE_OUT");
    if (!out || !*out)
        return 0;
    const int skip = trace_count("DINFER_CUDA_TRACE_SKIP", 16, err);
    const int steps = skip < 0 ? -1 : trace_count("DINFER_CUDA_TRACE_STEPS", 4, err);
    if (steps < 0)
        return -1;
    if (trace_n_arms >= TRACE_ARMS) {
        base_errf(err, "DINFER_CUDA_TRACE: more than %d CUDA sources to arm", TRACE_ARMS);
        return -1;
    }
    const size_t head_bytes = offsetof(cuda_trace_buf, rec),
                 bytes = head_bytes + (size_t)CUDA_TRACE_SMS * TRACE_CAP * sizeof(cuda_trace_rec);
    cuda_trace_buf *head = (cuda_trace_buf *)calloc(1, head_bytes);
    if (head)
        head->cap = TRACE_CAP;
    if (!head || cudaMalloc(&c->trace, bytes) != cudaSuccess ||
        cudaMemcpy(c->trace, head, head_bytes, cudaMemcpyHostToDevice) != cudaSuccess) {
        cudaGetLastError();
        cudaFree(c->trace);
        c->trace = NULL;
        free(head);
        base_errf(err, "DINFER_CUDA_TRACE_OUT: cannot allocate %zu MiB for the trace", bytes >> 20);
        return -1;
    }
    free(head);
    for (int i = 0; i < trace_n_arms; i++)
        trace_arms[i](c->trace);
    c->trace_out = strdup(out);
    c->trace_from = skip, c->trace_to = skip + steps;
    return 0;
}

void cuda_trace_replay(cuda_ctx *c)
{
    if (!c->trace)
        return;
    const int i = c->trace_replay++;
    /* stream-ordered: the switch lands between two replays */
    if (i == c->trace_from || i == c->trace_to)
        CUDA_CHECK(c, cudaMemsetAsync(&c->trace->on, i == c->trace_from ? 1 : 0, 1, c->stream));
}

void cuda_trace_close(cuda_ctx *c)
{
    if (!c->trace)
        return;
    const size_t head_bytes = offsetof(cuda_trace_buf, rec);
    cuda_trace_buf *head = (cuda_trace_buf *)malloc(head_bytes);
    cuda_trace_rec *rec = (cuda_trace_rec *)malloc((size_t)TRACE_CAP * sizeof *rec);
    FILE *f = NULL;
    unsigned long kept = 0, made = 0;
    if (!head || !rec || cudaStreamSynchronize(c->stream) != cudaSuccess ||
        cudaMemcpy(head, c->trace, head_bytes, cudaMemcpyDeviceToHost) != cudaSuccess) {
        fprintf(stderr, "rank %d: DINFER_CUDA_TRACE_OUT: cannot read the trace back\n", c->rank);
        goto done;
    }
    f = fopen(c->trace_out, "w");
    if (!f) {
        fprintf(stderr, "rank %d: DINFER_CUDA_TRACE_OUT: cannot write '%s'\n", c->rank, c->trace_out);
        goto done;
    }
    fprintf(f,
            "# dinfer trace: replays %d to %d of %d\n"
            "# grid block sm t_pre t_post t_end gx gy gz bx t_mark t_mark2\n",
            c->trace_from, c->trace_to - 1, c->trace_replay);
    for (int sm = 0; sm < CUDA_TRACE_SMS; sm++) {
        const unsigned n = head->n[sm][0] < TRACE_CAP ? head->n[sm][0] : TRACE_CAP;
        made += head->n[sm][0];
        if (n == 0)
            continue;
        if (cudaMemcpy(rec, c->trace->rec + (size_t)sm * TRACE_CAP, (size_t)n * sizeof *rec, cudaMemcpyDeviceToHost) !=
            cudaSuccess) {
            fprintf(stderr, "rank %d: DINFER_CUDA_TRACE_OUT: cannot read SM %d's records back\n", c->rank, sm);
            break;
        }
        for (unsigned i = 0; i < n; i++)
            fprintf(f, "%llu %u %u %llu %llu %llu %u %u %u %u %llu %llu\n", rec[i].grid, rec[i].block, rec[i].sm,
                    rec[i].t_pre, rec[i].t_post, rec[i].t_end, rec[i].gx, rec[i].gy, rec[i].gz, rec[i].bx,
                    rec[i].t_mark, rec[i].t_mark2);
        kept += n;
    }
    if (fclose(f) != 0)
        fprintf(stderr, "rank %d: DINFER_CUDA_TRACE_OUT: cannot write '%s'\n", c->rank, c->trace_out);
    else
        fprintf(stderr, "rank %d: %lu trace records (%lu made) of replays %d to %d in %s\n", c->rank, kept, made,
                c->trace_from, c->trace_to - 1, c->trace_out);
done:
    free(head);
    free(rec);
    cudaFree(c->trace);
    free(c->trace_out);
    c->trace = NULL;
}

#else

int cuda_trace_open(cuda_ctx *c, base_err *err)
{
    (void)c;
    const char *out = getenv("DINFER_CUDA_TRACE_OUT");
    if (out && *out) {
        base_errf(err, "DINFER_CUDA_TRACE_OUT is set, but this build records no trace (configure with "
                       "-DDINFER_CUDA_TRACE=ON)");
        return -1;
    }
    return 0;
}

void cuda_trace_replay(cuda_ctx *c) { (void)c; }

void cuda_trace_close(cuda_ctx *c) { (void)c; }

#endif
