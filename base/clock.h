/* Clocks: monotonic seconds for durations and deadlines, and the wall clock for log lines. */
#ifndef DINFER_BASE_CLOCK_H
#define DINFER_BASE_CLOCK_H

/* Monotonic seconds (CLOCK_MONOTONIC): for durations, deadlines and timeouts. */
double base_now(void);

/* Sleeps for s seconds (restarting after signals); for back-off, never for synchronisation. */
void base_sleep(double s);

#endif
