/* Implementation of headers/llamapy_helpers.h. */
#include "llamapy_helpers.h"

#include <stdio.h>
#include <time.h>

#ifndef LLAMAPY_VERSION
#define LLAMAPY_VERSION "unknown"
#endif

/* Defined by the cffi module (extern "Python+C" callbacks implemented in llamapy/_ffi.py). */
extern void llamapy_py_log(int level, const char *text);
extern bool llamapy_py_poll(void);

const char *llamapy_module_version(void) { return LLAMAPY_VERSION; }

static volatile int log_threshold = GGML_LOG_LEVEL_WARN;
static volatile int log_attached = 0;
static int log_last_level = GGML_LOG_LEVEL_INFO;

static void llamapy_log_forward(enum ggml_log_level level, const char *text, void *user_data) {
    (void)user_data;
    int effective = level == GGML_LOG_LEVEL_CONT ? log_last_level : (int)level;
    log_last_level = effective;
    if (effective == GGML_LOG_LEVEL_NONE || effective < log_threshold || text == NULL) {
        return;
    }
    if (log_attached) {
        llamapy_py_log(effective, text);
    } else if (effective >= GGML_LOG_LEVEL_ERROR) {
        fputs(text, stderr);
    }
}

void llamapy_log_install(int threshold) {
    log_threshold = threshold;
    log_attached = 1;
    llama_log_set(llamapy_log_forward, NULL);
}

void llamapy_log_set_threshold(int threshold) { log_threshold = threshold; }

void llamapy_log_detach(void) { log_attached = 0; }

static double llamapy_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

bool llamapy_abort_callback(void *data) {
    struct llamapy_abort_state *st = (struct llamapy_abort_state *)data;
    if (st == NULL) {
        return false;
    }
    if (st->cancel) {
        st->aborted = 1;
        return true;
    }
    /* called once per graph node: look at the clock only every 32 calls */
    if (st->poll_interval > 0 && (++st->calls & 31) == 0) {
        double now = llamapy_now();
        if (now >= st->next_poll) {
            st->next_poll = now + st->poll_interval;
            if (llamapy_py_poll()) {
                st->aborted = 1;
                return true;
            }
        }
    }
    return false;
}

llama_token llamapy_greedy(struct llama_context *ctx, int32_t idx) {
    const float *logits = llama_get_logits_ith(ctx, idx);
    if (logits == NULL) {
        return -1;
    }
    const int32_t n = llama_vocab_n_tokens(llama_model_get_vocab(llama_get_model(ctx)));
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        if (logits[i] > logits[best]) {
            best = i;
        }
    }
    return best;
}

int32_t llamapy_masked_candidates(struct llama_context *ctx, int32_t idx, const uint32_t *mask,
                                  int32_t n_vocab, llama_token_data *out) {
    const float *logits = llama_get_logits_ith(ctx, idx);
    if (logits == NULL) {
        return -1;
    }
    int32_t n = 0;
    const int32_t n_words = (n_vocab + 31) / 32;
    for (int32_t w = 0; w < n_words; w++) {
        uint32_t bits = mask[w];
        for (int32_t tok = w * 32; bits != 0 && tok < n_vocab; tok++, bits >>= 1) {
            if (bits & 1u) {
                out[n].id = tok;
                out[n].logit = logits[tok];
                out[n].p = 0.0f;
                n++;
            }
        }
    }
    return n;
}

static void llamapy_batch_put(struct llama_batch *b, int32_t i, llama_token tok, llama_pos pos,
                              const llama_seq_id *seqs, int32_t n_seq, bool logits) {
    if (b->token != NULL) {
        b->token[i] = tok;
    }
    b->pos[i] = pos;
    b->n_seq_id[i] = n_seq;
    for (int32_t s = 0; s < n_seq; s++) {
        b->seq_id[i][s] = seqs[s];
    }
    b->logits[i] = (int8_t)logits;
}

int32_t llamapy_batch_add_seq(struct llama_batch *batch, int32_t capacity,
                              const llama_token *tokens, int32_t n, llama_pos pos0,
                              llama_seq_id seq_id, int32_t logits_mode) {
    int32_t start = batch->n_tokens;
    if (n < 0 || start + n > capacity) {
        return -1;
    }
    for (int32_t k = 0; k < n; k++) {
        bool logits = logits_mode == 2 || (logits_mode == 1 && k == n - 1);
        llamapy_batch_put(batch, start + k, tokens != NULL ? tokens[k] : 0, pos0 + k, &seq_id, 1, logits);
    }
    batch->n_tokens = start + n;
    return batch->n_tokens;
}

int32_t llamapy_batch_add_token(struct llama_batch *batch, int32_t capacity, llama_token token,
                                llama_pos pos, const llama_seq_id *seq_ids, int32_t n_seq,
                                bool logits) {
    if (batch->n_tokens >= capacity || n_seq < 1) {
        return -1;
    }
    llamapy_batch_put(batch, batch->n_tokens, token, pos, seq_ids, n_seq, logits);
    batch->n_tokens += 1;
    return batch->n_tokens;
}
