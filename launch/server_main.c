/* dinfer-server: the MPI program every rank of a serving job runs.
 *   mpirun -np 4 dinfer-server --model DIR --tp 2 --pp 2 --port 7070
 * Rank 0 is the coordinator: it listens for clients, schedules their requests with continuous
 * batching and streams the tokens back; every rank holds its shard and follows rank 0's steps. */
#include <errno.h>
#include <getopt.h>
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "launch/cli.h"
#include "base/clock.h"
#include "base/file.h"
#include "base/log.h"
#include "launch/job.h"
#include "launch/server/server.h"
#include "runtime/kv_cache.h"

typedef struct server_args {
    job_flags job; /* the model, its split, where and how it computes */
    const char *host, *token_file, *ready_file, *chat_template;
    int port, http_port, max_seqs, kv_blocks, max_queue, max_connections, prompt_spread;
    double kv_cache_mib, drain_seconds, idle_timeout, frame_timeout;
    long max_frame;
    bool kv_mib_given;
} server_args;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mpirun -np N dinfer-server --model DIR [--tp T --pp P] [options]\n"
            "  --host H                address to listen on (default 127.0.0.1; 0.0.0.0 serves the network)\n"
            "  --port P                TCP port (default 7070; 0 picks a free one)\n"
            "  --http-port P           also serve OpenAI's HTTP API (/v1/completions, /v1/chat/completions,\n"
            "                          /v1/models, /tokenize, /detokenize, /health, /metrics) on --host:P\n"
            "                          (default off; 0 picks a free one)\n"
            "  --auth-token-file F     clients must send the token in F (HTTP: Authorization: Bearer; /health\n"
            "                          and /metrics stay open)\n"
            "  --chat-template F       the Jinja chat template for /v1/chat/completions (default: the model\n"
            "                          folder's chat_template.jinja or tokenizer_config.json's chat_template)\n"
            "  --max-seqs S            sequences running at once (default 256)\n"
            "  --prompt-spread C       while sequences decode, new prompts go in over C steps (at least 128\n"
            "                          tokens a step): a lower median time to first token for less\n"
            "                          throughput (default 1: whole steps, up to --max-batch-tokens; a\n"
            "                          pipeline on CPU ranks spreads over 8 by itself)\n"
            "  --kv-blocks B           KV cache blocks (every rank holds B)\n"
            "  --kv-cache-mib M        or: the KV cache per rank in MiB (default: on a GPU what\n"
            "                          --gpu-memory-fraction leaves after weights and workspace; on CPU 512)\n"
            "  --max-queue Q           requests queued or running before RESOURCE_EXHAUSTED (default 4096)\n"
            "  --max-frame-bytes N     largest frame or HTTP request body a client may send (default 4194304)\n"
            "  --max-connections N     client connections at once; more are refused (default 1024)\n"
            "  --idle-timeout S        close a connection with no live request and no traffic for S s (default 600)\n"
            "  --frame-timeout S       a frame begun must arrive whole within S s (default 30)\n"
            "  --drain-seconds S       on SIGTERM/SIGINT/SIGUSR1, time running requests get to finish (default 30)\n"
            "  --ready-file F          once serving, rank 0 writes \"HOST:PORT PID\" to F (for scripts)\n");
    job_flags_usage_split(f);
    job_flags_usage_compute(f);
}

