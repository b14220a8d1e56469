#include "launch/job_flags.h"

#include <stdlib.h>
#include <string.h>

#include "launch/cli.h"
#include "partition/plan.h"
#include "runtime/config.h"

void job_flags_init(job_flags *f)
{
    memset(f, 0, sizeof *f);
    f->tp = f->pp = 1;
    f->max_batch_tokens = 2048;
    f->block_size = 16;
    f->gpu_memory_fraction = 0.9;
    f->comm_timeout = 120;
}

void job_flags_free(job_flags *f)
{
    free(f->layers_per_stage);
    f->layers_per_stage = NULL;
}

int job_flags_parse(job_flags *f, int opt, const char *v, base_err *err)
{
    long n;
    double d;
    switch (opt) {
    case JF_MODEL: f->model = v; break;
    case JF_TP: if (cli_int("--tp", v, 1, PLAN_MAX_TP, &n, err)) return -1; f->tp = (int)n; break;
    case JF_PP: if (cli_int("--pp", v, 1, PLAN_MAX_PP, &n, err)) return -1; f->pp = (int)n; break;
    case JF_LPS: {
        int32_t *l;
        job_flags_free(f);
        if (cli_int_list("--layers-per-stage", v, &l, &f->n_layers_per_stage, err))
            return -1;
        f->layers_per_stage = (int *)l; /* int32_t is int wherever dinfer builds */
        break;
    }
    case JF_DTYPE:
        if (strcmp(v, "f32") && strcmp(v, "bf16") && strcmp(v, "f16"))
            return base_errf(err, "--dtype: \"%.16s\" is not f32, bf16 or f16", v);
        f->dtype = v;
        break;
    case JF_KV_DTYPE:
        if (strcmp(v, "auto") && strcmp(v, "fp8"))
            return base_errf(err, "--kv-dtype: \"%.16s\" is not auto or fp8", v);
        f->kv_fp8 = strcmp(v, "fp8") == 0;
        break;
    case JF_KV_SCALES:
        if (strcmp(v, "checkpoint") && strcmp(v, "token"))
            return base_errf(err, "--kv-scales: \"%.16s\" is not checkpoint or token", v);
        f->kv_token_scales = strcmp(v, "token") == 0;
        break;
    case JF_THREADS: if (cli_int("--threads", v, 1, 4096, &n, err)) return -1; f->threads = (int)n; break;
    case JF_MBT:
        if (cli_int("--max-batch-tokens", v, 1, 1 << 20, &n, err)) return -1;
        f->max_batch_tokens = (int)n;
        break;
    case JF_BS: if (cli_int("--block-size", v, 1, 1024, &n, err)) return -1; f->block_size = (int)n; break;
    case JF_DEVICE:
        if (strcmp(v, "cpu") && strcmp(v, "cuda"))
            return base_errf(err, "--device: \"%.16s\" is not cpu or cuda", v);
        f->device = v;
        break;
    case JF_GMF:
        if (cli_float("--gpu-memory-fraction", v, 0, 1, &d, err) || d <= 0)
            return base_errf(err, "--gpu-memory-fraction: \"%.16s\" is not in (0, 1]", v);
        f->gpu_memory_fraction = d;
        break;
    case JF_COMM_TIMEOUT:
        if (cli_float("--comm-timeout", v, 0, 1e7, &d, err) || d <= 0)
            return base_errf(err, "--comm-timeout: \"%.16s\" is not a positive number of seconds", v);
        f->comm_timeout = d;
        break;
    case JF_VERBOSE: f->verbose = true; break;
    case JF_DEPTH:
        if (cli_int("--pipeline-depth", v, 1, 16, &n, err)) return -1; /* RT_ENGINE_MAX_IN_FLIGHT */
        f->pipeline_depth = (int)n;
        break;
    case JF_QUANTIZE:
    case JF_QUANTIZE_HEAD: {
        rt_quant q;
        if (rt_quant_for_load(&q, v))
            return base_errf(err, "%s: \"%.16s\" is not fp8, int8 or int4",
                             opt == JF_QUANTIZE ? "--quantize" : "--quantize-lm-head", v);
        *(opt == JF_QUANTIZE ? &f->quantize : &f->quantize_head) = v;
        break;
    }
    default: return 0;
    }
    return 1;
}

