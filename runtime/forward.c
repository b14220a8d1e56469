#include "runtime/forward.h"
#include "runtime/vocab_sample.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define MAX_GRAPHS 64

typedef struct step_graph {
    int rows, width; /* the padded step it replays: rows tokens, block tables of width entries */
    void *exec;
    comm_counters traffic; /* what its collectives (CUDA IPC, under tp) counted when captured */
} step_graph;

struct rt_forward {
    rt_model *m;
    comm *comm;           /* NULL on a single rank */
    rt_kv_cache *kv;
    rt_forward_limits lim;
    rt_attn_shape shape;
    /* device activations */
    void *x;      /* (max_tokens, dim) residual stream */
    void *xb;     /* (max_tokens, dim) normed input / projection output */
    void *q;      /* (max_tokens, n_heads * head_dim) rotated queries */
    void *qkv;    /* (max_tokens, (n_heads + 2 * n_kv_heads) * head_dim) the fused QKV product */
    void *att;    /* (max_tokens, n_heads * head_dim) */
    void *gate_up; /* (max_tokens, 2 * ffn_local) the fused gate/up product */
    void *act;    /* (max_tokens, ffn_local) silu(gate) * up */
    void *xperm;  /* (max_tokens, the widest product input) an act-order product's inputs in its order,
                   * or NULL: the checkpoint has none */
    void *rows;   /* (2, max_logits, dim): residual and delta of the rows that need logits */
    void *logits; /* (max_logits, vocab_local) */
    float *logits32; /* (max_logits, vocab_local) fp32 copy when activations are not fp32 */
    float *inv_freq;        /* (head_dim / 2) */
    rt_sample_out *d_out;   /* (max_logits) samples, when the backend samples on the device */
    bool graphs;            /* decode steps are captured (graph_shape) */
    float *ss;              /* ((2 * n_layers + 1) * FUSE_MAX_ROWS rows, strided) the fused chain's sums of
                             * squares; NULL when the layers never fuse (no matmul_fused, or tp > 1) */
    int n_graphs;
    step_graph graph[MAX_GRAPHS];
    bool device_sampling;   /* the backend samples, and this rank holds whole rows of logits */
    bool samples;           /* this rank samples: the last stage's tp rank 0 */
    float *h_logits;        /* (max_logits, vocab) host: the logits the host sampler reads */
    const float *last_logits; /* the last step's whole rows of fp32 logits on the host, or NULL */
    void *scratch;          /* the host sampler's scratch, 8 * vocab bytes per OpenMP thread */
    int32_t *d_ints;        /* tokens, pos, slot, seq, logit_rows, block_tables, chain, sample rows */
    int32_t *h_ints;        /* (2, n_ints) host staging of the same, a step's half each in turn (the backend's
                             * host memory: uploaded without a wait, while the step before may still run) */
    size_t n_ints;
    int h_half;             /* the half of h_ints the next step stages in */
    const rt_sample_out *prev_out; /* the last step's samples (host memory backends), for a chained token */
    int prev_logits;        /* its rows; 0: the last step sampled nothing here */
    rt_sample_out *h_out;   /* (2, max_logits) host: a step's samples read back without a wait, by slot */
    int out_slot;           /* the slot the next such step takes */
    void *stage;            /* (max_tokens, dim) host, activation type: device collectives staged through MPI */
    float *stage32;         /* (max_tokens, dim) host fp32: the all-reduce's buffer when staged */
    float *part;            /* (max_logits, vocab_local) host: this rank's logits off the device (tp > 1) */
    rt_vocab_sampler *vs;   /* the last stage's, tp > 1 */
};

/* Bytes of each device buffer of the workspace. */
typedef struct ws_sizes {
    size_t x, q, qkv, ffn, rows, logits, logits32, inv_freq, ints, samples, ss, perm;
} ws_sizes;

#define FUSE_MAX_ROWS 256 /* rows a step the layers may run as fused products (where the backend fuses
                           * every product at that many: the weight-streaming kernels up to 16, FP8 on
                           * the tensor cores above) */
#define ROW_INTS ((int)(sizeof(rt_sample_row) / sizeof(int32_t))) /* a sample row among the step's ints */

static void ws_layout(const rt_config *c, const rt_shard *s, const rt_forward_limits *lim, rt_dtype dt, ws_sizes *z)
{
    const size_t es = rt_dtype_size(dt), T = (size_t)lim->max_tokens, L = (size_t)lim->max_logits;
    const size_t vocab = (size_t)(s->vocab_end - s->vocab_begin);
    z->x = T * (size_t)c->dim * es;
    z->q = T * (size_t)s->n_heads * (size_t)c->head_dim * es;
    z->qkv = T * (size_t)(s->n_heads + 2 * s->n_kv_heads) * (size_t)c->head_dim * es;
    z->ffn = T * (size_t)(s->ffn_end - s->ffn_begin) * es;
    z->rows = 2 * L * (size_t)c->dim * es;
    z->logits = L * vocab * es;
    z->logits32 = dt == RT_F32 ? 0 : L * vocab * sizeof(float);
    z->inv_freq = (size_t)c->head_dim / 2 * sizeof(float);
    z->ints = (4 * T + L * (1 + ROW_INTS) + (size_t)lim->max_seqs * (size_t)lim->max_blocks + T +
               T + 2 * (T / RT_ATTN_RUN_MIN)) * sizeof(int32_t); /* the chain; attention tiles and the rest */
    z->samples = L * sizeof(rt_sample_out);
    z->ss = (size_t)(2 * c->n_layers + 1) * FUSE_MAX_ROWS * RT_FUSION_SS_STRIDE * sizeof(float);
    const size_t widest = z->x > z->q ? z->x : z->q; /* the largest product input: dim, heads or FFN */
    z->perm = c->quant.act_order ? (widest > z->ffn ? widest : z->ffn) : 0;
}

