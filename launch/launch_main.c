/* dinfer-launch: starts dinfer-server on a cluster in one command. Given a model folder, the hosts
 * (a list, a hostfile, or the Slurm allocation) and the GPUs of each host, it chooses the split
 * (tensor parallelism inside a host, pipeline parallelism across hosts, checked by the partition
 * plan), prints it, and runs dinfer-server through mpirun (a hostfile, one rank per GPU, ranks
 * packed by host) or srun. --tp/--pp override the choice; --dry-run prints the plan and command.
 *
 * It stays as the launcher's parent: SIGTERM or SIGINT asks rank 0 for a drain at once (SIGUSR1,
 * which mpirun and srun forward to every rank; the others ignore it), and dinfer-launch exits with
 * the job's status, 0 after a clean drain. A second signal stops the job (SIGTERM to the launcher),
 * a third kills it. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "launch/cli.h"
#include "partition/plan.h"
#ifdef DINFER_HAVE_CUDA
#include "runtime/cuda/cuda_device.h"
#endif

#define MAX_HOSTS 4096
#define MAX_ARGS 512

typedef struct launch_args {
    const char *model, *hosts_list, *hostfile, *launcher, *server;
    int gpus_per_host, tp, pp;
    bool dry_run;
    char **server_args; /* after "--": passed to dinfer-server */
    int n_server_args;
} launch_args;

typedef struct hostset {
    char *names[MAX_HOSTS];
    int n;
    bool from_slurm;
} hostset;

static void usage(FILE *f)
{
    fprintf(f,
            "usage: dinfer-launch --model DIR [--hosts h1,h2 | --hostfile F] [--gpus-per-host N]\n"
            "                     [--tp T --pp P] [--launcher mpirun|srun] [--dry-run] [-- SERVER OPTIONS]\n"
            "Hosts default to the Slurm allocation (SLURM_JOB_NODELIST), else this host. GPUs per host\n"
            "default to SLURM_NTASKS_PER_NODE, else the GPUs visible here, else 1 (one CPU rank).\n"
            "Options after -- go to dinfer-server (--port, --host, --auth-token-file, --dtype, ...).\n");
}

static int add_host(hostset *h, const char *name, base_err *err)
{
    if (!*name)
        return 0;
    if (h->n == MAX_HOSTS)
        return base_errf(err, "more than %d hosts", MAX_HOSTS);
    for (const char *p = name; *p; p++)
        if (!(*p == '-' || *p == '.' || *p == '_' || *p == ':' || (*p >= '0' && *p <= '9') ||
              (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
            return base_errf(err, "host name \"%.64s\" has a character that is not allowed", name);
    if (!(h->names[h->n++] = strdup(name)))
        return base_errf(err, "out of memory");
    return 0;
}

static int read_hosts(const launch_args *a, hostset *h, base_err *err)
{
    char line[512];
    if (a->hosts_list) {
        char *copy = strdup(a->hosts_list), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
            if (add_host(h, t, err)) {
                free(copy);
                return -1;
            }
        free(copy);
    } else if (a->hostfile) {
        FILE *f = fopen(a->hostfile, "r");
        if (!f)
            return base_errf(err, "%s: cannot open: %s", a->hostfile, strerror(errno));
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, " \t#\r\n")] = 0; /* "host slots=N  # comment": the host */
            if (add_host(h, line, err)) {
                fclose(f);
                return -1;
            }
        }
        fclose(f);
    } else if (getenv("SLURM_JOB_NODELIST")) {
        /* the allocation's compressed node list ("node[01-04]"), expanded by scontrol */
        FILE *p = popen("scontrol show hostnames \"$SLURM_JOB_NODELIST\"", "r");
        if (!p)
            return base_errf(err, "cannot run scontrol to read SLURM_JOB_NODELIST");
        while (fgets(line, sizeof line, p)) {
            line[strcspn(line, "\r\n")] = 0;
            if (add_host(h, line, err)) {
                pclose(p);
                return -1;
            }
        }
        if (pclose(p) != 0 || h->n == 0)
            return base_errf(err, "scontrol show hostnames \"%s\" failed", getenv("SLURM_JOB_NODELIST"));
        h->from_slurm = true;
    } else {
        char self[256] = "localhost";
        gethostname(self, sizeof self - 1);
        if (add_host(h, self, err))
            return -1;
    }
    if (h->n == 0)
        return base_errf(err, "no hosts given");
    return 0;
}

