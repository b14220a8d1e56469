#include "runtime/st_writer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHUNK_BYTES ((size_t)4 << 20)

size_t rt_st_spec_bytes(const rt_st_spec *t)
{
    size_t n = t->raw_dtype ? (size_t)t->raw_size : rt_dtype_size(t->dtype);
    for (int i = 0; i < t->n_dims; i++)
        n *= (size_t)t->shape[i];
    return n;
}

/* The JSON header, padded with spaces to a multiple of 8 bytes as the format's writer does. */
static char *make_header(const rt_st_spec *ts, int n, size_t *hlen)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(o, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(o, ts[i].name);
        cJSON_AddStringToObject(e, "dtype", ts[i].raw_dtype ? ts[i].raw_dtype : rt_dtype_name(ts[i].dtype));
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int d = 0; d < ts[i].n_dims; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)ts[i].shape[d]));
        size_t nb = rt_st_spec_bytes(&ts[i]);
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + nb)));
        off += nb;
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text)
        return NULL;
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
    char *h = malloc(padded + 1);
    if (h) {
        memcpy(h, text, len);
        memset(h + len, ' ', padded - len);
        h[padded] = 0;
        *hlen = padded;
    }
    cJSON_free(text);
    return h;
}

static int write_all(int fd, const void *buf, size_t n, off_t off)
{
    const char *p = buf;
    while (n) {
        ssize_t w = pwrite(fd, p, n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

int rt_st_write(const char *path, const rt_st_spec *ts, int n, rt_st_fill_fn fill, void *ctx, base_err *err)
{
    size_t hlen = 0;
    char *header = make_header(ts, n, &hlen);
    if (!header)
        return base_errf(err, "%s: out of memory building the header", path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        free(header);
        return base_errf(err, "%s: cannot create: %s", path, strerror(errno));
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
    int failed = write_all(fd, len8, 8, 0) || write_all(fd, header, hlen, 8);
    free(header);
    /* a flat list of (tensor, chunk) jobs so threads share big and small tensors alike */
    size_t n_jobs = 0;
    for (int i = 0; i < n; i++)
        n_jobs += (rt_st_spec_bytes(&ts[i]) + CHUNK_BYTES - 1) / CHUNK_BYTES;
    int *job_tensor = malloc((n_jobs ? n_jobs : 1) * sizeof *job_tensor);
    size_t *job_off = malloc((n_jobs ? n_jobs : 1) * sizeof *job_off);
    off_t *tensor_pos = malloc((n ? (size_t)n : 1) * sizeof *tensor_pos);
    if (!job_tensor || !job_off || !tensor_pos) {
        failed = 1;
    } else {
        off_t pos = 8 + (off_t)hlen;
        for (int i = 0, j = 0; i < n; i++) {
            size_t nb = rt_st_spec_bytes(&ts[i]);
            tensor_pos[i] = pos;
            pos += (off_t)nb;
            for (size_t o = 0; o < nb; o += CHUNK_BYTES, j++) {
                job_tensor[j] = i;
                job_off[j] = o;
            }
        }
#pragma omp parallel reduction(| : failed)
        {
            void *buf = malloc(CHUNK_BYTES);
            failed |= !buf;
#pragma omp for schedule(dynamic)
            for (size_t j = 0; j < n_jobs; j++) {
                if (!buf)
                    continue;
                const rt_st_spec *t = &ts[job_tensor[j]];
                size_t len = rt_st_spec_bytes(t) - job_off[j];
                len = len < CHUNK_BYTES ? len : CHUNK_BYTES;
                fill(ctx, job_tensor[j], t, job_off[j], buf, len);
                failed |= write_all(fd, buf, len, tensor_pos[job_tensor[j]] + (off_t)job_off[j]);
            }
            free(buf);
        }
    }
    free(job_tensor);
    free(job_off);
    free(tensor_pos);
    if (close(fd) != 0)
        failed = 1;
    if (failed)
        return base_errf(err, "%s: write failed (disk full, I/O error or out of memory)", path);
    return 0;
}

typedef struct sub_fill {
    rt_st_fill_fn fill;
    void *ctx;
    int first; /* index of the shard's first tensor in the whole list */
} sub_fill;

static void fill_shard(void *ctx, int index, const rt_st_spec *t, size_t off, void *dst, size_t n)
{
    sub_fill *s = ctx;
    s->fill(s->ctx, s->first + index, t, off, dst, n);
}

int rt_st_write_folder(const char *dir, const rt_st_spec *ts, int n, size_t shard_bytes, rt_st_fill_fn fill,
                       void *ctx, base_err *err)
{
    char path[4096];
    size_t total = 0;
    for (int i = 0; i < n; i++)
        total += rt_st_spec_bytes(&ts[i]);
    if (total <= shard_bytes) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        return rt_st_write(path, ts, n, fill, ctx, err);
    }
    /* shard boundaries: start a new file when the next tensor would push it past shard_bytes */
    int *start = malloc(((size_t)n + 1) * sizeof *start), n_shards = 0;
    if (!start)
        return base_errf(err, "out of memory");
    size_t cur = 0;
    for (int i = 0; i < n; i++) {
        size_t nb = rt_st_spec_bytes(&ts[i]);
        if (i == 0 || (cur > 0 && cur + nb > shard_bytes)) {
            start[n_shards++] = i;
            cur = 0;
        }
        cur += nb;
    }
    start[n_shards] = n;
    cJSON *index = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(index, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)total);
    cJSON *map = cJSON_AddObjectToObject(index, "weight_map");
    int rc = 0;
    for (int s = 0; s < n_shards && rc == 0; s++) {
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        snprintf(path, sizeof path, "%s/%s", dir, fname);
        for (int i = start[s]; i < start[s + 1]; i++)
            cJSON_AddStringToObject(map, ts[i].name, fname);
        sub_fill sf = {fill, ctx, start[s]};
        rc = rt_st_write(path, ts + start[s], start[s + 1] - start[s], fill_shard, &sf, err);
    }
    free(start);
    if (rc == 0) {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        char *text = cJSON_Print(index);
        FILE *f = fopen(path, "w");
        if (!text || !f || fputs(text, f) < 0)
            rc = base_errf(err, "%s: cannot write: %s", path, strerror(errno));
        if (f && fclose(f) != 0 && rc == 0)
            rc = base_errf(err, "%s: cannot write: %s", path, strerror(errno));
        cJSON_free(text);
    }
    cJSON_Delete(index);
    return rc;
}