size_t rt_forward_workspace_bytes(const rt_config *c, const rt_shard *s, const rt_forward_limits *lim, rt_dtype dt)
{
    ws_sizes z;
    ws_layout(c, s, lim, dt, &z);
    return 2 * z.x + 2 * z.q + z.qkv + 3 * z.ffn + z.rows + z.logits + z.logits32 + z.inv_freq + z.ints +
           z.samples + z.ss + z.perm;
}

static void *alloc_or_fail(rt_backend *be, size_t bytes, int *failed)
{
    void *p = be->ops->alloc(be, bytes);
    if (!p)
        *failed = 1;
    return p;
}

int rt_forward_create(rt_forward **out, rt_model *m, rt_kv_cache *kv, const rt_forward_limits *lim, comm *cm,
                      base_err *err)
{
    rt_forward *fw = calloc(1, sizeof *fw);
    if (!fw)
        return base_errf(err, "out of host memory");
    const rt_config *c = &m->cfg;
    const rt_shard *s = &m->shard;
    /* the vocab-parallel sampler (collective over the last stage's tp group: first, before anything
     * here can fail) */
    if (cm && comm_topo(cm)->tp > 1 && s->last_stage &&
        rt_vocab_sampler_create(&fw->vs, comm_topo(cm)->tp_group, c->vocab_size, s->vocab_begin, s->vocab_end,
                                lim->max_logits, err)) {
        free(fw);
        return -1;
    }
    rt_backend *be = m->be;
    fw->m = m;
    fw->comm = cm;
    fw->kv = kv;
    fw->lim = *lim;
    fw->shape = (rt_attn_shape){
        .n_heads = s->n_heads, .n_kv_heads = s->n_kv_heads, .head_dim = c->head_dim,
        .sliding_window = c->sliding_window, .scale = 1.0f / sqrtf((float)c->head_dim),
    };
    ws_sizes z;
    ws_layout(c, s, lim, be->ops->act_dtype, &z);
    const size_t vocab = (size_t)(s->vocab_end - s->vocab_begin);
    int failed = 0;
    fw->x = alloc_or_fail(be, z.x, &failed);
    fw->xb = alloc_or_fail(be, z.x, &failed);
    fw->q = alloc_or_fail(be, z.q, &failed);
    fw->qkv = alloc_or_fail(be, z.qkv, &failed);
    fw->att = alloc_or_fail(be, z.q, &failed);
    fw->gate_up = alloc_or_fail(be, 2 * z.ffn, &failed);
    fw->act = alloc_or_fail(be, z.ffn, &failed);
    if (z.perm)
        fw->xperm = alloc_or_fail(be, z.perm, &failed);
    fw->rows = alloc_or_fail(be, z.rows, &failed);
    fw->logits = alloc_or_fail(be, z.logits, &failed);
    if (z.logits32)
        fw->logits32 = alloc_or_fail(be, z.logits32, &failed);
    fw->inv_freq = alloc_or_fail(be, z.inv_freq, &failed);
    fw->n_ints = z.ints / sizeof(int32_t);
    fw->d_ints = alloc_or_fail(be, z.ints, &failed);
    fw->h_ints = be->ops->host_alloc(be, 2 * fw->n_ints * sizeof(int32_t));
    const int tp = cm ? comm_topo(cm)->tp : 1, pp = cm ? comm_topo(cm)->pp : 1;
    fw->samples = s->last_stage && (tp == 1 || comm_topo(cm)->tp_rank == 0);
    fw->device_sampling = be->ops->sample && tp == 1 && !lim->host_logits;
    /* DINFER_CUDA_GRAPHS=0 runs every step op by op (to measure what the graphs save) */
    const char *graphs_env = getenv("DINFER_CUDA_GRAPHS");
    if (graphs_env && strcmp(graphs_env, "0") != 0 && strcmp(graphs_env, "1") != 0) {
        rt_forward_destroy(fw);
        return base_errf(err, "DINFER_CUDA_GRAPHS is '%.32s': 0 (every step op by op) or 1 (decode steps as CUDA "
                              "graphs, the default)", graphs_env);
    }
    if (be->ops->matmul_fused && tp == 1)
        fw->ss = alloc_or_fail(be, z.ss, &failed);
    /* under tensor parallelism the host samples (by parts), after the graph: graph_shape takes a
     * step only when its all-reduces are kernels (CUDA IPC) */
    fw->graphs = be->ops->graph_begin && pp == 1 && (tp > 1 || fw->device_sampling) &&
                 !(graphs_env && strcmp(graphs_env, "0") == 0);
    if (fw->samples && fw->device_sampling) {
        fw->d_out = alloc_or_fail(be, z.samples, &failed);
        if (be->ops->download_mark && !(fw->h_out = be->ops->host_alloc(be, 2 * z.samples)))
            failed = 1;
    } else if (fw->samples && tp == 1) {
        const size_t V = (size_t)c->vocab_size, L = (size_t)(lim->max_logits ? lim->max_logits : 1);
        /* a single host-memory rank samples its logits where they are */
        const bool copies_logits = !be->ops->host_memory;
        if (copies_logits)
            fw->h_logits = malloc(L * V * sizeof(float));
        fw->scratch = malloc(V * 8 * (size_t)omp_get_max_threads()); /* one sampler scratch per thread */
        failed |= (copies_logits && !fw->h_logits) || !fw->scratch;
    }
    if (!be->ops->host_memory && (tp > 1 || pp > 1)) {
        /* without a device path (NCCL), activations cross ranks through host memory and MPI */
        fw->stage = malloc(z.x);
        fw->stage32 = malloc((size_t)lim->max_tokens * (size_t)c->dim * sizeof(float));
        failed |= !fw->stage || !fw->stage32;
    }
    if (tp > 1 && s->last_stage && !be->ops->host_memory) {
        fw->part = malloc((size_t)(lim->max_logits ? lim->max_logits : 1) * vocab * sizeof(float));
        failed |= !fw->part;
    }
    if (failed || !fw->h_ints) {
        rt_forward_destroy(fw);
        return base_errf(err, "cannot allocate the activation workspace for %d tokens per step on the %s backend",
                       lim->max_tokens, be->ops->name);
    }
    float inv[RT_MAX_HEAD_DIM / 2]; /* config.c refuses a larger head_dim */
    rt_rope_inv_freq(&c->rope, c->head_dim, inv);
    be->ops->upload(be, fw->inv_freq, inv, (size_t)c->head_dim / 2 * sizeof(float));
    *out = fw;
    return 0;
}

