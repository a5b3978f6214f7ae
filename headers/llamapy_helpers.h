/* llamapy's own C helpers, compiled into the llamapy._cffi module.
 * Everything here carries the llamapy_ prefix; nothing is copied from upstream. */
#ifndef LLAMAPY_HELPERS_H
#define LLAMAPY_HELPERS_H

#include <stdbool.h>
#include <stdint.h>
#include "llama.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Version of the Python package this module was compiled for. */
const char *llamapy_module_version(void);

/* Logging: llama.cpp/ggml messages at or above a level go to Python. */
void llamapy_log_install(int threshold);
void llamapy_log_set_threshold(int threshold);
void llamapy_log_detach(void);

/* Abort state passed as abort-callback data to a context: a cancel flag any thread may
 * set, plus a periodic poll of Python so that Ctrl-C can interrupt a long decode. */
struct llamapy_abort_state {
    volatile int cancel;
    volatile int aborted;
    double next_poll;
    double poll_interval;
    unsigned int calls;
};
bool llamapy_abort_callback(void *data);

/* Batch filling without a per-token Python loop.
 * Appends tokens[0..n) at positions pos0.. to one sequence; logits_mode 0 = none,
 * 1 = last token only, 2 = every token. tokens may be NULL for an embeddings batch (the
 * caller fills batch->embd). Returns the new n_tokens, or -1 if the batch (capacity
 * tokens) is full. */
int32_t llamapy_batch_add_seq(struct llama_batch *batch, int32_t capacity,
                              const llama_token *tokens, int32_t n, llama_pos pos0,
                              llama_seq_id seq_id, int32_t logits_mode);
/* Appends one token shared by several sequences. Same return convention. */
int32_t llamapy_batch_add_token(struct llama_batch *batch, int32_t capacity, llama_token token,
                                llama_pos pos, const llama_seq_id *seq_ids, int32_t n_seq,
                                bool logits);

/* Greedy choice over the logits of output idx: the first token with the largest logit,
 * exactly as llama.cpp's greedy sampler picks it, without building a candidates array.
 * Returns -1 when the last decode produced no logits for idx. */
llama_token llamapy_greedy(struct llama_context *ctx, int32_t idx);

/* The candidates a token bit mask allows (token t allowed when bit t % 32 of mask[t / 32] is
 * set, as grammar engines write masks), with their logits from output idx, in token order:
 * fills out (room for n_vocab entries) and returns how many. One pass over the mask instead
 * of unpacking it, gathering logits and building candidates separately.
 * Returns -1 when the last decode produced no logits for idx. */
int32_t llamapy_masked_candidates(struct llama_context *ctx, int32_t idx, const uint32_t *mask,
                                  int32_t n_vocab, llama_token_data *out);

/* Memory a context uses per buffer type (see headers/llamapy_memory.cpp). Fills up to
 * capacity entries and returns how many there are. */
struct llamapy_buffer_usage {
    const char *buffer_type;
    const char *device;
    bool is_host;
    size_t model;
    size_t context;
    size_t compute;
};
int32_t llamapy_memory_breakdown(const struct llama_context *ctx, struct llamapy_buffer_usage *out,
                                 int32_t capacity);

#ifdef __cplusplus
}
#endif

#endif
