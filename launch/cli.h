/* Command-line helpers shared by the executables: strict number parsing that names the flag, and
 * the one-line error convention (program: message). */
#ifndef DINFER_LAUNCH_CLI_H
#define DINFER_LAUNCH_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "base/err.h"

/* Each parses the whole of s or fails with "--flag: ..." in err. */
int cli_int(const char *flag, const char *s, long lo, long hi, long *out, base_err *err);
int cli_u64(const char *flag, const char *s, uint64_t *out, base_err *err);
int cli_float(const char *flag, const char *s, double lo, double hi, double *out, base_err *err);
/* A byte size: a plain number of bytes, or with a unit: KB, MB, GB (powers of 1000, as Hugging
 * Face's max_shard_size) or KiB, MiB, GiB. */
int cli_size(const char *flag, const char *s, uint64_t *out, base_err *err);
/* A comma-separated list of token ids: "1,5,9". *out is malloc'd. */
int cli_int_list(const char *flag, const char *s, int32_t **out, int *n, base_err *err);

#endif