const float *rt_forward_host_logits(const rt_forward *fw)
{
    return fw->last_logits;
}

void rt_forward_destroy(rt_forward *fw)
{
    if (!fw)
        return;
    rt_backend *be = fw->m->be;
    for (int i = 0; i < fw->n_graphs; i++)
        be->ops->graph_free(be, fw->graph[i].exec);
    void *bufs[] = {fw->x, fw->xb, fw->q, fw->qkv, fw->att, fw->gate_up, fw->act, fw->xperm,
                    fw->rows, fw->logits, fw->logits32, fw->inv_freq, fw->d_ints, fw->d_out, fw->ss};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i])
            be->ops->free(be, bufs[i]);
    if (fw->h_ints)
        be->ops->host_free(be, fw->h_ints);
    if (fw->h_out)
        be->ops->host_free(be, fw->h_out);
    free(fw->h_logits);
    free(fw->scratch);
    free(fw->stage);
    free(fw->stage32);
    free(fw->part);
    rt_vocab_sampler_destroy(fw->vs);
    free(fw);
}

/* Where a step's arrays sit on the device, as stage_batch laid them out. */
typedef struct staged {
    int rows;          /* token rows the ops run over: the batch's, or its graph's bucket */
    int n_logits;      /* logit rows sampled on the device (likewise) */
    rt_attn_batch ab;
    int32_t *tokens, *logit_rows;
    int32_t *chain;             /* (rows) rt_batch.chain, or NULL: none */
    rt_sample_row *sample_rows; /* NULL unless this rank samples on the device */
} staged;

/* Checks the batch against the limits and the model, computes each token's KV slot, and uploads
 * the index arrays. With rows > n_tokens (a captured decode step, one token a sequence) the batch
 * is padded to `rows` tokens, sequences and logit rows and its block tables to a stride of
 * `width`: padding row i is token 0 at position 0 of sequence i, whose only block is the KV
 * cache's pad block, sampled greedily and never read back. */
