#include "runtime/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/file.h"

static const struct {
    const char *name;
    int size;
    int rt; /* rt_dtype, or -1 when weights may not have this type */
} st_dtypes[] = {
    {"F32", 4, RT_F32}, {"F16", 2, RT_F16}, {"BF16", 2, RT_BF16}, {"F64", 8, -1},
    {"I64", 8, -1}, {"U64", 8, -1}, {"I32", 4, -1}, {"U32", 4, -1}, {"I16", 2, -1},
    {"U16", 2, -1}, {"I8", 1, -1}, {"U8", 1, -1}, {"BOOL", 1, -1}, {"F8_E4M3", 1, -1},
    {"F8_E5M2", 1, -1},
};

static int cmp_tensor_name(const void *a, const void *b)
{
    return strcmp(((const rt_st_tensor *)a)->name, ((const rt_st_tensor *)b)->name);
}

static int cmp_tensor_ptr_begin(const void *a, const void *b)
{
    const rt_st_tensor *x = *(rt_st_tensor *const *)a, *y = *(rt_st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : (x->end > y->end) - (x->end < y->end);
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static bool json_u53(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return false;
    double d = v->valuedouble;
    if (!(d >= 0 && d <= 9007199254740992.0) || d != floor(d))
        return false;
    *out = (uint64_t)d;
    return true;
}

static int parse_entry(rt_st_tensor *t, const cJSON *e, uint64_t data_size, const char *name,
                       base_err *err)
{
    const char *tn = t->name;
    if (!cJSON_IsObject(e))
        return base_errf(err, "%s: tensor '%.128s': header entry is not an object", name, tn);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt))
        return base_errf(err, "%s: tensor '%.128s': missing or non-string 'dtype'", name, tn);
    int elem = 0;
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(dt->valuestring, st_dtypes[i].name) == 0) {
            elem = t->elem_size = st_dtypes[i].size;
            t->supported = st_dtypes[i].rt >= 0;
            t->dtype = t->supported ? (rt_dtype)st_dtypes[i].rt : RT_F32;
            snprintf(t->dtype_name, sizeof t->dtype_name, "%s", st_dtypes[i].name);
        }
    if (!elem)
        return base_errf(err, "%s: tensor '%.128s': unknown dtype \"%.16s\"", name, tn, dt->valuestring);
    if (!cJSON_IsArray(shape))
        return base_errf(err, "%s: tensor '%.128s': missing or non-array 'shape'", name, tn);
    int nd = cJSON_GetArraySize(shape);
    if (nd > RT_ST_MAX_DIMS)
        return base_errf(err, "%s: tensor '%.128s': %d dimensions (at most %d)", name, tn, nd, RT_ST_MAX_DIMS);
    t->n_dims = nd;
    uint64_t count = 1;
    bool overflow = false;
    int i = 0;
    for (const cJSON *d = shape->child; d; d = d->next, i++) {
        uint64_t n;
        if (!json_u53(d, &n))
            return base_errf(err, "%s: tensor '%.128s': shape entries must be non-negative integers", name, tn);
        t->shape[i] = (int64_t)n;
        if (n && count > UINT64_MAX / n)
            overflow = true;
        count *= n;
    }
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_u53(offs->child, &t->begin) ||
        !json_u53(offs->child->next, &t->end))
        return base_errf(err, "%s: tensor '%.128s': 'data_offsets' must be two non-negative integers", name, tn);
    if (t->begin > t->end)
        return base_errf(err, "%s: tensor '%.128s': data_offsets [%llu, %llu] run backwards", name, tn,
                       (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > data_size)
        return base_errf(err, "%s: tensor '%.128s': data_offsets [%llu, %llu] run past the end of the data (%llu bytes): truncated or corrupt file",
                       name, tn, (unsigned long long)t->begin, (unsigned long long)t->end,
                       (unsigned long long)data_size);
    if (overflow || count > UINT64_MAX / (uint64_t)elem || count * (uint64_t)elem != t->end - t->begin)
        return base_errf(err, "%s: tensor '%.128s': shape x %s size is not the %llu bytes of its data_offsets",
                       name, tn, t->dtype_name, (unsigned long long)(t->end - t->begin));
    return 0;
}

