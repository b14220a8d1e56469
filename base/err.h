/* The one error type of dinfer's library code (base, proto, comm, runtime, partition): functions
 * return 0 on success or -1 on failure and fill the caller's base_err with one line that names the
 * thing (file, field, tensor, rank, call) and the problem. Only executables decide to exit. */
#ifndef DINFER_BASE_ERR_H
#define DINFER_BASE_ERR_H

#include <stdarg.h>

#define BASE_ERR_LEN 512

typedef struct base_err {
    char msg[BASE_ERR_LEN];
} base_err;

/* Formats into err (when err is not NULL) and returns -1, so callers can `return base_errf(...)`. */
int base_errf(base_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message (used to add the file or rank a failure belongs to). */
void base_err_prefix(base_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copies src's message into err (NULL-safe) and returns -1. */
int base_err_copy(base_err *err, const base_err *src);

#endif
