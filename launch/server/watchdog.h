/* The coordinator's watchdog over the steps in flight and the ranks of the job. The engine loop
 * marks each step's start and end (several may be in flight); the network thread asks for a
 * verdict every tick. The job cannot go on when:
 *   - a rank on rank 0's host is gone (killed, out of memory): seen within a tick, whatever is
 *     running, from the process table;
 *   - a step has run past --comm-timeout: a rank is lost or stuck (stopped, hung in a collective);
 *   - after a stop signal a step runs well past the longest step so far (a lost rank elsewhere).
 * The verdict names the lost ranks (host, pid, gone or stopped) when they are on this host, else
 * the candidates on the other hosts. */
#ifndef DINFER_LAUNCH_SERVER_WATCHDOG_H
#define DINFER_LAUNCH_SERVER_WATCHDOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#define SRV_MAX_IN_FLIGHT 64 /* steps the engine may have in flight at once */

/* Where one rank of the job runs. */
typedef struct srv_rank_info {
    char host[64];
    int pid;
} srv_rank_info;

typedef struct srv_watchdog {
    pthread_mutex_t mu;
    double started[SRV_MAX_IN_FLIGHT]; /* monotonic start of each slot's step; 0 = free */
    double longest;                    /* seconds, of any step so far */
    double timeout;                    /* --comm-timeout */
    srv_rank_info *ranks;              /* (world), owned */
    int world;
    char host[64];                     /* rank 0's */
    double next_probe;
} srv_watchdog;

void srv_watchdog_init(srv_watchdog *w, double timeout);
void srv_watchdog_destroy(srv_watchdog *w);
/* Takes ownership of ranks (world entries; NULL when unknown). */
void srv_watchdog_set_ranks(srv_watchdog *w, srv_rank_info *ranks, int world);

/* A step starts: returns its slot for step_end (-1 when SRV_MAX_IN_FLIGHT are running). */
int srv_watchdog_step_begin(srv_watchdog *w, double now);
void srv_watchdog_step_end(srv_watchdog *w, int slot, double now);
/* Steps in flight. */
int srv_watchdog_in_flight(srv_watchdog *w);

/* 0 while the job can go on; 1 when it cannot, with why (one line) in msg. stop_at is when a stop
 * signal was noticed (0: none). Probes local ranks at most every 0.2 s. */
int srv_watchdog_check(srv_watchdog *w, double now, double stop_at, char *msg, size_t n);

/* The message for a job the MPI runtime is ending (a SIGTERM from mpirun or orted): names local
 * ranks found gone, else says what mpirun does and names the ranks on other hosts. */
void srv_watchdog_runtime_kill(srv_watchdog *w, int sender_pid, const char *sender, char *msg, size_t n);

#endif