int job_flags_check(const job_flags *f, base_err *err)
{
    if (!f->model)
        return base_errf(err, "--model DIR is required");
    if (f->layers_per_stage && f->n_layers_per_stage != f->pp)
        return base_errf(err, "--layers-per-stage lists %d stages, --pp is %d", f->n_layers_per_stage, f->pp);
    return 0;
}

int job_flags_depth(const job_flags *f)
{
    return f->pipeline_depth ? f->pipeline_depth : f->pp;
}

int job_flags_to_config(const job_flags *f, rt_config *cfg, base_err *err)
{
    cfg->kv_fp8 = f->kv_fp8;
    cfg->kv_token_scales = f->kv_token_scales;
    if (f->quantize_head && rt_quant_for_load(&cfg->head_quant, f->quantize_head))
        return base_errf(err, "--quantize-lm-head: \"%.16s\" is not fp8, int8 or int4", f->quantize_head);
    if (!f->quantize)
        return 0;
    if (cfg->quant.method != RT_QUANT_NONE) {
        char what[96];
        return base_errf(err, "--quantize %s: the checkpoint is already quantized (%s); load it as it is", f->quantize,
                         rt_quant_describe(&cfg->quant, what, sizeof what));
    }
    return rt_quant_for_load(&cfg->quant, f->quantize);
}

rt_dtype job_flags_dtype(const job_flags *f, rt_dtype def)
{
    if (!f->dtype)
        return def;
    return strcmp(f->dtype, "bf16") == 0 ? RT_BF16 : strcmp(f->dtype, "f16") == 0 ? RT_F16 : RT_F32;
}

void job_flags_usage_split(FILE *out)
{
    fprintf(out, "  --model DIR             a Hugging Face model folder\n"
                 "  --tp T --pp P           tensor and pipeline parallel split (the job has T x P ranks)\n"
                 "  --layers-per-stage L    layers of each pipeline stage, e.g. 3,2 (default: even)\n"
                 "  --dtype f32|bf16|f16    GPU storage type (default: the checkpoint's; the CPU computes fp32)\n"
                 "  --kv-dtype auto|fp8     the KV cache's type: the compute type, or FP8 e4m3 with a scale a\n"
                 "                          token and head (about 1.9x BF16's tokens), or under the checkpoint's\n"
                 "                          static scales where it has them (kv_cache_scheme: 2x)\n"
                 "  --kv-scales checkpoint|token  an FP8 cache's scales: the checkpoint's where it has them\n"
                 "                          (default), or a scale a token and head even then\n");
}

void job_flags_usage_compute(FILE *out)
{
    fprintf(out, "  --max-batch-tokens N    tokens per engine step (default 2048)\n"
                 "  --block-size N          tokens per KV block (default 16)\n"
                 "  --threads N             CPU threads per rank (default: OMP_NUM_THREADS, else the host's\n"
                 "                          cores shared among its ranks)\n"
                 "  --device cpu|cuda       where to compute (default: cuda when every rank sees a GPU)\n"
                 "  --gpu-memory-fraction F of each GPU the job may use (default 0.9)\n"
                 "  --comm-timeout S        seconds before a stuck step or NCCL operation stops the job (default 120)\n"
                 "  --pipeline-depth D      steps in flight at once, each over other sequences, so every pipeline\n"
                 "                          stage has work (default: --pp; 1 runs one step at a time)\n"
                 "  --quantize fp8|int8|int4 quantize a float checkpoint's linear layers as it loads: fp8 and\n"
                 "                          int8 a scale a row, int4 groups of 128 with zero points\n"
                 "  --quantize-lm-head fp8|int8|int4 the LM head too (left 16-bit by --quantize and by\n"
                 "                          published checkpoints; a tied head gets a quantized copy of the\n"
                 "                          embedding): batch-1 decode reads it every token\n"
                 "  --verbose               print each rank's shard and load report\n");
}
