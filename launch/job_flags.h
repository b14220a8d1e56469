/* The flags the executables share, parsed in one place: the model and its split (dinfer-run,
 * dinfer-server, dinfer-plan, dinfer-launch), and where and how a job computes (dinfer-run,
 * dinfer-server). Each executable puts JOB_SPLIT_OPTIONS or JOB_FLAG_OPTIONS in its getopt_long
 * table and hands every option code to job_flags_parse first. */
#ifndef DINFER_LAUNCH_JOB_FLAGS_H
#define DINFER_LAUNCH_JOB_FLAGS_H

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>

#include "base/err.h"
#include "runtime/dtype.h"

typedef struct job_flags {
    const char *model;           /* --model DIR */
    int tp, pp;                  /* --tp, --pp (1) */
    int *layers_per_stage;       /* --layers-per-stage (pp entries, owned) or NULL: even */
    int n_layers_per_stage;
    const char *dtype;           /* --dtype f32|bf16|f16, or NULL: the checkpoint's */
    bool kv_fp8;                 /* --kv-dtype fp8 (else auto: the compute type) */
    bool kv_token_scales;        /* --kv-scales token (else checkpoint: its static scales where it has them) */
    int threads;                 /* --threads: CPU threads per rank, 0: the host's cores shared */
    int max_batch_tokens;        /* --max-batch-tokens: tokens per step (2048) */
    int block_size;              /* --block-size: tokens per KV block (16) */
    const char *device;          /* --device cpu|cuda, or NULL: cuda when every rank sees a GPU */
    double gpu_memory_fraction;  /* --gpu-memory-fraction (0.9) */
    double comm_timeout;         /* --comm-timeout seconds (120) */
    int pipeline_depth;          /* --pipeline-depth: steps in flight, 0: pp (every stage busy) */
    bool verbose;                /* --verbose */
    const char *quantize;        /* --quantize fp8|int8|int4: a float checkpoint's linear weights, or NULL */
    const char *quantize_head;   /* --quantize-lm-head fp8|int8|int4: the LM head, or NULL (as stored) */
} job_flags;

/* Option codes of the shared flags, apart from any executable's own. */
enum {
    JF_MODEL = 1000, JF_TP, JF_PP, JF_LPS, JF_DTYPE, JF_THREADS, JF_MBT, JF_BS, JF_DEVICE, JF_GMF, JF_COMM_TIMEOUT,
    JF_VERBOSE, JF_DEPTH, JF_QUANTIZE, JF_KV_DTYPE, JF_QUANTIZE_HEAD, JF_KV_SCALES,
};

#define JOB_SPLIT_OPTIONS                                                                                     \
    {"model", required_argument, 0, JF_MODEL}, {"tp", required_argument, 0, JF_TP},                          \
    {"pp", required_argument, 0, JF_PP}, {"layers-per-stage", required_argument, 0, JF_LPS},                 \
    {"dtype", required_argument, 0, JF_DTYPE}, {"kv-dtype", required_argument, 0, JF_KV_DTYPE},              \
    {"kv-scales", required_argument, 0, JF_KV_SCALES}

#define JOB_FLAG_OPTIONS                                                                                      \
    JOB_SPLIT_OPTIONS, {"threads", required_argument, 0, JF_THREADS},                                        \
    {"max-batch-tokens", required_argument, 0, JF_MBT}, {"block-size", required_argument, 0, JF_BS},        \
    {"device", required_argument, 0, JF_DEVICE}, {"gpu-memory-fraction", required_argument, 0, JF_GMF},     \
    {"comm-timeout", required_argument, 0, JF_COMM_TIMEOUT}, {"verbose", no_argument, 0, JF_VERBOSE},       \
    {"pipeline-depth", required_argument, 0, JF_DEPTH}, {"quantize", required_argument, 0, JF_QUANTIZE},       \
    {"quantize-lm-head", required_argument, 0, JF_QUANTIZE_HEAD}

void job_flags_init(job_flags *f);
void job_flags_free(job_flags *f);

/* 1 when opt is a shared flag (value parsed into f), 0 when it is not, -1 with err naming the flag
 * and the problem for a bad value. */
int job_flags_parse(job_flags *f, int opt, const char *value, base_err *err);

/* What must hold once every flag is read: a model, a --layers-per-stage entry per stage. */
int job_flags_check(const job_flags *f, base_err *err);

/* The steps rank 0 keeps in flight: --pipeline-depth, else pp. */
int job_flags_depth(const job_flags *f);

/* Applies --quantize, --quantize-lm-head, --kv-dtype and --kv-scales to a loaded config.json: --quantize refused
 * for a checkpoint that is already quantized. */
struct rt_config;
int job_flags_to_config(const job_flags *f, struct rt_config *cfg, base_err *err);

/* The --dtype as a type, or def when not given. */
rt_dtype job_flags_dtype(const job_flags *f, rt_dtype def);

/* The usage lines: of the split flags, and of the compute flags. */
void job_flags_usage_split(FILE *out);
void job_flags_usage_compute(FILE *out);

#endif
