#include "launch/server/watchdog.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void srv_watchdog_init(srv_watchdog *w, double timeout)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    w->timeout = timeout;
    gethostname(w->host, sizeof w->host - 1);
}

void srv_watchdog_destroy(srv_watchdog *w)
{
    free(w->ranks);
    pthread_mutex_destroy(&w->mu);
}

void srv_watchdog_set_ranks(srv_watchdog *w, srv_rank_info *ranks, int world)
{
    pthread_mutex_lock(&w->mu);
    free(w->ranks);
    w->ranks = ranks;
    w->world = ranks ? world : 0;
    pthread_mutex_unlock(&w->mu);
}

int srv_watchdog_step_begin(srv_watchdog *w, double now)
{
    int slot = -1;
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < SRV_MAX_IN_FLIGHT && slot < 0; i++)
        if (w->started[i] == 0) {
            w->started[i] = now > 0 ? now : 1e-9;
            slot = i;
        }
    pthread_mutex_unlock(&w->mu);
    return slot;
}

void srv_watchdog_step_end(srv_watchdog *w, int slot, double now)
{
    if (slot < 0 || slot >= SRV_MAX_IN_FLIGHT)
        return;
    pthread_mutex_lock(&w->mu);
    if (now - w->started[slot] > w->longest)
        w->longest = now - w->started[slot];
    w->started[slot] = 0;
    pthread_mutex_unlock(&w->mu);
}

int srv_watchdog_in_flight(srv_watchdog *w)
{
    int n = 0;
    pthread_mutex_lock(&w->mu);
    for (int i = 0; i < SRV_MAX_IN_FLIGHT; i++)
        n += w->started[i] != 0;
    pthread_mutex_unlock(&w->mu);
    return n;
}

/* What is wrong with a process on this host: gone (or a zombie), stopped (SIGSTOP, a debugger),
 * or NULL while it runs. */
static const char *process_state(int pid)
{
    if (pid <= 0)
        return NULL;
    if (kill(pid, 0) != 0)
        return "gone";
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return "gone";
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    const char *paren = strrchr(buf, ')'); /* "pid (comm) S ..." */
    if (!paren || paren[1] != ' ')
        return NULL;
    char st = paren[2];
    return st == 'Z' || st == 'X' ? "gone" : st == 'T' || st == 't' ? "stopped" : NULL;
}

/* "rank R (host H, pid P, state)" for each local rank in one of the states wanted (gone only, or
 * gone and stopped); returns how many. Called with w->mu held. */
static int local_lost(const srv_watchdog *w, bool stopped_too, char *out, size_t n)
{
    size_t used = 0;
    int found = 0;
    out[0] = 0;
    for (int r = 1; r < w->world; r++) {
        if (strcmp(w->ranks[r].host, w->host) != 0)
            continue;
        const char *st = process_state(w->ranks[r].pid);
        if (!st || (!stopped_too && strcmp(st, "gone") != 0))
            continue;
        found++;
        if (used + 96 < n)
            used += (size_t)snprintf(out + used, n - used, "%srank %d (host %s, pid %d, %s)", used ? ", " : "", r,
                                     w->ranks[r].host, w->ranks[r].pid, st);
    }
    return found;
}

/* "ranks 2 (hostB), 3 (hostB)" of the ranks on other hosts; how many. Called with w->mu held. */
static int remote_ranks(const srv_watchdog *w, char *out, size_t n)
{
    size_t used = 0;
    int found = 0;
    out[0] = 0;
    for (int r = 1; r < w->world; r++) {
        if (strcmp(w->ranks[r].host, w->host) == 0)
            continue;
        found++;
        if (used + 80 < n)
            used += (size_t)snprintf(out + used, n - used, "%s%d (%s)", used ? ", " : "ranks ", r, w->ranks[r].host);
    }
    return found;
}

int srv_watchdog_check(srv_watchdog *w, double now, double stop_at, char *msg, size_t n)
{
    char lost[400];
    int rc = 0;
    pthread_mutex_lock(&w->mu);
    /* a local rank that is gone ends the job at once, stepping or not */
    if (now >= w->next_probe) {
        w->next_probe = now + 0.2;
        if (local_lost(w, false, lost, sizeof lost) > 0) {
            snprintf(msg, n, "the job lost %s: it is stopping", lost);
            rc = 1;
        }
    }
    double oldest = 0;
    for (int i = 0; i < SRV_MAX_IN_FLIGHT; i++)
        if (w->started[i] != 0 && (oldest == 0 || w->started[i] < oldest))
            oldest = w->started[i];
    if (rc == 0 && oldest != 0) {
        double grace = 3 * w->longest > 0.25 ? 3 * w->longest : 0.25;
        bool stuck = now - oldest > w->timeout ||
                     (stop_at > 0 && now - (oldest > stop_at ? oldest : stop_at) > grace);
        if (stuck) {
            rc = 1;
            if (local_lost(w, true, lost, sizeof lost) > 0) {
                snprintf(msg, n, "the job lost %s: it is stopping", lost);
            } else {
                int remote = remote_ranks(w, lost, sizeof lost);
                snprintf(msg, n, "a step has not finished in %.1f s: one of %s was lost or is stuck; the job is stopping",
                         now - oldest, remote ? lost : "the other ranks");
            }
        }
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void srv_watchdog_runtime_kill(srv_watchdog *w, int sender_pid, const char *sender, char *msg, size_t n)
{
    char lost[400];
    pthread_mutex_lock(&w->mu);
    if (local_lost(w, true, lost, sizeof lost) > 0) {
        snprintf(msg, n, "the job lost %s: it is stopping", lost);
    } else {
        char remote[400];
        int nr = remote_ranks(w, remote, sizeof remote);
        snprintf(msg, n,
                 "%s (pid %d) is ending the job, as it does when a rank fails or it is itself signalled%s%s; requests "
                 "in flight end here (to drain them first, signal rank 0 or send SIGUSR1 to mpirun)",
                 sender, sender_pid, nr ? ": the ranks on other hosts are " : "", nr ? remote : "");
    }
    pthread_mutex_unlock(&w->mu);
}
