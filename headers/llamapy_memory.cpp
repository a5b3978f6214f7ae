// llamapy_memory_breakdown: the buffer sizes a context allocated (or, with a no_alloc model,
// would allocate), per buffer type, as plain C data. llama.cpp offers this only through its
// C++ staging header (src/llama-ext.h); this shim flattens it for the cffi module.
#include "llama-ext.h"
#include "llamapy_helpers.h"

int32_t llamapy_memory_breakdown(const struct llama_context *ctx, struct llamapy_buffer_usage *out,
                                            int32_t capacity) {
    const llama_memory_breakdown breakdown = llama_get_memory_breakdown(ctx);
    int32_t n = 0;
    for (const auto &entry : breakdown) {
        if (n < capacity) {
            ggml_backend_buffer_type_t buft = entry.first;
            ggml_backend_dev_t dev = ggml_backend_buft_get_device(buft);
            out[n].buffer_type = ggml_backend_buft_name(buft);
            out[n].device = dev != nullptr ? ggml_backend_dev_name(dev) : "";
            out[n].is_host = ggml_backend_buft_is_host(buft);
            out[n].model = entry.second.model;
            out[n].context = entry.second.context;
            out[n].compute = entry.second.compute;
        }
        n++;
    }
    return n;
}
