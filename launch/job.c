#include "launch/job.h"

#include "base/file.h"

#include "runtime/backend.h"
#include "runtime/kv_cache.h"
#include "runtime/sampler.h"
#include "runtime/scheduler.h"
#ifdef DINFER_HAVE_CUDA
#include "runtime/cuda/cuda_device.h"
#endif

#include <dirent.h>
#include <mpi.h>
#include <omp.h>
#include <sched.h>
#include <sys/stat.h>
#include <stdint.h>
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

static int gather_lines(comm *c, const char *line, char **all, base_err *err)
{
    const comm_topology *t = comm_topo(c);
    char mine[LINE] = {0};
    snprintf(mine, sizeof mine, "%s", line);
    size_t *counts = malloc((size_t)t->world_size * sizeof *counts);
    *all = t->rank == 0 ? calloc((size_t)t->world_size, LINE) : NULL;
    if (!counts || (t->rank == 0 && !*all)) {
        free(counts);
        return base_errf(err, "rank %d: out of memory", t->rank);
    }
    for (int i = 0; i < t->world_size; i++)
        counts[i] = LINE;
    int rc = comm_gatherv(t->world, mine, LINE, *all, counts, 0, COMM_U8, err);
    free(counts);
    return rc;
}

int job_agree(comm *c, const char *prog, int rc, const base_err *err)
{
    int any = 0;
    base_err cerr;
    if (comm_any(comm_topo(c)->world, rc != 0, &any, &cerr) != 0) {
        fprintf(stderr, "%s: %s\n", prog, cerr.msg);
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
    if (gather_lines(c, line, &all, &cerr) == 0 && all) {
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
    if (gather_lines(c, line, &all, NULL) != 0)
        return -1;
    for (int i = 0; all && i < comm_topo(c)->world_size; i++)
        fprintf(f, "%s\n", all + (size_t)i * LINE);
    free(all);
    return 0;
}

void job_abort(comm *c, const char *prog, const base_err *err)
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

/* Says so when this rank may run on one core of several (Open MPI binds each rank to a core by
 * default when it starts 1 or 2 of them): its OpenMP threads, the host sampler and the step's host
 * work would all share that core. */
static void warn_if_bound(const comm *c, const job_model *jm)
{
    cpu_set_t set;
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) != 1 || online <= 1)
        return;
    if (!jm->on_gpu && jm->threads <= 1)
        return;
    fprintf(stderr,
            "rank %d: warning: bound to 1 of this host's %ld cores (mpirun binds each of 1 or 2 ranks to a core by "
            "default); %s runs on that one core: start it with mpirun --bind-to none (dinfer-launch does)\n",
            comm_topo(c)->rank, online, jm->on_gpu ? "the host's share of every step" : "every OpenMP thread");
}

static double gib(size_t b)
{
    return (double)b / (1 << 30);
}

/* Chooses this rank's backend (collective: the default device is cuda only when every rank has a
 * GPU) and checks the memory plan before anything is loaded. */