static int check_layout(rt_st_file *f, const char *name, base_err *err)
{
    int n = f->n_tensors;
    if (n == 0)
        return 0;
    qsort(f->tensors, (size_t)n, sizeof *f->tensors, cmp_tensor_name);
    for (int i = 1; i < n; i++)
        if (strcmp(f->tensors[i - 1].name, f->tensors[i].name) == 0)
            return base_errf(err, "%s: tensor '%.128s' appears twice in the header", name, f->tensors[i].name);
    rt_st_tensor **by_pos = malloc((size_t)n * sizeof *by_pos);
    if (!by_pos)
        return base_errf(err, "%s: out of memory", name);
    for (int i = 0; i < n; i++)
        by_pos[i] = &f->tensors[i];
    qsort(by_pos, (size_t)n, sizeof *by_pos, cmp_tensor_ptr_begin);
    int rc = 0;
    for (int i = 1; i < n && rc == 0; i++)
        if (by_pos[i]->begin < by_pos[i - 1]->end)
            rc = base_errf(err, "%s: tensors '%.100s' and '%.100s' overlap in the data section", name,
                         by_pos[i - 1]->name, by_pos[i]->name);
    free(by_pos);
    return rc;
}

int rt_st_parse(rt_st_file *f, const uint8_t *bytes, size_t size, const char *name, base_err *err)
{
    memset(f, 0, sizeof *f);
    if (size < 8)
        return base_errf(err, "%s: file is %zu bytes, shorter than the 8-byte header length: truncated or not safetensors",
                       name, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | bytes[i];
    if (hlen > RT_ST_MAX_HEADER)
        return base_errf(err, "%s: header length %llu is over the %u-byte limit: corrupt or not safetensors",
                       name, (unsigned long long)hlen, RT_ST_MAX_HEADER);
    if (hlen > size - 8)
        return base_errf(err, "%s: header length %llu runs past the end of the %zu-byte file: truncated",
                       name, (unsigned long long)hlen, size);
    cJSON *root = cJSON_ParseWithLength((const char *)bytes + 8, (size_t)hlen);
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return base_errf(err, "%s: header is not a JSON object", name);
    }
    f->data = bytes + 8 + hlen;
    f->data_size = size - 8 - hlen;
    int n = 0;
    for (const cJSON *e = root->child; e; e = e->next)
        n += strcmp(e->string, "__metadata__") != 0;
    f->tensors = calloc(n ? (size_t)n : 1, sizeof *f->tensors);
    int rc = f->tensors ? 0 : base_errf(err, "%s: out of memory", name);
    for (const cJSON *e = root->child; e && rc == 0; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e))
                rc = base_errf(err, "%s: '__metadata__' is not an object", name);
            continue;
        }
        rt_st_tensor *t = &f->tensors[f->n_tensors];
        t->name = strdup(e->string);
        if (!t->name) {
            rc = base_errf(err, "%s: out of memory", name);
            break;
        }
        f->n_tensors++;
        rc = parse_entry(t, e, f->data_size, name, err);
    }
    cJSON_Delete(root);
    if (rc == 0)
        rc = check_layout(f, name, err);
    if (rc == 0)
        f->path = strdup(name);
    if (rc == 0 && !f->path)
        rc = base_errf(err, "%s: out of memory", name);
    if (rc)
        rt_st_close(f);
    return rc;
}

int rt_st_open(rt_st_file *f, const char *path, base_err *err)
{
    memset(f, 0, sizeof *f);
    int fd;
    uint64_t fsize;
    if (base_open_regular(path, &fd, &fsize, err))
        return -1;
    if (fsize > (uint64_t)SIZE_MAX) {
        close(fd);
        return base_errf(err, "%s: %llu bytes cannot be mapped on this machine", path, (unsigned long long)fsize);
    }
    size_t size = (size_t)fsize;
    void *map = NULL;
    if (size >= 8) {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            close(fd);
            return base_errf(err, "%s: cannot map: %s", path, strerror(errno));
        }
        madvise(map, size, MADV_SEQUENTIAL); /* read-ahead: weights are read front to back once */
    }
    close(fd);
    static const uint8_t empty[1];
    if (rt_st_parse(f, map ? map : empty, size, path, err)) {
        if (map)
            munmap(map, size);
        return -1;
    }
    f->map = map;
    f->map_size = size;
    return 0;
}

void rt_st_close(rt_st_file *f)
{
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    free(f->path);
    if (f->map)
        munmap(f->map, f->map_size);
    memset(f, 0, sizeof *f);
}

const rt_st_tensor *rt_st_find(const rt_st_file *f, const char *name)
{
    rt_st_tensor key = {.name = (char *)name};
    if (f->n_tensors == 0)
        return NULL;
    return bsearch(&key, f->tensors, (size_t)f->n_tensors, sizeof key, cmp_tensor_name);
}

