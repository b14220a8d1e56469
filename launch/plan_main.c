/* dinfer-plan: prints how a model splits over tp x pp ranks (layers, heads, FFN columns,
 * vocabulary rows and memory of each rank) without loading a weight, or why it cannot. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch/cli.h"
#include "launch/job_flags.h"
#include "partition/plan.h"
#include "runtime/kv_cache.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: dinfer-plan --model DIR --tp T --pp P [--layers-per-stage 3,2] [--dtype f32|bf16|f16]\n"
               "                   [--kv-dtype auto|fp8] [--kv-scales checkpoint|token]\n"
               "Prints each rank's share of the model; exits 1 with the reason when the split is impossible.\n"
               "Reads only DIR/config.json. --dtype (default: the checkpoint's), --kv-dtype and --kv-scales set\n"
               "the memory estimate.\n");
}

static void range(char *buf, size_t n, int begin, int end)
{
    if (end - begin == 1)
        snprintf(buf, n, "%d", begin);
    else
        snprintf(buf, n, "%d-%d", begin, end - 1);
}

static int run(int argc, char **argv, base_err *err)
{
    static const struct option opts[] = {JOB_SPLIT_OPTIONS, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    job_flags f;
    job_flags_init(&f);
    int o, li = 0, shared;
    while ((o = getopt_long(argc, argv, "m:h", opts, &li)) != -1) {
        if ((shared = job_flags_parse(&f, o == 'm' ? JF_MODEL : o, optarg, err)) < 0) {
            job_flags_free(&f);
            return -1;
        }
        if (shared)
            continue;
        job_flags_free(&f);
        if (o == 'h') {
            usage(stdout);
            return 1;
        }
        usage(stderr);
        return base_errf(err, "unknown or incomplete option (see above)");
    }
    int rc = 0;
    rt_config cfg;
    plan p = {0};
    const char *model = f.model;
    if (optind < argc)
        rc = base_errf(err, "unexpected argument \"%.64s\"", argv[optind]);
    else if (job_flags_check(&f, err) == 0)
        rc = rt_config_load(&cfg, model, err) || job_flags_to_config(&f, &cfg, err) ? -1 : 0;
    else
        rc = -1;
    rt_dtype dt = rc == 0 ? job_flags_dtype(&f, cfg.dtype) : RT_F32;
    if (rc == 0)
        rc = plan_make(&p, &cfg, f.tp, f.pp, f.layers_per_stage, dt, err);
    job_flags_free(&f);
    if (rc)
        return rc;
    printf("model %s: %s, %d layers, %d heads (%d KV, head_dim %d), dim %d, FFN %d, vocab %d\n", model,
           rt_arch_name(cfg.arch), cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.dim, cfg.ffn_dim,
           cfg.vocab_size);
    char qdesc[96];
    if (cfg.kv_fp8)
        printf("split tp=%d x pp=%d over %d ranks, weights in %s (%s), KV cache in %s%s\n", p.tp, p.pp, p.world,
               rt_dtype_name(dt), rt_quant_describe(&cfg.quant, qdesc, sizeof qdesc), rt_kv_describe(&cfg),
               cfg.tie_embeddings ? ", tied embeddings" : "");
    else
        printf("split tp=%d x pp=%d over %d ranks, weights and KV cache in %s (%s)%s\n", p.tp, p.pp, p.world,
               rt_dtype_name(dt), rt_quant_describe(&cfg.quant, qdesc, sizeof qdesc),
               cfg.tie_embeddings ? ", tied embeddings" : "");
    printf("%-5s %-5s %-3s %-8s %-8s %-8s %-13s %-15s %11s %13s\n", "rank", "stage", "tp", "layers", "q heads",
           "kv heads", "FFN cols", "vocab rows", "weights MiB", "KV MiB/1k tok");
    double total = 0;
    for (int r = 0; r < p.world; r++) {
        const plan_rank *pr = &p.ranks[r];
        const rt_shard *s = &pr->shard;
        char L[24], H[24], K[24], F[32], V[32];
        range(L, sizeof L, s->layer_begin, s->layer_end);
        range(H, sizeof H, s->head_begin, s->head_begin + s->n_heads);
        range(K, sizeof K, s->kv_head_begin, s->kv_head_begin + s->n_kv_heads);
        range(F, sizeof F, s->ffn_begin, s->ffn_end);
        range(V, sizeof V, s->vocab_begin, s->vocab_end);
        printf("%-5d %-5d %-3d %-8s %-8s %-8s %-13s %-15s %11.1f %13.2f\n", r, pr->stage, pr->tp_rank, L, H, K, F,
               s->first_stage || s->last_stage ? V : "-", (double)pr->weight_bytes / (1 << 20),
               (double)pr->kv_bytes_per_token * 1000 / (1 << 20));
        total += (double)pr->weight_bytes;
    }
    if (p.tp > cfg.n_kv_heads)
        printf("KV heads are replicated: each is held by %d ranks\n", p.tp / cfg.n_kv_heads);
    printf("weights in all: %.1f MiB\n", total / (1 << 20));
    if (cfg.quant.act_order && p.tp > 1) /* which groups a split cuts is in g_idx, not config.json */
        printf("act order: where the --tp %d split gives a rank part of o_proj's groups, that rank holds o_proj as "
               "floats, more than counted above (the job says so as it loads)\n", p.tp);
    plan_free(&p);
    return 0;
}

int main(int argc, char **argv)
{
    base_err err = {{0}};
    int rc = run(argc, argv, &err);
    if (rc < 0) {
        fprintf(stderr, "dinfer-plan: %s\n", err.msg);
        return 1;
    }
    return 0;
}
