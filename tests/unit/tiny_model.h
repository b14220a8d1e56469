/* Test helper: writes a small random Llama-family model folder with the runtime's own writer. */
#ifndef DINFER_TESTS_TINY_MODEL_H
#define DINFER_TESTS_TINY_MODEL_H

#include "runtime/config.h"

/* A small GQA Llama: dim 32, 4 heads (2 KV), 3 layers, FFN 48, vocab 64, context 128. */
rt_config tiny_config(void);

/* Writes cfg as config.json plus weights (dtype dt) into dir, split into files of at most
 * shard_bytes (0: one file). Returns 0 or -1 with err filled. */
int tiny_model_write(const char *dir, const rt_config *cfg, rt_dtype dt, size_t shard_bytes, base_err *err);

/* mkdtemp under /tmp; the caller removes it with tiny_rmtree. */
char *tiny_tmpdir(void);
void tiny_rmtree(const char *dir);

#endif
