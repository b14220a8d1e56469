#include "launch/cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cli_int(const char *flag, const char *s, long lo, long hi, long *out, base_err *err)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno)
        return base_errf(err, "%s: \"%.64s\" is not an integer", flag, s);
    if (v < lo || v > hi)
        return base_errf(err, "%s: %ld is outside [%ld, %ld]", flag, v, lo, hi);
    *out = v;
    return 0;
}

int cli_u64(const char *flag, const char *s, uint64_t *out, base_err *err)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || errno || *s == '-')
        return base_errf(err, "%s: \"%.64s\" is not a non-negative integer", flag, s);
    *out = v;
    return 0;
}

int cli_float(const char *flag, const char *s, double lo, double hi, double *out, base_err *err)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v))
        return base_errf(err, "%s: \"%.64s\" is not a number", flag, s);
    if (v < lo || v > hi)
        return base_errf(err, "%s: %g is outside [%g, %g]", flag, v, lo, hi);
    *out = v;
    return 0;
}

int cli_size(const char *flag, const char *s, uint64_t *out, base_err *err)
{
    static const struct { const char *unit; double mult; } units[] = {
        {"", 1}, {"B", 1}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"KiB", 1024.0},
        {"MiB", 1048576.0}, {"GiB", 1073741824.0},
    };
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v > 0))
        return base_errf(err, "%s: \"%.64s\" is not a positive size such as 5GB or 500MiB", flag, s);
    for (size_t i = 0; i < sizeof units / sizeof *units; i++)
        if (strcmp(end, units[i].unit) == 0 && v * units[i].mult < 1.8e19) {
            *out = (uint64_t)(v * units[i].mult);
            return 0;
        }
    return base_errf(err, "%s: \"%.64s\" is not a positive size such as 5GB or 500MiB", flag, s);
}

int cli_int_list(const char *flag, const char *s, int32_t **out, int *n, base_err *err)
{
    int cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    int32_t *v = malloc((size_t)cap * sizeof *v);
    if (!v)
        return base_errf(err, "%s: out of memory", flag);
    int k = 0;
    const char *p = s;
    for (;;) {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < INT32_MIN || x > INT32_MAX || (*end && *end != ',')) {
            free(v);
            return base_errf(err, "%s: \"%.64s\" is not a comma-separated list of token ids", flag, s);
        }
        v[k++] = (int32_t)x;
        if (!*end)
            break;
        p = end + 1;
    }
    *out = v;
    *n = k;
    return 0;
}