static int gpus_per_host(const launch_args *a, base_err *err)
{
    if (a->gpus_per_host > 0)
        return a->gpus_per_host;
    const char *s = getenv("SLURM_NTASKS_PER_NODE");
    long v;
    if (s && *s) {
        char first[32];
        snprintf(first, sizeof first, "%.*s", (int)strcspn(s, "(,"), s); /* "4(x2)" or "4,4" */
        if (cli_int("SLURM_NTASKS_PER_NODE", first, 1, 4096, &v, err))
            return -1;
        return (int)v;
    }
#ifdef DINFER_HAVE_CUDA
    int n = rt_cuda_device_count();
    if (n > 0)
        return n;
#endif
    return 1;
}

/* Appends a shell-quoted word to the printed command. */
static void print_word(const char *w)
{
    bool plain = *w != 0;
    for (const char *p = w; *p; p++)
        plain &= (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
                 strchr("-_./:=,@%+", *p) != NULL;
    if (plain) {
        printf(" %s", w);
        return;
    }
    printf(" '");
    for (const char *p = w; *p; p++)
        printf(*p == '\'' ? "'\\''" : "%c", *p);
    printf("'");
}

static const char *default_server(char *buf, size_t n)
{
    char self[PATH_MAX];
    ssize_t l = readlink("/proc/self/exe", self, sizeof self - 1);
    if (l <= 0)
        return "dinfer-server";
    self[l] = 0;
    char *slash = strrchr(self, '/');
    if (!slash)
        return "dinfer-server";
    *slash = 0;
    snprintf(buf, n, "%s/dinfer-server", self);
    return buf;
}

static double drain_seconds(const launch_args *a)
{
    for (int i = 0; i + 1 < a->n_server_args; i++)
        if (strcmp(a->server_args[i], "--drain-seconds") == 0)
            return atof(a->server_args[i + 1]);
    return 30;
}

static int supervise(char **argv, base_err *err);

static int run(launch_args *a, base_err *err)
{
    hostset h = {0};
    int rc = -1;
    rt_config cfg;
    plan p = {0};
    char hostfile[] = "/tmp/dinfer-hosts-XXXXXX";
    int hfd = -1;
    if (read_hosts(a, &h, err) || rt_config_load(&cfg, a->model, err))
        goto out;
    int per = gpus_per_host(a, err);
    if (per < 0)
        goto out;
    int tp = a->tp, pp = a->pp;
    if (tp && pp) {
        if ((long)tp * pp > (long)h.n * per) {
            base_errf(err, "--tp %d x --pp %d needs %ld ranks; %d host(s) x %d GPU(s) have %ld", tp, pp, (long)tp * pp,
                    h.n, per, (long)h.n * per);
            goto out;
        }
        if (per % tp != 0 && tp < per) {
            base_errf(err, "--tp %d does not divide the %d GPUs of a host: a tp group would span hosts", tp, per);
            goto out;
        }
    } else if (tp || pp) {
        base_errf(err, "give both --tp and --pp, or neither");
        goto out;
    } else if (plan_choose(&cfg, h.n, per, &tp, &pp, err)) {
        goto out;
    }
    if (plan_make(&p, &cfg, tp, pp, NULL, cfg.dtype, err))
        goto out;
    const int world = tp * pp, ranks_per_host = world < per ? world : per;
    const int hosts_used = (world + ranks_per_host - 1) / ranks_per_host;
    printf("dinfer-launch: %s: %s, %d layers, %d heads (%d KV)\n", a->model, rt_arch_name(cfg.arch), cfg.n_layers,
           cfg.n_heads, cfg.n_kv_heads);
    printf("dinfer-launch: %d host(s) x %d GPU(s): tp=%d inside a host, pp=%d, %d rank(s) on %d host(s)%s\n", h.n, per,
           tp, pp, world, hosts_used, h.from_slurm ? " (the Slurm allocation)" : "");
    for (int r = 0; r < world; r++) {
        const plan_rank *pr = &p.ranks[r];
        printf("  rank %-4d host %-20s stage %-3d tp %-3d layers %d-%d, weights %.1f MiB\n", r, h.names[r / ranks_per_host],
               pr->stage, pr->tp_rank, pr->shard.layer_begin, pr->shard.layer_end - 1,
               (double)pr->weight_bytes / (1 << 20));
    }
    /* the command */
    char *argv[MAX_ARGS];
    int n = 0;
    char np[16], ppr[48], tps[16], pps[16], kill_after[16], nodes[48], per_s[48], srv_buf[PATH_MAX];
    const char *server = a->server ? a->server : default_server(srv_buf, sizeof srv_buf);
    snprintf(np, sizeof np, "%d", world);
    snprintf(tps, sizeof tps, "%d", tp);
    snprintf(pps, sizeof pps, "%d", pp);
    bool srun = a->launcher && strcmp(a->launcher, "srun") == 0;
    if (srun) {
        snprintf(nodes, sizeof nodes, "--nodes=%d", hosts_used);
        snprintf(per_s, sizeof per_s, "--ntasks-per-node=%d", ranks_per_host);
        snprintf(ppr, sizeof ppr, "--ntasks=%d", world);
        const char *pre[] = {"srun", "--mpi=pmix", "--kill-on-bad-exit=1", nodes, per_s, ppr};
        for (size_t i = 0; i < sizeof pre / sizeof *pre; i++)
            argv[n++] = (char *)pre[i];
    } else {
        argv[n++] = "mpirun";
        if (!h.from_slurm) { /* inside an allocation Open MPI reads the hosts from Slurm itself */
            hfd = mkstemp(hostfile);
            FILE *hf = hfd >= 0 ? fdopen(hfd, "w") : NULL;
            if (!hf) {
                base_errf(err, "cannot write a hostfile in /tmp: %s", strerror(errno));
                goto out;
            }
            for (int i = 0; i < hosts_used; i++)
                fprintf(hf, "%s slots=%d\n", h.names[i], ranks_per_host);
            fclose(hf);
            argv[n++] = "--hostfile";
            argv[n++] = hostfile;
        }
        snprintf(ppr, sizeof ppr, "ppr:%d:node", ranks_per_host);
        /* time for rank 0 to drain after SIGTERM before mpirun's SIGKILL */
        snprintf(kill_after, sizeof kill_after, "%.0f", drain_seconds(a) + 10);
        const char *pre[] = {"-np", np, "--map-by", ppr, "--bind-to", "none", "--mca", "odls_base_sigkill_timeout",
                             kill_after};
        for (size_t i = 0; i < sizeof pre / sizeof *pre; i++)
            argv[n++] = (char *)pre[i];
    }
    const char *srv[] = {server, "--model", a->model, "--tp", tps, "--pp", pps};
    for (size_t i = 0; i < sizeof srv / sizeof *srv; i++)
        argv[n++] = (char *)srv[i];
    for (int i = 0; i < a->n_server_args && n < MAX_ARGS - 1; i++)
        argv[n++] = a->server_args[i];
    argv[n] = NULL;
    printf("dinfer-launch: command:");
    for (int i = 0; i < n; i++)
        print_word(argv[i]);
    printf("\n");
    fflush(stdout);
    if (a->dry_run) {
        if (hfd >= 0)
            unlink(hostfile);
        rc = 0;
        goto out;
    }
    rc = supervise(argv, err);
out:
    plan_free(&p);
    for (int i = 0; i < h.n; i++)
        free(h.names[i]);
    return rc;
}

static volatile sig_atomic_t signals_seen;

static void on_stop_signal(int sig)
{
    (void)sig;
    signals_seen++;
}


/* Runs the launcher as a child in its own process group (a terminal's Ctrl-C reaches only us, and
 * we turn it into a drain), stdin from /dev/null, and relays stop signals. Returns the launcher's
 * exit status (128 + N when a signal N ended it), or -1 when it cannot be started. */
static int supervise(char **argv, base_err *err)
{
    const pid_t parent = getpid();
    pid_t child = fork();
    if (child < 0)
        return base_errf(err, "cannot start %s: %s", argv[0], strerror(errno));
    if (child == 0) {
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* dinfer-launch killed: the job does not linger */
        if (getppid() != parent)
            _exit(1);
        int null = open("/dev/null", O_RDONLY);
        if (null >= 0)
            dup2(null, 0);
        execvp(argv[0], argv);
        fprintf(stderr, "dinfer-launch: cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    setpgid(child, child);
    struct sigaction sa = {.sa_handler = on_stop_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* one stop may arrive as several signals at once (Slurm signals every process of the job, the
     * batch script passes its own on): those within 2 s of the first are the same request */
    int relayed = 0, status = 0;
    double first = 0;
    for (;;) {
        pid_t w = waitpid(child, &status, 0);
        if (w == child)
            break;
        if (w < 0 && errno != EINTR)
            return base_errf(err, "waiting for %s: %s", argv[0], strerror(errno));
        while (relayed < signals_seen) {
            if (relayed == 1 && base_now() - first < 2.0) {
                signals_seen = 1;
                break;
            }
            relayed++;
            if (relayed == 1) {
                first = base_now();
                fprintf(stderr, "dinfer-launch: stopping: asking rank 0 to drain (SIGUSR1 through %s); a second "
                                "signal stops the job at once\n", argv[0]);
                kill(child, SIGUSR1);
            } else if (relayed == 2) {
                fprintf(stderr, "dinfer-launch: stopping the job (SIGTERM to %s)\n", argv[0]);
                kill(child, SIGTERM);
            } else {
                kill(-child, SIGKILL);
            }
        }
    }
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
}

int main(int argc, char **argv)
{
    enum { O_HOSTS = 256, O_HOSTFILE, O_GPH, O_TP, O_PP, O_LAUNCHER, O_SERVER, O_DRY };
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'}, {"hosts", required_argument, 0, O_HOSTS},
        {"hostfile", required_argument, 0, O_HOSTFILE}, {"gpus-per-host", required_argument, 0, O_GPH},
        {"tp", required_argument, 0, O_TP}, {"pp", required_argument, 0, O_PP},
        {"launcher", required_argument, 0, O_LAUNCHER}, {"server", required_argument, 0, O_SERVER},
        {"dry-run", no_argument, 0, O_DRY}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0},
    };
    launch_args a = {0};
    base_err err = {{0}};
    int o, li = 0, rc = 0;
    long v;
    while (rc == 0 && (o = getopt_long(argc, argv, "+m:h", opts, &li)) != -1) {
        switch (o) {
        case 'm': a.model = optarg; break;
        case O_HOSTS: a.hosts_list = optarg; break;
        case O_HOSTFILE: a.hostfile = optarg; break;
        case O_GPH: rc = cli_int("--gpus-per-host", optarg, 1, 4096, &v, &err); a.gpus_per_host = (int)v; break;
        case O_TP: rc = cli_int("--tp", optarg, 1, PLAN_MAX_TP, &v, &err); a.tp = (int)v; break;
        case O_PP: rc = cli_int("--pp", optarg, 1, PLAN_MAX_PP, &v, &err); a.pp = (int)v; break;
        case O_LAUNCHER:
            a.launcher = optarg;
            if (strcmp(optarg, "mpirun") && strcmp(optarg, "srun"))
                rc = base_errf(&err, "--launcher: \"%.16s\" is not mpirun or srun", optarg);
            break;
        case O_SERVER: a.server = optarg; break;
        case O_DRY: a.dry_run = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); rc = base_errf(&err, "unknown or incomplete option (see above)");
        }
    }
    if (rc == 0 && optind < argc && strcmp(argv[optind - 1], "--") != 0 && strcmp(argv[optind], "--") != 0)
        rc = base_errf(&err, "unexpected argument \"%.64s\" (server options go after --)", argv[optind]);
    if (rc == 0 && optind < argc) {
        int first = strcmp(argv[optind], "--") == 0 ? optind + 1 : optind;
        a.server_args = argv + first;
        a.n_server_args = argc - first;
    }
    if (rc == 0 && !a.model)
        rc = base_errf(&err, "--model DIR is required");
    if (rc == 0 && a.hosts_list && a.hostfile)
        rc = base_errf(&err, "give --hosts or --hostfile, not both");
    if (rc == 0)
        rc = run(&a, &err);
    if (rc < 0) {
        fprintf(stderr, "dinfer-launch: %s\n", err.msg);
        return 1;
    }
    return rc; /* the job's exit status */
}