static int stage_batch(rt_forward *fw, const rt_batch *b, rt_step_sampling *rows, int pad_rows, int width,
                       staged *st, base_err *err)
{
    const rt_forward_limits *L = &fw->lim;
    const rt_config *c = &fw->m->cfg;
    const int bs = fw->kv->block_size;
    if (b->n_tokens < 1 || b->n_tokens > L->max_tokens)
        return base_errf(err, "batch of %d tokens outside [1, %d]", b->n_tokens, L->max_tokens);
    if (b->n_seqs < 1 || b->n_seqs > L->max_seqs || b->max_blocks < 1 || b->max_blocks > L->max_blocks)
        return base_errf(err, "batch of %d sequences x %d blocks exceeds the %d x %d the step was sized for",
                       b->n_seqs, b->max_blocks, L->max_seqs, L->max_blocks);
    if (b->n_logits < 0 || b->n_logits > L->max_logits)
        return base_errf(err, "%d logit rows requested, at most %d", b->n_logits, L->max_logits);
    const int T = b->n_tokens, R = pad_rows > T ? pad_rows : T, W = width > b->max_blocks ? width : b->max_blocks;
    const int NS = R > T ? R : b->n_seqs, NL = R > T ? R : b->n_logits;
    if (b->chain && !rt_forward_chains(fw))
        return base_errf(err, "a batch takes tokens the step before sampled, which this rank cannot");
    int32_t *h = fw->h_ints + (size_t)fw->h_half * fw->n_ints;
    int32_t *tok = h, *pos = tok + R, *slot = pos + R, *seq = slot + R, *lrow = seq + R;
    int32_t *tables = lrow + NL;
    for (int q = 0; q < b->n_seqs; q++)
        for (int j = 0; j < W; j++) {
            int32_t id = j < b->max_blocks ? b->block_tables[(size_t)q * (size_t)b->max_blocks + (size_t)j] : -1;
            if (id < -1 || id >= fw->kv->n_blocks)
                return base_errf(err, "block id %d outside the pool of %d blocks", id, fw->kv->n_blocks);
            tables[(size_t)q * (size_t)W + (size_t)j] = id;
        }
    for (int t = 0; t < T; t++) {
        if (b->tokens[t] < 0 || b->tokens[t] >= c->vocab_size)
            return base_errf(err, "token id %d outside the vocabulary [0, %d)", b->tokens[t], c->vocab_size);
        if (b->seq[t] < 0 || b->seq[t] >= b->n_seqs)
            return base_errf(err, "token %d names sequence %d of %d", t, b->seq[t], b->n_seqs);
        if (b->pos[t] < 0 || b->pos[t] >= b->max_blocks * bs || b->pos[t] >= c->max_pos)
            return base_errf(err, "position %d outside the sequence's %d cached positions (context %d)",
                           b->pos[t], b->max_blocks * bs, c->max_pos);
        int32_t blk = b->block_tables[(size_t)b->seq[t] * (size_t)b->max_blocks + (size_t)(b->pos[t] / bs)];
        if (blk < 0)
            return base_errf(err, "position %d of sequence %d has no KV block", b->pos[t], b->seq[t]);
        if (b->chain && (b->chain[t] < -1 || b->chain[t] >= fw->prev_logits))
            return base_errf(err, "token %d takes the sample of row %d of the step before, which sampled %d", t,
                             b->chain[t], fw->prev_logits);
        tok[t] = b->tokens[t];
        pos[t] = b->pos[t];
        seq[t] = b->seq[t];
        slot[t] = blk * bs + b->pos[t] % bs;
    }
    for (int i = 0; i < b->n_logits; i++) {
        if (b->logit_rows[i] < 0 || b->logit_rows[i] >= T)
            return base_errf(err, "logit row %d outside the batch of %d tokens", b->logit_rows[i], T);
        lrow[i] = b->logit_rows[i];
    }
    for (int i = T; i < R; i++) { /* padding (R > T only when every token is its sequence's one) */
        tok[i] = 0, pos[i] = 0, seq[i] = i, slot[i] = fw->kv->pad_block * bs, lrow[i] = i;
        tables[(size_t)i * (size_t)W] = fw->kv->pad_block;
        for (int j = 1; j < W; j++)
            tables[(size_t)i * (size_t)W + (size_t)j] = -1;
    }
    size_t n = 4 * (size_t)R + (size_t)NL + (size_t)NS * (size_t)W;
    /* chained tokens: always in a graph's step, which may replay with them */
    const size_t at_chain = n;
    if (b->chain || pad_rows) {
        for (int t = 0; t < R; t++)
            h[n + (size_t)t] = b->chain && t < T ? b->chain[t] : -1;
        n += (size_t)R;
    }
    /* prompt runs for attention on matrix units (a padded step is all decodes: none) */
    int n_tiles = 0, n_rest = 0;
    int32_t *tiles = h + n, *rest = tiles + 2 * (T / RT_ATTN_RUN_MIN);
    if (R == T)
        n_tiles = rt_attn_tiles(pos, seq, T, tiles, rest, &n_rest);
    const size_t at_tiles = n, at_rest = n + 2 * (size_t)(T / RT_ATTN_RUN_MIN);
    if (n_tiles > 0)
        n = at_rest + (size_t)n_rest;
    st->sample_rows = NULL;
    if (fw->samples && fw->device_sampling && NL > 0) {
        /* each row's uniform draw is taken here, as rt_sample would take it on the host */
        rt_sample_row *r = (rt_sample_row *)(h + n);
        for (int i = 0; i < NL; i++)
            r[i] = i < b->n_logits ? rt_sample_row_draw(&rows[i].params, &rows[i].rng)
                                   : (rt_sample_row){.temperature = 0.0f, .top_p = 1.0f};
        st->sample_rows = (rt_sample_row *)(fw->d_ints + n);
        n += (size_t)NL * ROW_INTS;
    }
    rt_backend *be = fw->m->be;
    /* a step's half of h_ints is free again when the step after next stages: the step before that
     * one was read back (and its upload went ahead of it) */
    be->ops->upload_async(be, fw->d_ints, h, n * sizeof(int32_t));
    fw->h_half ^= 1;
    int32_t *d = fw->d_ints;
    st->rows = R;
    st->n_logits = NL;
    st->tokens = d;
    st->chain = b->chain || pad_rows ? d + at_chain : NULL;
    st->ab = (rt_attn_batch){
        .n_tokens = R, .pos = d + R, .slot = d + 2 * R, .seq = d + 3 * R,
        .block_tables = d + 4 * R + NL, .max_blocks = W, .block_size = bs,
        .n_tiles = n_tiles, .tiles = n_tiles ? d + at_tiles : NULL,
        .n_rest = n_rest, .rest = n_tiles ? d + at_rest : NULL,
        .decode = rt_attn_decode(seq, R, NS), /* padding row i is sequence i's one token */
    };
    st->logit_rows = d + 4 * R;
    return 0;
}