/* Checks a slice request (of a float tensor when need_float); gives the tensor's column count. */
static int check_slice(const rt_st_file *f, const rt_st_tensor *t, bool need_float, int64_t r0, int64_t r1,
                       int64_t c0, int64_t c1, int64_t *cols, base_err *err)
{
    if (need_float && !t->supported)
        return base_errf(err, "%s: tensor '%s' has unsupported dtype %s (weights must be F32, F16 or BF16)",
                       f->path, t->name, t->dtype_name);
    if (t->n_dims < 1 || t->n_dims > 2)
        return base_errf(err, "%s: tensor '%s' has %d dimensions, expected 1 or 2", f->path, t->name, t->n_dims);
    int64_t rows = t->shape[0];
    *cols = t->n_dims == 2 ? t->shape[1] : 1;
    if (r0 < 0 || r1 > rows || r0 > r1 || c0 < 0 || c1 > *cols || c0 > c1)
        return base_errf(err, "%s: tensor '%s': slice [%lld:%lld, %lld:%lld] outside its shape", f->path,
                       t->name, (long long)r0, (long long)r1, (long long)c0, (long long)c1);
    return 0;
}

int rt_st_read_f32(const rt_st_file *f, const rt_st_tensor *t, int64_t r0, int64_t r1, int64_t c0,
                   int64_t c1, float *dst, base_err *err)
{
    int64_t cols = 0;
    if (check_slice(f, t, true, r0, r1, c0, c1, &cols, err))
        return -1;
    size_t es = rt_dtype_size(t->dtype);
    const uint8_t *base = f->data + t->begin;
    size_t w = (size_t)(c1 - c0);
#pragma omp parallel for schedule(static) if ((r1 - r0) * (int64_t)w > (1 << 16))
    for (int64_t r = r0; r < r1; r++)
        rt_convert_to_f32(dst + (size_t)(r - r0) * w, base + ((size_t)r * (size_t)cols + (size_t)c0) * es,
                          t->dtype, w);
    return 0;
}

int rt_st_read_raw(const rt_st_file *f, const rt_st_tensor *t, int64_t r0, int64_t r1, int64_t c0, int64_t c1,
                   void *dst, base_err *err)
{
    int64_t cols = 0;
    if (check_slice(f, t, false, r0, r1, c0, c1, &cols, err))
        return -1;
    size_t es = (size_t)t->elem_size, w = (size_t)(c1 - c0) * es;
    const uint8_t *base = f->data + t->begin;
    if (c0 == 0 && c1 == cols) { /* whole rows: one contiguous run */
        memcpy(dst, base + (size_t)r0 * w, (size_t)(r1 - r0) * w);
        return 0;
    }
    for (int64_t r = r0; r < r1; r++)
        memcpy((uint8_t *)dst + (size_t)(r - r0) * w, base + ((size_t)r * (size_t)cols + (size_t)c0) * es, w);
    return 0;
}

/* ---- checkpoint folders ---- */

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const rt_ckpt_entry *)a)->name, ((const rt_ckpt_entry *)b)->name);
}

/* The index of a shard file name, added if new. */
static int add_file_name(rt_ckpt *c, const char *fname, base_err *err)
{
    if (strchr(fname, '/') || strcmp(fname, "..") == 0 || strcmp(fname, ".") == 0 || !*fname)
        return base_errf(err, "%s: shard file name \"%.64s\" must be a plain file name", c->index_path, fname);
    for (int i = 0; i < c->n_files; i++)
        if (strcmp(c->file_names[i], fname) == 0)
            return i;
    char **nn = realloc(c->file_names, (size_t)(c->n_files + 1) * sizeof *nn);
    if (nn)
        c->file_names = nn;
    rt_st_file *nf = nn ? realloc(c->files, (size_t)(c->n_files + 1) * sizeof *nf) : NULL;
    if (nf)
        c->files = nf;
    if (!nn || !nf || !(c->file_names[c->n_files] = strdup(fname)))
        return base_errf(err, "%s: out of memory", c->index_path);
    memset(&c->files[c->n_files], 0, sizeof *c->files);
    return c->n_files++;
}

/* Maps shard i on first use. */
static int ensure_open(rt_ckpt *c, int i, base_err *err)
{
    if (c->files[i].path)
        return 0;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", c->dir, c->file_names[i]);
    return rt_st_open(&c->files[i], path, err);
}

