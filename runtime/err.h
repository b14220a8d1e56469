/* Error reporting for library code: functions return 0 on success or -1 on failure and fill the
 * caller's rt_err with one line that names the thing (file, field, tensor) and the problem.
 * Only executables decide to exit. */
#ifndef DINFER_RUNTIME_ERR_H
#define DINFER_RUNTIME_ERR_H

#include <stdarg.h>

#define RT_ERR_LEN 512

typedef struct rt_err {
    char msg[RT_ERR_LEN];
} rt_err;

/* Formats into err (when err is not NULL) and returns -1, so callers can `return rt_errf(...)`. */
int rt_errf(rt_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message (used to add the file or rank a failure belongs to). */
void rt_err_prefix(rt_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
