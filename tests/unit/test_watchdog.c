/* The coordinator's watchdog, against real processes of this host standing in for ranks: a rank
 * gone is named at once (stepping or not), a stopped one once a step outlives --comm-timeout, a
 * step stuck past the grace after a stop signal, and ranks on other hosts named as candidates. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "launch/server/watchdog.h"

static srv_rank_info *roster(int n, const pid_t *pids, const char *other_host)
{
    srv_rank_info *r = calloc((size_t)n, sizeof *r);
    char host[64] = "";
    gethostname(host, sizeof host - 1);
    for (int i = 0; i < n; i++) {
        snprintf(r[i].host, sizeof r[i].host, "%s", pids[i] ? host : other_host);
        r[i].pid = pids[i];
    }
    return r;
}

static pid_t child(void)
{
    pid_t p = fork();
    if (p == 0) { /* dies with the test, and holds none of its output open */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1), dup2(null, 2);
        for (;;)
            pause();
    }
    return p;
}

static void expect(int verdict, const char *msg, const char *needle)
{
    assert_int_equal(verdict, 1);
    if (!strstr(msg, needle))
        fail_msg("\"%s\" does not say \"%s\"", msg, needle);
}

static void test_steps_and_timeout(void **state)
{
    (void)state;
    srv_watchdog w;
    srv_watchdog_init(&w, 0.3);
    char msg[768];
    double t = base_now();
    int a = srv_watchdog_step_begin(&w, t), b = srv_watchdog_step_begin(&w, t + 0.1);
    assert_true(a >= 0 && b >= 0 && a != b);
    assert_int_equal(srv_watchdog_in_flight(&w), 2);
    assert_int_equal(srv_watchdog_check(&w, t + 0.2, 0, msg, sizeof msg), 0);
    srv_watchdog_step_end(&w, a, t + 0.2);
    assert_int_equal(srv_watchdog_in_flight(&w), 1);
    /* the oldest step in flight decides: b began at t + 0.1 */
    assert_int_equal(srv_watchdog_check(&w, t + 0.35, 0, msg, sizeof msg), 0);
    expect(srv_watchdog_check(&w, t + 0.5, 0, msg, sizeof msg), msg, "a step has not finished in 0.4 s");
    srv_watchdog_step_end(&w, b, t + 0.5);
    assert_int_equal(srv_watchdog_check(&w, t + 100, 0, msg, sizeof msg), 0); /* idle: nothing stuck */
    /* after a stop signal a step may run 3 x the longest so far (here 0.4 s: 1.2 s) */
    int c = srv_watchdog_step_begin(&w, t + 200);
    assert_int_equal(srv_watchdog_check(&w, t + 200.2, t + 200.1, msg, sizeof msg), 0);
    w.timeout = 1e9;
    expect(srv_watchdog_check(&w, t + 201.4, t + 200.1, msg, sizeof msg), msg, "the job is stopping");
    srv_watchdog_step_end(&w, c, t + 201.5);
    srv_watchdog_destroy(&w);
}

static void test_ranks(void **state)
{
    (void)state;
    srv_watchdog w;
    srv_watchdog_init(&w, 0.2);
    char msg[768], want[128];
    pid_t kid = child();
    pid_t pids[4] = {getpid(), kid, 0, 0}; /* ranks 2 and 3 on another host */
    srv_watchdog_set_ranks(&w, roster(4, pids, "elsewhere"), 4);
    double t = base_now();
    assert_int_equal(srv_watchdog_check(&w, t, 0, msg, sizeof msg), 0);
    /* a stopped rank is named once a step outlives the timeout, not before */
    kill(kid, SIGSTOP);
    int st;
    waitpid(kid, &st, WUNTRACED); /* stopped for certain */
    int s = srv_watchdog_step_begin(&w, t);
    assert_int_equal(srv_watchdog_check(&w, t + 0.3, 0, msg, sizeof msg), 1);
    snprintf(want, sizeof want, "rank 1 (host %s, pid %d, stopped)", w.host, (int)kid);
    expect(1, msg, want);
    srv_watchdog_step_end(&w, s, t + 0.3);
    /* a rank gone is named at the next probe, with no step running */
    kill(kid, SIGKILL);
    waitpid(kid, NULL, 0);
    expect(srv_watchdog_check(&w, t + 1.0, 0, msg, sizeof msg), msg, "the job lost rank 1");
    snprintf(want, sizeof want, "pid %d, gone", (int)kid);
    expect(1, msg, want);
    srv_watchdog_destroy(&w);
    /* all local ranks alive: a stuck step names the ranks on other hosts */
    srv_watchdog_init(&w, 0.2);
    pid_t live[3] = {getpid(), 0, 0};
    srv_watchdog_set_ranks(&w, roster(3, live, "elsewhere"), 3);
    s = srv_watchdog_step_begin(&w, t);
    expect(srv_watchdog_check(&w, t + 0.5, 0, msg, sizeof msg), msg, "one of ranks 1 (elsewhere), 2 (elsewhere)");
    srv_watchdog_runtime_kill(&w, 4242, "mpirun", msg, sizeof msg);
    expect(1, msg, "mpirun (pid 4242) is ending the job");
    expect(1, msg, "ranks 1 (elsewhere), 2 (elsewhere)");
    srv_watchdog_step_end(&w, s, t + 0.5);
    srv_watchdog_destroy(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steps_and_timeout),
        cmocka_unit_test(test_ranks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
