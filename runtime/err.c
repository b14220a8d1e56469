#include "runtime/err.h"

#include <stdio.h>
#include <string.h>

int rt_errf(rt_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void rt_err_prefix(rt_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    char head[RT_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    char old[RT_ERR_LEN];
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", head, old);
}
