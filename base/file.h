/* Reading files that come from outside (config.json, index files, token files, weights): regular
 * files only, never a FIFO, device or directory (a FIFO would block forever, /dev/zero would never
 * end), opened without following the caller into a hang, and bounded in size. Every failure names
 * the path and the reason (a missing file, a symlink loop, a file over the limit). */
#ifndef DINFER_BASE_FILE_H
#define DINFER_BASE_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

/* Opens path read-only if it is a regular file; *fd and *size on success. */
int base_open_regular(const char *path, int *fd, uint64_t *size, base_err *err);

/* Reads a whole regular file of at most max_bytes into a NUL-terminated malloc'd buffer. */
int base_read_file(const char *path, size_t max_bytes, char **out, size_t *len, base_err *err);

/* base_read_file for a file that may be absent: 1 when it is (nothing read), 0 when read, -1 with
 * the reason otherwise. */
int base_read_file_if_present(const char *path, size_t max_bytes, char **out, size_t *len, base_err *err);

/* 1 when path exists (as anything), 0 when it does not (ENOENT / ENOTDIR), -1 with the reason for
 * anything else (a symlink loop, no permission): "missing" is said only of what is missing. */
int base_path_exists(const char *path, base_err *err);

#endif