/* The collectives of a step, on activations in the backend's memory. Host memory goes straight
 * to MPI; device memory goes through the comm's device path (NCCL) when it has one, else is staged
 * through host memory. Each is a no-op on a single rank; a failure names the call. */
static comm_dtype comm_type(rt_dtype t)
{
    return t == RT_BF16 ? COMM_BF16 : t == RT_F16 ? COMM_F16 : COMM_F32;
}

static int tp_allreduce(rt_forward *fw, void *buf, size_t n, base_err *err)
{
    if (!fw->comm || comm_topo(fw->comm)->tp == 1)
        return 0;
    comm_group *g = comm_topo(fw->comm)->tp_group;
    rt_backend *be = fw->m->be;
    const rt_dtype dt = be->ops->act_dtype;
    int rc;
    if (be->ops->host_memory) {
        rc = comm_allreduce_sum(g, buf, n, COMM_F32, err);
    } else if (comm_has_ipc(fw->comm, n * rt_dtype_size(dt))) {
        rc = comm_ipc_allreduce_sum(g, buf, n, comm_type(dt), err);
    } else if (comm_has_device_path(fw->comm)) {
        rc = comm_dev_allreduce_sum(g, buf, n, comm_type(dt), err);
    } else {
        be->ops->download(be, fw->stage, buf, n * rt_dtype_size(dt));
        rt_convert_to_f32(fw->stage32, fw->stage, dt, n);
        rc = comm_allreduce_sum(g, fw->stage32, n, COMM_F32, err);
        rt_convert_from_f32(fw->stage, fw->stage32, dt, n);
        be->ops->upload(be, buf, fw->stage, n * rt_dtype_size(dt));
    }
    return rc;
}

/* The all-reduce of the product in xb, then x += xb and xb = rmsnorm(x) * w: over CUDA IPC one
 * kernel (the residual add and the norm after the sum), otherwise the reduction and the backend's
 * add_rmsnorm. */
static int tp_allreduce_add_rmsnorm(rt_forward *fw, const rt_tensor *w, int T, float eps, base_err *err)
{
    rt_backend *be = fw->m->be;
    const rt_dtype dt = be->ops->act_dtype;
    const size_t xn = (size_t)T * (size_t)fw->m->cfg.dim;
    if (fw->comm && comm_topo(fw->comm)->tp > 1 && !be->ops->host_memory && w->dtype == dt &&
        comm_has_ipc(fw->comm, xn * rt_dtype_size(dt)))
        return comm_ipc_allreduce_add_rmsnorm(comm_topo(fw->comm)->tp_group, fw->xb, fw->x, fw->xb, w->data, T,
                                              fw->m->cfg.dim, eps, comm_type(dt), err);
    if (tp_allreduce(fw, fw->xb, xn, err))
        return -1;
    be->ops->add_rmsnorm(be, fw->x, fw->xb, fw->xb, w, T, eps);
    return 0;
}

static int pp_transfer(rt_forward *fw, void *buf, size_t n, bool send, base_err *err)
{
    const comm_topology *t = comm_topo(fw->comm);
    rt_backend *be = fw->m->be;
    const rt_dtype dt = be->ops->act_dtype;
    const int peer = send ? t->stage + 1 : t->stage - 1;
    const size_t bytes = n * rt_dtype_size(dt);
    int rc;
    /* sends never wait for the next stage: it may still be busy with the step before (several are in
     * flight with pipeline parallelism) */
    if (be->ops->host_memory) {
        rc = send ? comm_isend(t->pp_group, buf, n, COMM_F32, peer, err) : comm_recv(t->pp_group, buf, n, COMM_F32, peer, err);
    } else if (comm_has_device_path(fw->comm)) {
        rc = send ? comm_dev_send(t->pp_group, buf, n, comm_type(dt), peer, err)
                  : comm_dev_recv(t->pp_group, buf, n, comm_type(dt), peer, err);
    } else if (send) {
        be->ops->download(be, fw->stage, buf, bytes);
        rc = comm_isend(t->pp_group, fw->stage, bytes, COMM_U8, peer, err);
    } else {
        rc = comm_recv(t->pp_group, fw->stage, bytes, COMM_U8, peer, err);
        if (rc == 0)
            be->ops->upload(be, buf, fw->stage, bytes);
    }
    return rc;
}

/* The logit rows of the step to samples in out: those the device sampled (run_ops launched it), else
 * sampled on the host (one OpenMP thread a row: each row has its own random stream). With slot (not
 * NULL) and a device sampler that can, the device's samples start their way back into h_out's *slot
 * without a wait instead (rt_forward_collect waits). */