static int make_backend(comm *c, const job_flags *o, job_model *jm, base_err *err)
{
    const comm_topology *t = comm_topo(c);
    int n_gpu = 0;
#ifdef DINFER_HAVE_CUDA
    n_gpu = rt_cuda_device_count();
#endif
    int lacking = 0;
    if (comm_any(t->world, n_gpu == 0, &lacking, err))
        return -1;
    bool want_gpu = o->device ? strcmp(o->device, "cuda") == 0 : !lacking;
    if (o->device && want_gpu && n_gpu == 0)
        return base_errf(err, "--device cuda, but no CUDA device is visible on this rank%s",
#ifdef DINFER_HAVE_CUDA
                       ""
#else
                       " (this build has no CUDA backend)"
#endif
        );
    jm->threads = job_threads(c, o->threads);
    if (!want_gpu) {
        if (o->dtype && strcmp(o->dtype, "f32") != 0)
            return base_errf(err, "--dtype %s needs --device cuda: the CPU backend computes in fp32", o->dtype);
        jm->dtype = RT_F32;
        snprintf(jm->device, sizeof jm->device, "cpu (%d threads)", jm->threads);
        jm->be = rt_cpu_backend_create(jm->threads);
        return jm->be ? 0 : base_errf(err, "cannot create the CPU backend");
    }
#ifdef DINFER_HAVE_CUDA
    const int dev = t->local_rank % n_gpu;
    jm->on_gpu = true;
    jm->dtype = job_flags_dtype(o, jm->cfg.dtype);
    char desc[128] = "?";
    rt_cuda_describe(dev, desc, sizeof desc);
    snprintf(jm->device, sizeof jm->device, "%s, %s", desc, rt_dtype_name(jm->dtype));
    jm->be = rt_cuda_backend_create(dev, jm->dtype, t->rank, err);
    if (!jm->be)
        return -1;
    /* the host's share of a GPU step (the vocab-parallel sampler, the host sampler) runs on this
     * rank's share of the cores: ranks sharing a host must not each start a thread per core */
    omp_set_num_threads(jm->threads);
    size_t free_b = 0;
    rt_cuda_mem_info(&free_b, &jm->gpu_total);
    jm->gpu_budget = (size_t)(o->gpu_memory_fraction * (double)jm->gpu_total);
    const rt_shard *sh = &jm->plan.ranks[t->rank].shard;
    jm->weight_bytes = rt_shard_weight_bytes(&jm->cfg, sh, jm->dtype);
    jm->workspace_bytes = rt_forward_workspace_bytes(&jm->cfg, sh, &jm->geo.lim, jm->dtype);
    /* the CUDA context, cuBLAS's workspace and the backend's scratch (64 MiB), NCCL's buffers, the
     * CUDA IPC all-reduce's two 1 MiB slots */
    const size_t reserve = (size_t)512 << 20;
    if (jm->weight_bytes + jm->workspace_bytes + reserve > jm->gpu_budget)
        return base_errf(err, "%s: the shard needs %.2f GiB of weights and %.2f GiB of workspace (+%.1f reserved), more "
                            "than --gpu-memory-fraction %.2f of the GPU's %.2f GiB: use more ranks, a smaller "
                            "--max-batch-tokens or --dtype bf16",
                       desc, gib(jm->weight_bytes), gib(jm->workspace_bytes), gib(reserve), o->gpu_memory_fraction,
                       gib(jm->gpu_total));
    jm->gpu_budget -= reserve;
    return 0;
#else
    return base_errf(err, "this build has no CUDA backend");
#endif
}

size_t job_kv_budget(const job_model *jm)
{
    if (!jm->on_gpu)
        return SIZE_MAX;
    size_t used = jm->weight_bytes + jm->workspace_bytes;
    return jm->gpu_budget > used ? jm->gpu_budget - used : 0;
}

/* FNV-1a, to fingerprint a model folder cheaply. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

/* What every rank must agree on before loading: this build, the model folder as it is on this
 * host (config.json and the size of every weight file), the split and the device choice. */
