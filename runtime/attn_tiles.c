/* The prompt runs of a step, cut into tiles for attention on matrix units, whether the step is a
 * decode step, and a layer's RoPE and attention through whichever ops the backend has (backend.h). */
#include "runtime/backend.h"

int rt_attn_tiles(const int32_t *pos, const int32_t *seq, int n, int32_t *tiles, int32_t *rest, int *n_rest)
{
    int n_tiles = 0, nr = 0;
    for (int t = 0; t < n;) {
        int e = t + 1; /* the run [t, e): one sequence, consecutive positions */
        while (e < n && seq[e] == seq[t] && pos[e] == pos[e - 1] + 1)
            e++;
        if (e - t >= RT_ATTN_RUN_MIN) {
            for (int f = t; f < e; f += RT_ATTN_TILE) {
                tiles[2 * n_tiles] = f;
                tiles[2 * n_tiles + 1] = e - f < RT_ATTN_TILE ? e - f : RT_ATTN_TILE;
                n_tiles++;
            }
        } else {
            for (int f = t; f < e; f++)
                rest[nr++] = f;
        }
        t = e;
    }
    *n_rest = nr;
    return n_tiles;
}

bool rt_attn_decode(const int32_t *seq, int n, int n_seqs)
{
    if (n != n_seqs)
        return false;
    for (int t = 0; t < n; t++)
        if (seq[t] != t)
            return false;
    return true;
}

void rt_attend(rt_backend *be, void *out, void *q, const void *qkv, const float *inv_freq, const rt_attn_batch *b,
               const rt_attn_shape *s, rt_kv_layer *kv)
{
    const rt_backend_ops *op = be->ops;
    if (b->decode && op->rope_attention && op->rope_attention(be, out, qkv, inv_freq, b, s, kv))
        return;
    op->rope_kv_write(be, q, qkv, inv_freq, b, s, kv);
    op->attention(be, out, q, kv, b, s);
}