static int open_index(rt_ckpt *c, base_err *err)
{
    char *text;
    size_t len;
    if (base_read_file(c->index_path, RT_ST_MAX_INDEX, &text, &len, err))
        return -1;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    int rc = 0;
    if (!cJSON_IsObject(map)) {
        rc = base_errf(err, "%s: not JSON with a 'weight_map' object", c->index_path);
        goto out;
    }
    int n = cJSON_GetArraySize(map);
    c->entries = calloc(n ? (size_t)n : 1, sizeof *c->entries);
    if (!c->entries) {
        rc = base_errf(err, "%s: out of memory", c->index_path);
        goto out;
    }
    for (const cJSON *e = map->child; e; e = e->next) {
        if (!cJSON_IsString(e)) {
            rc = base_errf(err, "%s: weight_map entry '%.128s' is not a file name", c->index_path, e->string);
            goto out;
        }
        int fi = add_file_name(c, e->valuestring, err);
        if (fi < 0) {
            rc = -1;
            goto out;
        }
        rt_ckpt_entry *en = &c->entries[c->n_entries];
        en->name = strdup(e->string);
        en->file = fi;
        if (!en->name) {
            rc = base_errf(err, "%s: out of memory", c->index_path);
            goto out;
        }
        c->n_entries++;
    }
    qsort(c->entries, (size_t)c->n_entries, sizeof *c->entries, cmp_entry);
    for (int i = 1; i < c->n_entries; i++)
        if (strcmp(c->entries[i - 1].name, c->entries[i].name) == 0) {
            rc = base_errf(err, "%s: tensor '%.128s' is listed twice", c->index_path, c->entries[i].name);
            goto out;
        }
out:
    cJSON_Delete(root);
    return rc;
}

int rt_ckpt_open(rt_ckpt *c, const char *dir, base_err *err)
{
    memset(c, 0, sizeof *c);
    char path[4096];
    int rc;
    if (!(c->dir = strdup(dir)))
        return base_errf(err, "out of memory");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    int has_index = base_path_exists(path, err);
    if (has_index < 0) {
        rt_ckpt_close(c);
        return -1;
    }
    if (has_index) {
        c->index_path = strdup(path);
        rc = c->index_path ? open_index(c, err) : base_errf(err, "out of memory");
    } else {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        int has_single = base_path_exists(path, err);
        if (has_single <= 0) {
            rt_ckpt_close(c);
            return has_single < 0 ? -1
                                  : base_errf(err, "%s: no model.safetensors or model.safetensors.index.json in the folder",
                                              dir);
        }
        rc = add_file_name(c, "model.safetensors", err) < 0 || ensure_open(c, 0, err) ? -1 : 0;
    }
    if (rc)
        rt_ckpt_close(c);
    return rc;
}

void rt_ckpt_close(rt_ckpt *c)
{
    for (int i = 0; i < c->n_files; i++) {
        if (c->files[i].path)
            rt_st_close(&c->files[i]);
        free(c->file_names[i]);
    }
    for (int i = 0; i < c->n_entries; i++)
        free(c->entries[i].name);
    free(c->files);
    free(c->file_names);
    free(c->entries);
    free(c->index_path);
    free(c->dir);
    memset(c, 0, sizeof *c);
}

int rt_ckpt_find(rt_ckpt *c, const char *name, const rt_st_file **file, const rt_st_tensor **t, base_err *err)
{
    int fi = 0;
    if (c->index_path) {
        rt_ckpt_entry key = {.name = (char *)name};
        const rt_ckpt_entry *e =
            c->n_entries ? bsearch(&key, c->entries, (size_t)c->n_entries, sizeof key, cmp_entry) : NULL;
        if (!e)
            return base_errf(err, "%s: tensor '%s' is missing from the index", c->index_path, name);
        fi = e->file;
        if (ensure_open(c, fi, err))
            return -1;
    }
    *file = &c->files[fi];
    *t = rt_st_find(*file, name);
    if (!*t)
        return c->index_path
                   ? base_errf(err, "%s: lists tensor '%s' in %s, which does not contain it", c->index_path, name,
                             c->files[fi].path)
                   : base_errf(err, "%s: tensor '%s' is missing", c->files[0].path, name);
    return 0;
}

bool rt_ckpt_has(const rt_ckpt *c, const char *name)
{
    if (c->index_path) {
        rt_ckpt_entry key = {.name = (char *)name};
        return c->n_entries && bsearch(&key, c->entries, (size_t)c->n_entries, sizeof key, cmp_entry);
    }
    return rt_st_find(&c->files[0], name) != NULL;
}