static void fingerprint(const job_flags *o, char *out, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    char path[4096], *text;
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", o->model);
    if (base_read_file(path, RT_CONFIG_MAX_BYTES, &text, &len, NULL) == 0) {
        h = fnv(h, text, len);
        free(text);
    }
    DIR *d = opendir(o->model);
    struct dirent *de;
    uint64_t files = 0;
    while (d && (de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (l > 12 && strcmp(de->d_name + l - 12, ".safetensors") == 0) {
            struct stat st;
            snprintf(path, sizeof path, "%s/%s", o->model, de->d_name);
            if (stat(path, &st) == 0) { /* the order of readdir does not matter: sum the hashes */
                uint64_t f = fnv(0xcbf29ce484222325ULL, de->d_name, l);
                files += fnv(f, &st.st_size, sizeof st.st_size);
            }
        }
    }
    if (d)
        closedir(d);
    h = fnv(h, &files, sizeof files);
    snprintf(out, n, "build %s (sample %zu B), model %016llx, tp=%d pp=%d, device %s, dtype %s", DINFER_BUILD_ID,
             sizeof(rt_sample_out), (unsigned long long)h, o->tp, o->pp, o->device ? o->device : "auto",
             o->dtype ? o->dtype : "model");
}

/* Every rank compares its fingerprint with rank 0's; a difference stops the job naming the host. */
static int agree_on_fingerprint(comm *c, const char *prog, const job_flags *o)
{
    char mine[320], *all = NULL;
    fingerprint(o, mine, sizeof mine);
    base_err cerr;
    if (gather_lines(c, mine, &all, &cerr) != 0) {
        fprintf(stderr, "%s: %s\n", prog, cerr.msg);
        return -1;
    }
    int bad = 0;
    if (all) {
        char host0[64] = "?";
        gethostname(host0, sizeof host0 - 1);
        for (int i = 1; i < comm_topo(c)->world_size; i++)
            if (strcmp(all + (size_t)i * LINE, all) != 0) {
                if (!bad)
                    fprintf(stderr, "%s: rank %d disagrees with rank 0 (host %s) about the job: it has \"%s\", rank 0 "
                                    "has \"%s\": the same build and model folder must be on every host\n",
                            prog, i, host0, all + (size_t)i * LINE, all);
                bad = 1;
            }
    }
    free(all);
    int any = 0;
    if (comm_any(comm_topo(c)->world, bad, &any, &cerr) != 0)
        return -1;
    return any ? -1 : 0;
}

int job_roster(comm *c, char (*hosts)[64], int *pids)
{
    char line[96], *all = NULL, host[64] = "?";
    gethostname(host, sizeof host - 1);
    snprintf(line, sizeof line, "%d %s", (int)getpid(), host);
    if (gather_lines(c, line, &all, NULL) != 0)
        return -1;
    for (int i = 0; all && i < comm_topo(c)->world_size; i++) {
        char *l = all + (size_t)i * LINE, *sp = strchr(l, ' ');
        pids[i] = atoi(l);
        snprintf(hosts[i], 64, "%s", sp ? sp + 1 : "?");
    }
    free(all);
    return 0;
}

#ifdef DINFER_HAVE_CUDA
/* The tp all-reduce of messages up to 1 MB over CUDA IPC when the group is on one host (NCCL or
 * host memory beyond that). Its kernels wait for each other's: ranks that share a GPU time-slice
 * it, and each wait costs a slice (the 1B shape at tp=2 on one H200 decoded 3.5x slower than
 * through host memory), so there it is taken only when asked for. DINFER_IPC: unset, automatic
 * (taken when each rank has its own GPU and it can be, else quietly not); 0, never; 1, required
 * (the job stops, saying why, when it cannot be taken). */
static int ipc_enable(comm *c, job_model *jm, const job_flags *o, int shared_gpu, base_err *err)
{
    const char *env = getenv("DINFER_IPC");
    if (env && strcmp(env, "0") != 0 && strcmp(env, "1") != 0)
        return base_errf(err, "DINFER_IPC is '%.32s': 0 (never), 1 (required) or unset (when it can be)", env);
    if ((env && strcmp(env, "0") == 0) || (!env && shared_gpu) || comm_topo(c)->tp == 1)
        return 0;
    base_err why = {{0}};
    const int rc = comm_ipc_enable(c, rt_cuda_backend_stream(jm->be), (size_t)1 << 20, o->comm_timeout, &why);
    if (rc < 0 || (rc == 1 && env))
        return base_errf(err, "%s%s", rc == 1 ? "DINFER_IPC=1 but the CUDA IPC all-reduce was not taken: " : "",
                         why.msg);
    return 0;
}
#endif

int job_load(comm *c, const char *prog, const job_flags *o, int max_seqs, job_model *jm)
{
    memset(jm, 0, sizeof *jm);
    const comm_topology *t = comm_topo(c);
    base_err err = {{0}};
    if (agree_on_fingerprint(c, prog, o))
        return -1;
    int rc = rt_config_load(&jm->cfg, o->model, &err);
    if (rc == 0)
        rc = job_flags_to_config(o, &jm->cfg, &err);
    if (rc == 0) {
        rt_sched_options so = {.max_batch_tokens = o->max_batch_tokens, .max_seqs = max_seqs};
        jm->geo = rt_sched_geometry(&jm->cfg, &so, 0, o->block_size);
    }
    if (rc == 0)
        rc = plan_make(&jm->plan, &jm->cfg, o->tp, o->pp, o->layers_per_stage, RT_F32, &err);
    if (job_agree(c, prog, rc, &err))
        return -1;
    rc = make_backend(c, o, jm, &err);
    if (job_agree(c, prog, rc, &err)) {
        job_model_free(jm);
        return -1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = rt_model_load(&jm->model, &jm->cfg, &jm->plan.ranks[t->rank].shard, o->model, jm->be, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
#ifdef DINFER_HAVE_CUDA
    /* NCCL between ranks that each have their own GPU; ranks sharing one stage through MPI */
    int shared = 0;
    if (rc == 0 && jm->on_gpu && t->world_size > 1) {
        int n_gpu = rt_cuda_device_count();
        if (comm_any(t->world, t->local_size > n_gpu, &shared, &err) != 0)
            rc = -1;
        else if (!shared && comm_nccl_enable(c, rt_cuda_backend_stream(jm->be), o->comm_timeout, &err) != 0)
            rc = -1;
        else if (ipc_enable(c, jm, o, shared, &err) != 0)
            rc = -1;
    }
#endif
    if (job_agree(c, prog, rc, &err)) {
        job_model_free(jm);
        return -1;
    }
    const double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    char line[512];
    if (jm->on_gpu)
        snprintf(line, sizeof line, "rank %d: %s: weights %.2f GiB, workspace %.2f GiB, budget %.2f GiB%s%s",
                 t->rank, jm->device, gib(jm->weight_bytes), gib(jm->workspace_bytes), gib(jm->gpu_budget),
                 t->world_size > 1 ? (comm_has_device_path(c) ? ", NCCL" : ", MPI through host memory") : "",
                 comm_has_ipc(c, 1) ? ", tp all-reduce up to 1 MB over CUDA IPC" : "");
    else
        snprintf(line, sizeof line, "rank %d: %s", t->rank, jm->device);
    if (jm->on_gpu || o->verbose)
        job_print_by_rank(c, stderr, line);
    if (t->rank == 0 && jm->cfg.quant.method != RT_QUANT_NONE) {
        char what[96];
        fprintf(stderr, "%s: weights: %s, %s\n", prog, rt_quant_describe(&jm->cfg.quant, what, sizeof what),
                jm->be->ops->quant_matmul ? "kept as codes and scales (the matmul dequantizes them a chunk at a time)"
                                          : "dequantized as they load (the quantized model's outputs at the compute "
                                            "type's speed and memory)");
    }
    if (t->rank == 0 && jm->cfg.head_quant.method != RT_QUANT_NONE) {
        char what[96];
        const char *d = rt_quant_describe(&jm->cfg.head_quant, what, sizeof what), *load = "--quantize ";
        if (strncmp(d, load, strlen(load)) == 0) /* the method's name: the flag says it here */
            d += strlen(load);
        fprintf(stderr, "%s: LM head: %s (--quantize-lm-head), kept as codes and scales%s\n", prog, d,
                jm->cfg.tie_embeddings ? ", a copy of the tied embedding" : "");
    }
    if (t->rank == 0 && jm->cfg.quant.kv_scales != RT_KV_SCALES_NONE) /* a checkpoint with FP8 KV-cache scales */
        fprintf(stderr, "%s: KV cache: %s\n", prog,
                !jm->cfg.kv_fp8 ? "in the compute type: the checkpoint's FP8 KV-cache scales (kv_cache_scheme) go "
                                  "unused (--kv-dtype fp8 takes them)"
                : jm->cfg.kv_token_scales ? "FP8 with a scale a token and head (--kv-scales token: the checkpoint's "
                                            "static scales go unused)"
                                          : rt_kv_describe(&jm->cfg));
    if (jm->model.act_order_cut && t->tp_rank == 0) /* said once a stage */
        fprintf(stderr, "%s: rank %d: %d act-order (desc_act) products dequantized to floats: the --tp %d split "
                        "gives each rank part of some of their groups' input columns (they stay codes where a "
                        "rank holds whole groups, as with --tp 1)\n",
                prog, t->rank, jm->model.act_order_cut, o->tp);
    if (jm->model.act_order_mixed && t->tp_rank == 0)
        fprintf(stderr, "%s: rank %d: %d fused act-order (desc_act) products dequantized to floats: the g_idx of "
                        "their parts (q/k/v, gate/up: one input) put its columns in different orders\n",
                prog, t->rank, jm->model.act_order_mixed);
    warn_if_bound(c, jm);
    if (o->verbose) {
        const rt_shard *s = &jm->model.shard;
        snprintf(line, sizeof line,
                 "rank %d (stage %d, tp %d): layers %d-%d, heads %d-%d, KV heads %d-%d, FFN %d-%d, vocab %d-%d: "
                 "loaded %zu bytes in %.2f s, holding %zu bytes of weights",
                 t->rank, t->stage, t->tp_rank, s->layer_begin, s->layer_end - 1, s->head_begin,
                 s->head_begin + s->n_heads - 1, s->kv_head_begin, s->kv_head_begin + s->n_kv_heads - 1,
                 s->ffn_begin, s->ffn_end - 1, s->vocab_begin, s->vocab_end - 1, jm->model.bytes_loaded, secs,
                 jm->model.bytes_held);
        if (t->rank == 0)
            fprintf(stderr, "%s: %s, tp=%d x pp=%d\n", o->model, rt_arch_name(jm->cfg.arch), o->tp, o->pp);
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
