#include "base/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int base_open_regular(const char *path, int *fd_out, uint64_t *size, base_err *err)
{
    /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return base_errf(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return base_errf(err, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return base_errf(err, "%s: not a regular file (%s)", path,
                         S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a FIFO"
                         : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : S_ISSOCK(st.st_mode) ? "a socket"
                                                                                       : "not a file");
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    *fd_out = fd;
    *size = (uint64_t)st.st_size;
    return 0;
}

int base_read_file(const char *path, size_t max_bytes, char **out, size_t *len, base_err *err)
{
    int fd;
    uint64_t size;
    if (base_open_regular(path, &fd, &size, err))
        return -1;
    if (size > max_bytes) {
        close(fd);
        return base_errf(err, "%s: %llu bytes, over the %zu-byte limit for this file", path,
                         (unsigned long long)size, max_bytes);
    }
    /* the size may change under us: read at most max_bytes, whatever stat said */
    size_t cap = (size_t)size + 1, n = 0;
    char *buf = malloc(cap + 1);
    if (!buf) {
        close(fd);
        return base_errf(err, "%s: out of memory reading %llu bytes", path, (unsigned long long)size);
    }
    for (;;) {
        if (n == cap) {
            if (cap > max_bytes) {
                free(buf);
                close(fd);
                return base_errf(err, "%s: grew past the %zu-byte limit for this file while read", path, max_bytes);
            }
            size_t nc = cap * 2 > max_bytes + 1 ? max_bytes + 1 : cap * 2;
            char *nb = realloc(buf, nc + 1);
            if (!nb) {
                free(buf);
                close(fd);
                return base_errf(err, "%s: out of memory", path);
            }
            buf = nb;
            cap = nc;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(buf);
            close(fd);
            return base_errf(err, "%s: read error: %s", path, strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (n > max_bytes) {
        free(buf);
        return base_errf(err, "%s: over the %zu-byte limit for this file", path, max_bytes);
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

int base_path_exists(const char *path, base_err *err)
{
    struct stat st;
    if (stat(path, &st) == 0)
        return 1;
    if (errno == ENOENT || errno == ENOTDIR)
        return 0;
    return base_errf(err, "%s: %s", path, strerror(errno));
}

int base_read_file_if_present(const char *path, size_t max_bytes, char **out, size_t *len, base_err *err)
{
    const int exists = base_path_exists(path, err);
    if (exists <= 0)
        return exists < 0 ? -1 : 1;
    return base_read_file(path, max_bytes, out, len, err);
}
