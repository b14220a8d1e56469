#include "base/err.h"

#include <stdio.h>
#include <string.h>

int base_errf(base_err *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void base_err_prefix(base_err *err, const char *fmt, ...)
{
    if (!err)
        return;
    char head[BASE_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(head, sizeof head, fmt, ap);
    va_end(ap);
    char old[BASE_ERR_LEN];
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%s: %s", head, old);
}

int base_err_copy(base_err *err, const base_err *src)
{
    if (err && src && err != src)
        memcpy(err->msg, src->msg, sizeof err->msg);
    return -1;
}