static int sample(rt_forward *fw, const float *d_logits32, int nl, rt_step_sampling *rows, rt_sample_out *out,
                  int *slot, base_err *err)
{
    rt_backend *be = fw->m->be;
    const int V = fw->m->cfg.vocab_size;
    fw->last_logits = NULL;
    fw->prev_out = out, fw->prev_logits = nl;
    if (fw->device_sampling) {
        if (slot && fw->h_out) {
            *slot = fw->out_slot;
            fw->out_slot ^= 1;
            be->ops->download_mark(be, fw->h_out + (size_t)*slot * (size_t)fw->lim.max_logits, fw->d_out,
                                   (size_t)nl * sizeof *out, *slot);
            return 0;
        }
        be->ops->download(be, out, fw->d_out, (size_t)nl * sizeof *out);
        return 0;
    }
    const float *logits = fw->h_logits;
    if (fw->vs) { /* vocab-parallel: every tp rank holds a slice of each row */
        const float *slice = d_logits32;
        if (!be->ops->host_memory) {
            const rt_shard *s = &fw->m->shard;
            be->ops->download(be, fw->part, d_logits32, (size_t)nl * (size_t)(s->vocab_end - s->vocab_begin) * 4);
            slice = fw->part;
        }
        return rt_vocab_sample(fw->vs, slice, nl, rows, out, err);
    } else if (be->ops->host_memory) {
        logits = d_logits32;
    } else {
        be->ops->download(be, fw->h_logits, d_logits32, (size_t)nl * (size_t)V * sizeof(float));
    }
    fw->last_logits = logits;
#pragma omp parallel for schedule(dynamic, 1) if (nl > 1)
    for (int i = 0; i < nl; i++)
        rt_sample(logits + (size_t)i * (size_t)V, V, &rows[i].params, &rows[i].rng,
                  (char *)fw->scratch + (size_t)omp_get_thread_num() * 8 * (size_t)V, &out[i]);
    return 0;
}

/* x itself, or for an act-order product (w->q.perm) x's columns gathered in the order of its codes. */
static const void *inputs(rt_forward *fw, const rt_tensor *w, const void *x, int T)
{
    if (!w->q.perm)
        return x;
    rt_backend *be = fw->m->be;
    be->ops->gather_cols(be, fw->xperm, x, w->q.perm, T, (int)w->cols);
    return fw->xperm;
}

/* The layers op by op. The last layer's output product is left in xb, to be added to x. */
static int layers_by_op(rt_forward *fw, const staged *st, base_err *err)
{
    rt_model *m = fw->m;
    rt_backend *be = m->be;
    const rt_backend_ops *op = be->ops;
    const int T = st->rows, ffn = m->shard.ffn_end - m->shard.ffn_begin;
    const float eps = (float)m->cfg.norm_eps;
    const size_t xn = (size_t)T * (size_t)m->cfg.dim;
    for (int l = 0; l < m->n_layers; l++) {
        rt_layer_weights *w = &m->layers[l];
        if (l == 0)
            op->rmsnorm(be, fw->xb, fw->x, &w->attn_norm, T, eps);
        /* else: the previous layer's add_rmsnorm already left norm(x) in xb */
        op->matmul(be, fw->qkv, inputs(fw, &w->wqkv, fw->xb, T), &w->wqkv, &w->bqkv, T);
        rt_attend(be, fw->att, fw->q, fw->qkv, fw->inv_freq, &st->ab, &fw->shape, &fw->kv->layers[l]);
        op->matmul(be, fw->xb, inputs(fw, &w->wo, fw->att, T), &w->wo, &w->bo, T);
        if (tp_allreduce_add_rmsnorm(fw, &w->ffn_norm, T, eps, err))
            return -1;
        op->matmul(be, fw->gate_up, inputs(fw, &w->w_gate_up, fw->xb, T), &w->w_gate_up, NULL, T);
        op->silu_mul(be, fw->act, fw->gate_up, T, ffn);
        op->matmul(be, fw->xb, inputs(fw, &w->w_down, fw->act, T), &w->w_down, NULL, T);
        if (l + 1 < m->n_layers ? tp_allreduce_add_rmsnorm(fw, &m->layers[l + 1].attn_norm, T, eps, err)
                                : tp_allreduce(fw, fw->xb, xn, err))
            return -1;
    }
    return 0;
}

/* Whether the backend fuses every product of the layers at T rows (a single tensor-parallel rank). */
static bool layers_fuse(const rt_forward *fw, int T)
{
    const rt_model *m = fw->m;
    rt_backend *be = m->be;
    if (!fw->ss || T > FUSE_MAX_ROWS)
        return false;
    for (int l = 0; l < m->n_layers; l++) {
        const rt_layer_weights *w = &m->layers[l];
        if (!be->ops->fuses(be, &w->wqkv, T) || !be->ops->fuses(be, &w->wo, T) ||
            !be->ops->fuses(be, &w->w_gate_up, T) || !be->ops->fuses(be, &w->w_down, T))
            return false;
    }
    return true;
}

/* The layers as a chain of fused products (backend.h's matmul_fused): each norm split between the
 * product that writes the residual stream (x * weight into xb, the sums of squares into the
 * chain's next slot of ss) and the one that reads xb; the residual adds and the SiLU-multiply in
 * the products. Four kernels a layer besides the attention's two (one where the backend's
 * matmul_rope takes the RoPE and KV write into the QKV product, or its rope_attention into a decode
 * step's attention). x is complete at the end. */