static int parse(server_args *a, int argc, char **argv, base_err *err)
{
    enum { O_HOST = 256, O_PORT, O_TOKEN, O_SEQS, O_KVB, O_KVM, O_QUEUE, O_FRAME, O_DRAIN, O_READY, O_MAXCONN, O_IDLE,
           O_FRAMET, O_HTTP, O_CHAT, O_SPREAD };
    static const struct option opts[] = {
        JOB_FLAG_OPTIONS, {"host", required_argument, 0, O_HOST},
        {"port", required_argument, 0, O_PORT}, {"http-port", required_argument, 0, O_HTTP},
        {"auth-token-file", required_argument, 0, O_TOKEN}, {"chat-template", required_argument, 0, O_CHAT},
        {"max-seqs", required_argument, 0, O_SEQS}, {"prompt-spread", required_argument, 0, O_SPREAD},
        {"kv-blocks", required_argument, 0, O_KVB}, {"kv-cache-mib", required_argument, 0, O_KVM},
        {"max-queue", required_argument, 0, O_QUEUE},
        {"max-frame-bytes", required_argument, 0, O_FRAME}, {"drain-seconds", required_argument, 0, O_DRAIN},
        {"ready-file", required_argument, 0, O_READY}, {"max-connections", required_argument, 0, O_MAXCONN},
        {"idle-timeout", required_argument, 0, O_IDLE}, {"frame-timeout", required_argument, 0, O_FRAMET},
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    *a = (server_args){.host = "127.0.0.1", .port = 7070, .http_port = -1, .max_seqs = 256, .max_queue = 4096, .kv_cache_mib = 512,
                       .drain_seconds = 30, .max_frame = 4 << 20, .max_connections = 1024, .idle_timeout = 600,
                       .frame_timeout = 30};
    job_flags_init(&a->job);
    int o, li = 0, shared;
    long v;
    double d;
    while ((o = getopt_long(argc, argv, "m:h", opts, &li)) != -1) {
        char f[40];
        snprintf(f, sizeof f, "--%s", opts[li].name);
        const char *s = optarg;
        if ((shared = job_flags_parse(&a->job, o == 'm' ? JF_MODEL : o, s, err)) != 0) {
            if (shared < 0)
                return -1;
            continue;
        }
        switch (o) {
        case O_HOST: a->host = s; break;
        case O_PORT: if (cli_int(f, s, 0, 65535, &v, err)) return -1; a->port = (int)v; break;
        case O_HTTP: if (cli_int(f, s, 0, 65535, &v, err)) return -1; a->http_port = (int)v; break;
        case O_TOKEN: a->token_file = s; break;
        case O_CHAT: a->chat_template = s; break;
        case O_SEQS: if (cli_int(f, s, 1, 65536, &v, err)) return -1; a->max_seqs = (int)v; break;
        case O_SPREAD: if (cli_int(f, s, 1, 1024, &v, err)) return -1; a->prompt_spread = (int)v; break;
        case O_KVB: if (cli_int(f, s, 1, 1 << 28, &v, err)) return -1; a->kv_blocks = (int)v; break;
        case O_KVM: if (cli_float(f, s, 0.001, 1 << 24, &d, err)) return -1; a->kv_cache_mib = d; a->kv_mib_given = true; break;
        case O_QUEUE: if (cli_int(f, s, 1, 1 << 20, &v, err)) return -1; a->max_queue = (int)v; break;
        case O_FRAME: if (cli_int(f, s, 64, 1L << 30, &v, err)) return -1; a->max_frame = v; break;
        case O_DRAIN: if (cli_float(f, s, 0, 86400, &d, err)) return -1; a->drain_seconds = d; break;
        case O_READY: a->ready_file = s; break;
        case O_MAXCONN: if (cli_int(f, s, 1, 1 << 20, &v, err)) return -1; a->max_connections = (int)v; break;
        case O_IDLE: if (cli_float(f, s, 0.01, 1e7, &d, err)) return -1; a->idle_timeout = d; break;
        case O_FRAMET: if (cli_float(f, s, 0.01, 1e7, &d, err)) return -1; a->frame_timeout = d; break;
        case 'h': usage(stdout); return 1;
        default: usage(stderr); return base_errf(err, "unknown or incomplete option (see above)");
        }
    }
    if (optind < argc)
        return base_errf(err, "unexpected argument \"%.64s\"", argv[optind]);
    if (job_flags_check(&a->job, err))
        return -1;
    if (a->max_seqs > a->job.max_batch_tokens)
        a->max_seqs = a->job.max_batch_tokens; /* a step holds at most one token per sequence more */
    return 0;
}

/* The token from --auth-token-file: its first line, without the newline. */
static int read_token(const char *path, char **out, base_err *err)
{
    char *text;
    size_t len;
    if (base_read_file(path, 64 << 10, &text, &len, err))
        return -1;
    text[strcspn(text, "\r\n")] = 0;
    if (!*text) {
        free(text);
        return base_errf(err, "%s: the auth token file is empty", path);
    }
    *out = text;
    return 0;
}

/* KV blocks every rank can hold: --kv-blocks, or what this rank's memory allows (on a GPU the
 * budget left after weights and workspace, --kv-cache-mib if smaller; on CPU --kv-cache-mib),
 * capped at what max_seqs sequences of full context could use, the smallest over the ranks. */
static int kv_blocks(comm *c, const server_args *a, const job_model *jm, base_err *err)
{
    if (a->kv_blocks > 0)
        return a->kv_blocks;
    const rt_shard *s = &jm->model.shard;
    size_t per_token = rt_kv_bytes_per_token(s->layer_end - s->layer_begin, s->n_kv_heads, jm->cfg.head_dim, jm->dtype,
                                             rt_kv_kind_of(&jm->cfg));
    double bytes = a->kv_cache_mib * 1048576.0;
    if (jm->on_gpu) {
        double room = (double)job_kv_budget(jm);
        bytes = a->kv_mib_given && bytes < room ? bytes : room;
    }
    const int bs = jm->geo.block_size;
    double most = (double)a->max_seqs * rt_kv_blocks_for(jm->cfg.max_pos, bs);
    double blocks = bytes / ((double)per_token * bs);
    int64_t b = (int64_t)(blocks < most ? blocks : most);
    if (comm_min_i64(comm_topo(c)->world, &b, err) != 0)
        return -1;
    if (b < 1)
        return base_errf(err, "no room for a single KV block of %d tokens (%zu bytes per token on this rank)",
                       bs, per_token);
    return b > (1 << 28) ? 1 << 28 : (int)b;
}

static srv_shared *the_server; /* the signal handler's only way to it */

static void on_signal(int sig, siginfo_t *info, void *uctx)
{
    (void)uctx;
    if (the_server)
        srv_note_signal(the_server, sig, info ? (int)info->si_pid : 0);
}

static int serve(server_args *a, comm *c)
{
    const char *prog = "dinfer-server";
    const comm_topology *t = comm_topo(c);
    const bool root = t->rank == 0;
    base_err err = {{0}};
    char *token = NULL;
    int rc = root && a->token_file ? read_token(a->token_file, &token, &err) : 0;
    /* the model's tokenizer.json, on rank 0 (it tokenizes): a broken one stops the job, naming the
     * problem; none at all leaves text requests refused */
    rt_tokenizer *tok = NULL;
    char tok_path[4096];
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", a->job.model);
    if (rc == 0 && root && access(tok_path, F_OK) == 0 && !(tok = rt_tokenizer_load(tok_path, &err)))
        rc = -1;
    /* its chat template: an unreadable file or a --chat-template that does not parse stops the job;
     * a model's own template the interpreter cannot run leaves chat requests refused, saying why */
    rt_chat *chat = NULL;
    if (rc == 0 && root && rt_chat_load(a->job.model, a->chat_template, &chat, &err) != 0)
        rc = -1;
    if (job_agree(c, prog, rc, &err)) {
        free(token);
        rt_tokenizer_free(tok);
        rt_chat_free(chat);
        return 1;
    }
    job_model jm;
    rt_sched_options so = {.max_batch_tokens = a->job.max_batch_tokens, .max_seqs = a->max_seqs,
                           .pipeline_depth = job_flags_depth(&a->job), .prompt_spread = a->prompt_spread};
    if (job_load(c, prog, &a->job, a->max_seqs, &jm)) {
        free(token);
        rt_tokenizer_free(tok);
        rt_chat_free(chat);
        return 1;
    }
    int blocks = kv_blocks(c, a, &jm, &err);
    rt_engine *e = NULL;
    rc = blocks < 0 ? -1 : 0;
    int32_t eos;
    int has_eos = rc == 0 && tok ? rt_tokenizer_config_eos(tok, a->job.model, &eos, &err) : 1;
    if (has_eos < 0 || (has_eos == 0 && rt_config_add_eos(&jm.model.cfg, eos) != 0 &&
                        base_errf(&err, "tokenizer_config.json's eos_token %d: too many end-of-sequence ids", eos)))
        rc = -1; /* the coordinator stops at tokenizer_config.json's EOS too, as transformers does */
    rt_engine_geometry g;
    if (rc == 0) {
        g = jm.geo; /* the one geometry: job_load built it, the KV pool is ours to size */
        g.n_blocks = blocks;
        rc = rt_engine_create(&e, &jm.model, c, &g, &err);
    }
    srv_shared s;
    pthread_t net_thread;
    bool net_started = false;
    if (rc == 0 && root) {
        srv_options opt = {.host = a->host, .port = a->port, .http_port = a->http_port, .auth_token = token, .max_frame = (size_t)a->max_frame,
                           .max_conn_buffer = 16u << 20, .max_connections = a->max_connections,
                           .max_queue = a->max_queue, .idle_timeout = a->idle_timeout,
                           .frame_timeout = a->frame_timeout, .drain_seconds = a->drain_seconds,
                           .comm_timeout = a->job.comm_timeout};
        if (srv_shared_init(&s, &opt) != 0) {
            rc = base_errf(&err, "cannot create the wake pipes: %s", strerror(errno));
        } else if (srv_net_start(&s, &net_thread, &err) != 0) {
            rc = -1;
            srv_shared_destroy(&s);
        } else {
            net_started = true;
        }
    }
    if (job_agree(c, prog, rc, &err)) {
        rt_engine_destroy(e);
        job_model_free(&jm);
        free(token);
        rt_tokenizer_free(tok);
        rt_chat_free(chat);
        return 1;
    }
    /* where every rank runs, so rank 0 can name one it loses */
    char (*hosts)[64] = root ? calloc((size_t)t->world_size, 64) : NULL;
    int *pids = root ? calloc((size_t)t->world_size, sizeof *pids) : NULL;
    srv_rank_info *ranks = root ? calloc((size_t)t->world_size, sizeof *ranks) : NULL;
    job_roster(c, hosts, pids);
    for (int r = 0; ranks && hosts && pids && r < t->world_size; r++) {
        snprintf(ranks[r].host, sizeof ranks[r].host, "%s", hosts[r]);
        ranks[r].pid = pids[r];
    }
    free(hosts);
    free(pids);
    if (!root) {
        /* signals end the job through rank 0's drain; a follower just follows (SIGUSR1 is how
         * dinfer-launch asks for a drain: mpirun forwards it to every rank) */
        signal(SIGTERM, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        signal(SIGUSR1, SIG_IGN);
        rc = rt_engine_follow(e, &err);
        if (rc)
            job_abort(c, prog, &err);
    } else {
        const rt_config *cfg = &jm.cfg;
        snprintf(s.snap.model, sizeof s.snap.model, "%s", a->job.model);
        snprintf(s.snap.arch, sizeof s.snap.arch, "%s", rt_arch_name(cfg->arch));
        s.snap.tp = a->job.tp, s.snap.pp = a->job.pp, s.snap.world = t->world_size;
        s.snap.vocab = cfg->vocab_size, s.snap.max_context = cfg->max_pos;
        snprintf(s.snap.device, sizeof s.snap.device, "%s", jm.device);
        s.snap.weight_bytes = jm.model.bytes_held; /* quantized weights as the backend holds them */
        s.snap.workspace_bytes = rt_forward_workspace_bytes(cfg, &jm.model.shard, &g.lim, jm.dtype);
        s.snap.kv_cache_bytes = (uint64_t)blocks * (uint64_t)g.block_size *
                                rt_kv_bytes_per_token(jm.model.n_layers, jm.model.shard.n_kv_heads, cfg->head_dim,
                                                      jm.dtype, rt_kv_kind_of(cfg));
        base_log(0, "%s: %s, tp=%d x pp=%d on %d ranks", a->job.model, rt_arch_name(cfg->arch), a->job.tp, a->job.pp,
                t->world_size);
        base_log(0, "%s; KV cache: %d blocks of %d tokens (%ld tokens), %.2f GiB on rank 0; steps of up to %d tokens, "
                   "%d sequences", jm.device, blocks, g.block_size, (long)blocks * g.block_size,
                (double)s.snap.kv_cache_bytes / (1 << 30), so.max_batch_tokens, so.max_seqs);
        if (tok)
            base_log(0, "tokenizer: %s (%d ids): text prompts, text out and stop strings", tok_path,
                     rt_tokenizer_n_ids(tok));
        else
            base_log(0, "no %s: requests send token ids (text ones are refused)", tok_path);
        if (chat && rt_chat_problem(chat))
            base_log(0, "%s: /v1/chat/completions refuses requests (give --chat-template FILE)", rt_chat_problem(chat));
        else if (chat)
            base_log(0, "chat template: %s", rt_chat_source(chat));
        else
            base_log(0, "no chat template: /v1/chat/completions refuses requests (give --chat-template FILE)");
        s.tok = tok;
        s.chat = chat;
        srv_watchdog_set_ranks(&s.wd, ranks, t->world_size);
        ranks = NULL; /* the watchdog's now */
        the_server = &s;
        struct sigaction sa = {.sa_sigaction = on_signal, .sa_flags = SA_SIGINFO};
        sigemptyset(&sa.sa_mask);
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGUSR1, &sa, NULL);
        pthread_mutex_lock(&s.mu);
        s.ready = true;
        pthread_mutex_unlock(&s.mu);
        base_log(0, "ready on %s (pid %d)%s%s%s", s.bound, (int)getpid(), token ? ", auth token required" : "",
                 s.http_bound[0] ? "; HTTP (OpenAI API) on " : "", s.http_bound);
        if (a->ready_file) { /* written whole, then renamed: a reader never sees half a line */
            char tmpf[4096];
            snprintf(tmpf, sizeof tmpf, "%s.tmp", a->ready_file);
            FILE *rf = fopen(tmpf, "w");
            if (!rf || fprintf(rf, "%s %d%s%s\n", s.bound, (int)getpid(), s.http_bound[0] ? " " : "", s.http_bound) < 0 ||
                fclose(rf) != 0 ||
                rename(tmpf, a->ready_file) != 0)
                base_log(0, "cannot write --ready-file %s: %s", a->ready_file, strerror(errno));
        }
        rc = srv_engine_loop(&s, e, &so, &err);
        if (rc)
            job_abort(c, prog, &err);
        if (rt_engine_finish(e, &err))
            job_abort(c, prog, &err);
        if (net_started)
            pthread_join(net_thread, NULL);
        the_server = NULL;
        srv_shared_destroy(&s);
        base_log(0, "stopped");
    }
    rt_engine_destroy(e);
    job_model_free(&jm);
    free(token);
    rt_tokenizer_free(tok);
    rt_chat_free(chat);
    free(ranks);
    return 0;
}

int main(int argc, char **argv)
{
    int provided;
    MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    server_args a;
    base_err err = {{0}};
    comm *c = NULL;
    int rc = parse(&a, argc, argv, &err), stage = 0, tp_rank = 0;
    if (rc == 0)
        plan_place(a.job.tp, rank, &stage, &tp_rank);
    if (rc == 0 && comm_mpi_create(&c, a.job.tp, a.job.pp, stage, tp_rank, &err) != 0)
        rc = -1;
    if (rc < 0 && rank == 0)
        fprintf(stderr, "dinfer-server: %s\n", err.msg);
    int status = rc < 0 ? 1 : 0;
    if (rc == 0)
        status = serve(&a, c);
    job_flags_free(&a.job);
    comm_destroy(c);
    MPI_Finalize();
    return status;
}
