/* The BPE model of tokenizer.json (tokenizer_impl.h's rt_bpe_word): a word's characters (or their
 * bytes, or unk) merged by rank, lowest first and leftmost among equals, through a heap of candidate
 * pairs over a linked list of symbols, as `tokenizers` merges them. */
#include "runtime/text/tokenizer_impl.h"

static bool merge_get(const merge_map *m, int32_t a, int32_t b, int32_t *rank, int32_t *merged)
{
    if (!m->cap || a < 0 || b < 0)
        return false;
    const uint64_t k = ((uint64_t)a + 1) << 32 | (uint32_t)b;
    for (size_t i = mix64(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        const merge_slot *e = &m->slot[i];
        if (e->key == 0)
            return false;
        if (e->key == k) {
            *rank = e->rank, *merged = e->merged;
            return true;
        }
    }
}

/* The heap of candidate merges: lowest rank first, then leftmost. */
static bool heap_less(const struct rt_bpe_item *x, const struct rt_bpe_item *y)
{
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static int heap_push(rt_bpe *e, struct rt_bpe_item it)
{
    if (e->heap_n == e->heap_cap) {
        size_t cap = e->heap_cap ? e->heap_cap * 2 : 256;
        struct rt_bpe_item *h = realloc(e->heap, cap * sizeof *h);
        if (!h)
            return -1;
        e->heap = h, e->heap_cap = cap;
    }
    size_t i = e->heap_n++;
    while (i > 0 && heap_less(&it, &e->heap[(i - 1) / 2])) {
        e->heap[i] = e->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    e->heap[i] = it;
    return 0;
}

static struct rt_bpe_item heap_pop(rt_bpe *e)
{
    struct rt_bpe_item top = e->heap[0], last = e->heap[--e->heap_n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= e->heap_n)
            break;
        if (c + 1 < e->heap_n && heap_less(&e->heap[c + 1], &e->heap[c]))
            c++;
        if (!heap_less(&e->heap[c], &last))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (e->heap_n > 0)
        e->heap[i] = last;
    return top;
}

static int push_pair(const rt_tokenizer *t, rt_bpe *e, int32_t pos)
{
    const int32_t nx = e->next[pos];
    int32_t rank, merged;
    if (nx >= 0 && merge_get(&t->merges, e->sym[pos], e->sym[nx], &rank, &merged))
        return heap_push(e, (struct rt_bpe_item){rank, pos, merged});
    return 0;
}

int rt_bpe_word(const rt_tokenizer *t, rt_bpe *e, const char *w, size_t n, ids_vec *out)
{
    if (n == 0)
        return 0;
    if (t->ignore_merges) {
        int32_t id = str_map_get(&t->vocab, w, n);
        if (id >= 0)
            return ids_push(out, id);
    }
    if (n + 1 > e->sym_cap) {
        size_t cap = e->sym_cap ? e->sym_cap : 64;
        while (cap < n + 1)
            cap *= 2;
        int32_t *a = realloc(e->sym, cap * sizeof *a), *b = a ? realloc(e->prev, cap * sizeof *b) : NULL,
                *c = b ? realloc(e->next, cap * sizeof *c) : NULL;
        if (a)
            e->sym = a;
        if (b)
            e->prev = b;
        if (c)
            e->next = c;
        if (!a || !b || !c)
            return -1;
        e->sym_cap = cap;
    }
    int32_t ns = 0;
    bool last_unk = false;
    for (size_t i = 0; i < n;) {
        const unsigned char c0 = (unsigned char)w[i];
        int k = c0 < 0x80 ? 1 : utf8_len((const unsigned char *)w + i, n - i);
        if (k == 0)
            k = 1;
        int32_t id;
        if (c0 < 0x80)
            id = t->ascii_id[c0];
        else if (k == 2 && c0 < 0xC6) /* U+0080 .. U+017F: ByteLevel's characters among them */
            id = t->latin_id[((c0 & 0x1F) << 6 | ((unsigned char)w[i + 1] & 0x3F)) - 0x80];
        else
            id = str_map_get(&t->vocab, w + i, (size_t)k);
        if (id >= 0) {
            e->sym[ns++] = id, last_unk = false;
        } else {
            bool bytes = t->byte_fallback;
            for (int j = 0; bytes && j < k; j++)
                bytes = t->byte_id[(unsigned char)w[i + j]] >= 0;
            if (bytes) {
                for (int j = 0; j < k; j++)
                    e->sym[ns++] = t->byte_id[(unsigned char)w[i + j]];
                last_unk = false;
            } else if (t->unk_id >= 0) {
                if (!(t->fuse_unk && last_unk))
                    e->sym[ns++] = t->unk_id;
                last_unk = true;
            } /* no unk token: the character is dropped, as tokenizers drops it */
        }
        i += (size_t)k;
    }
    for (int32_t i = 0; i < ns; i++)
        e->prev[i] = i - 1, e->next[i] = i + 1 < ns ? i + 1 : -1;
    e->heap_n = 0;
    for (int32_t i = 0; i + 1 < ns; i++)
        if (push_pair(t, e, i))
            return -1;
    while (e->heap_n > 0) {
        const struct rt_bpe_item it = heap_pop(e);
        if (e->sym[it.pos] < 0 || e->next[it.pos] < 0)
            continue; /* merged away, or no right neighbour any more */
        int32_t rank, merged;
        if (!merge_get(&t->merges, e->sym[it.pos], e->sym[e->next[it.pos]], &rank, &merged) || merged != it.merged)
            continue; /* the pair changed since it was queued */
        const int32_t r = e->next[it.pos];
        e->sym[it.pos] = merged;
        e->sym[r] = -1;
        e->next[it.pos] = e->next[r];
        if (e->next[r] >= 0)
            e->prev[e->next[r]] = it.pos;
        if (e->prev[it.pos] >= 0 && push_pair(t, e, e->prev[it.pos]))
            return -1;
        if (push_pair(t, e, it.pos))
            return -1;
    }
    for (int32_t i = 0; i >= 0 && i < ns; i = e->next[i])
        if (ids_push(out, e->sym[i]))
            return -1;
    return 0;
}

void rt_bpe_free(rt_bpe *e)
{
    free(e->sym), free(e->prev), free(e->next), free(e->heap);
}