static void layers_fused(rt_forward *fw, const staged *st)
{
    rt_model *m = fw->m;
    rt_backend *be = m->be;
    const rt_backend_ops *op = be->ops;
    const int T = st->rows, L = m->n_layers;
    const float eps = (float)m->cfg.norm_eps;
    const size_t slot = (size_t)T * RT_FUSION_SS_STRIDE; /* a product's sums of squares */
    op->norm_begin(be, fw->xb, fw->ss, (size_t)(2 * L + 1) * slot, fw->x, &m->layers[0].attn_norm, T);
    for (int l = 0; l < L; l++) {
        rt_layer_weights *w = &m->layers[l];
        float *s_attn = fw->ss + (size_t)(2 * l) * slot, *s_ffn = s_attn + slot, *s_next = s_ffn + slot;
        const rt_fusion qkv = {.norm_ss = s_attn, .eps = eps},
                        o = {.residual = true, .next_norm = &w->ffn_norm, .xg = fw->xb, .ss = s_ffn,
                             .ahead = &w->w_gate_up, .ahead_halves = true},
                        gate_up = {.norm_ss = s_ffn, .eps = eps, .silu = true, .ahead = &w->w_down},
                        down = {.residual = true, .next_norm = l + 1 < L ? &m->layers[l + 1].attn_norm : NULL,
                                .xg = fw->xb, .ss = s_next, .ahead = l + 1 < L ? &m->layers[l + 1].wqkv : NULL};
        const void *xq = inputs(fw, &w->wqkv, fw->xb, T);
        rt_kv_layer *kv = &fw->kv->layers[l];
        if (op->matmul_rope &&
            op->matmul_rope(be, fw->q, xq, &w->wqkv, &w->bqkv, &qkv, T, fw->inv_freq, &st->ab, &fw->shape, kv)) {
            op->attention(be, fw->att, fw->q, kv, &st->ab, &fw->shape);
        } else {
            op->matmul_fused(be, fw->qkv, xq, &w->wqkv, &w->bqkv, &qkv, T);
            rt_attend(be, fw->att, fw->q, fw->qkv, fw->inv_freq, &st->ab, &fw->shape, kv);
        }
        op->matmul_fused(be, fw->x, inputs(fw, &w->wo, fw->att, T), &w->wo, &w->bo, &o, T);
        op->matmul_fused(be, fw->act, inputs(fw, &w->w_gate_up, fw->xb, T), &w->w_gate_up, NULL, &gate_up, T);
        op->matmul_fused(be, fw->x, inputs(fw, &w->w_down, fw->act, T), &w->w_down, NULL, &down, T);
    }
}

/* The device work of a step whose arrays are staged: from the embedding (or the previous stage's
 * hidden state) to the device sampler's launch (or the fp32 logits, left in *logits32 for the host
 * sampler). On a single rank nothing here waits for the device, so a graph can capture it. */
static int run_ops(rt_forward *fw, const staged *st, const float **logits32, base_err *err)
{
    rt_model *m = fw->m;
    rt_backend *be = m->be;
    const rt_backend_ops *op = be->ops;
    const rt_config *c = &m->cfg;
    const rt_shard *s = &m->shard;
    const int T = st->rows;
    const float eps = (float)c->norm_eps;
    const size_t xn = (size_t)T * (size_t)c->dim;
    *logits32 = NULL;
    if (s->first_stage) {
        op->embedding(be, fw->x, &m->embed, s->vocab_begin, st->tokens, T, st->chain,
                      fw->device_sampling ? fw->d_out : fw->prev_out);
        if (tp_allreduce(fw, fw->x, xn, err))
            return -1;
    } else if (pp_transfer(fw, fw->x, xn, false, err)) {
        return -1;
    }
    const bool pending = !layers_fuse(fw, T); /* op by op: the last product waits in xb */
    if (!pending)
        layers_fused(fw, st);
    else if (layers_by_op(fw, st, err))
        return -1;
    if (!s->last_stage) {
        if (pending)
            op->add(be, fw->x, fw->xb, xn); /* the last layer's residual, then on to the next stage */
        return 0;
    }
    const int nl = st->n_logits;
    if (nl == 0)
        return 0;
    /* the last residual add and the final norm, on the rows that need logits only */
    void *xr = fw->rows, *dr = (char *)fw->rows + (size_t)nl * (size_t)c->dim * rt_dtype_size(op->act_dtype);
    op->gather_rows(be, xr, fw->x, st->logit_rows, nl, c->dim);
    if (pending) {
        op->gather_rows(be, dr, fw->xb, st->logit_rows, nl, c->dim);
        op->add_rmsnorm(be, xr, dr, dr, &m->final_norm, nl, eps);
    } else {
        op->rmsnorm(be, dr, xr, &m->final_norm, nl, eps);
    }
    if (op->act_dtype != RT_F32 && op->matmul_f32 && op->matmul_f32(be, fw->logits32, dr, &m->lm_head, nl)) {
        *logits32 = fw->logits32;
    } else {
        op->matmul(be, fw->logits, dr, &m->lm_head, NULL, nl);
        *logits32 = fw->logits;
        if (op->act_dtype != RT_F32) {
            op->to_f32(be, fw->logits32, fw->logits, (size_t)nl * (size_t)(s->vocab_end - s->vocab_begin));
            *logits32 = fw->logits32;
        }
    }
    if (st->sample_rows)
        op->sample(be, fw->d_out, *logits32, nl, c->vocab_size, st->sample_rows);
    return 0;
}

/* Decode steps run as CUDA graphs: one per (rows bucket, block-table width), captured the first
 * time it is needed; on a single rank with the device sampler, or under tensor parallelism when
 * the step's all-reduces go over CUDA IPC (one kernel each; through host memory they wait, and
 * NCCL's capture has not been tried). 0 when this step is not one. */
static const int row_buckets[] = {1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024};

static int graph_shape(const rt_forward *fw, const rt_batch *b, int *width)
{
    const int T = b->n_tokens;
    if (!fw->graphs || T != b->n_seqs || T != b->n_logits)
        return 0;
    int cap = fw->lim.max_tokens < fw->lim.max_logits ? fw->lim.max_tokens : fw->lim.max_logits;
    cap = cap < fw->lim.max_seqs ? cap : fw->lim.max_seqs;
    int rows = 0;
    for (size_t i = 0; i < sizeof row_buckets / sizeof *row_buckets && !rows; i++)
        if (row_buckets[i] >= T)
            rows = row_buckets[i] < cap ? row_buckets[i] : cap;
    if (rows < T)
        return 0;
    if (fw->comm && comm_topo(fw->comm)->tp > 1 &&
        !comm_has_ipc(fw->comm, (size_t)rows * (size_t)fw->m->cfg.dim * rt_dtype_size(fw->m->be->ops->act_dtype)))
        return 0;
    int w = 8;
    while (w < b->max_blocks)
        w *= 2;
    *width = w < fw->lim.max_blocks ? w : fw->lim.max_blocks;
    return rows;
}

static int forward(rt_forward *fw, const rt_batch *b, rt_step_sampling *rows, rt_sample_out *out, int *slot,
                   base_err *err)
{
    rt_backend *be = fw->m->be;
    const rt_backend_ops *op = be->ops;
    const rt_shard *s = &fw->m->shard;
    int width = 0;
    const int pad = graph_shape(fw, b, &width);
    staged st;
    if (stage_batch(fw, b, rows, pad, width, &st, err))
        return -1;
    const float *logits32 = NULL;
    if (pad) {
        step_graph *g = NULL;
        for (int i = 0; i < fw->n_graphs && !g; i++)
            if (fw->graph[i].rows == pad && fw->graph[i].width == width)
                g = &fw->graph[i];
        bool captured = false;
        if (!g && fw->n_graphs < MAX_GRAPHS) {
            const comm_counters c0 = fw->comm ? comm_get_counters(fw->comm) : (comm_counters){0};
            op->graph_begin(be);
            int rc = run_ops(fw, &st, &logits32, err);
            void *exec = op->graph_end(be);
            if (rc || !exec)
                return -1;
            const comm_counters c1 = fw->comm ? comm_get_counters(fw->comm) : (comm_counters){0};
            g = &fw->graph[fw->n_graphs++];
            *g = (step_graph){.rows = pad,
                              .width = width,
                              .exec = exec,
                              .traffic = {c1.tp_bytes - c0.tp_bytes, c1.pp_bytes - c0.pp_bytes,
                                          c1.world_bytes - c0.world_bytes, c1.calls - c0.calls}};
            captured = true;
        }
        if (g) {
            op->graph_launch(be, g->exec);
            if (fw->comm && !captured) /* a replay: its collectives ran without the host counting them */
                comm_add_counters(fw->comm, &g->traffic);
            /* the logits the host samples under tensor parallelism (the graph's fp32 copy) */
            logits32 = op->act_dtype != RT_F32 ? fw->logits32 : fw->logits;
        } else if (run_ops(fw, &st, &logits32, err)) { /* more shapes than graphs: run it as it comes */
            return -1;
        }
    } else if (run_ops(fw, &st, &logits32, err)) {
        return -1;
    }
    /* the step's collectives on the device path were enqueued without a wait: waited for here,
     * once, at most --comm-timeout (before the host reads anything the step computed) */
    if (fw->comm && comm_dev_wait(fw->comm, err))
        return -1;
    if (!s->last_stage) {
        op->sync(be);
        return pp_transfer(fw, fw->x, (size_t)b->n_tokens * (size_t)fw->m->cfg.dim, true, err);
    }
    if (b->n_logits == 0) {
        fw->prev_logits = 0;
        op->sync(be);
        return 0;
    }
    return sample(fw, logits32, b->n_logits, rows, out, slot, err);
}

int rt_forward_submit(rt_forward *fw, const rt_batch *b, rt_step_sampling *rows, rt_sample_out *out, int *slot,
                      base_err *err)
{
    if (slot)
        *slot = -1;
    int rc = forward(fw, b, rows, out, slot, err);
    if (rc) {
        fw->prev_logits = 0;
        fw->m->be->ops->sync(fw->m->be); /* a step cut short leaves no copy from h_ints in flight */
    }
    /* a device failure inside an op is the cause of whatever else went wrong: it wins */
    if (fw->m->be->ops->check(fw->m->be, err))
        return -1;
    return rc;
}

int rt_forward_step(rt_forward *fw, const rt_batch *b, rt_step_sampling *rows, rt_sample_out *out, base_err *err)
{
    return rt_forward_submit(fw, b, rows, out, NULL, err);
}

bool rt_forward_chains(const rt_forward *fw)
{
    const bool one_rank = !fw->comm || comm_topo(fw->comm)->world_size == 1;
    return one_rank && fw->samples && (fw->device_sampling || fw->m->be->ops->host_memory);
}

int rt_forward_collect(rt_forward *fw, rt_sample_out *out, int n_logits, int slot, base_err *err)
{
    rt_backend *be = fw->m->be;
    if (slot < 0)
        return 0;
    be->ops->wait_mark(be, slot);
    if (be->ops->check(be, err))
        return -1;
    memcpy(out, fw->h_out + (size_t)slot * (size_t)fw->lim.max_logits, (size_t)n_logits * sizeof *out);
    return 0;
}
