// The C interface of palaver_native.so: the native step, its KV cache, and the process's one thread pool. Python
// binds it through ctypes (palaver/engine/native/binding.py), the C++ tests include it, and palaver_kernels.so links
// against the library for the pool.
//
// Weights are set by their GGUF tensor names. A change to this interface raises kAbiVersion, which the binding
// checks when it loads the library. A call that can refuse returns a Status, and pv_status_reason names it.
//
// Version 3 added pv_embed: texts run through the layers on temporary pages, their final-normed hidden states
// mean-pooled in place of logits. Version 4 added the kernel families: pv_kernels_widest and pv_model_kernels. Version 5
// added the fast arithmetic mode (pv_model_arithmetic and pv_model_dots), and pv_step's logits after every token of
// a row (want 2), packed in row order, and pv_seq_rewind (speculative decoding's refused positions). Version 6 added
// the KV cache's types (pv_cache_new's kv_type: 0 float16, 1 q8_0) and pv_seq_export and pv_seq_import, which carry
// a sequence's positions to and from a stored conversation.
#pragma once

#include <cstdint>

namespace palaver {

constexpr int64_t kAbiVersion = 6;

enum Status : int64_t {
  kOk = 0,
  kBadArgument = -1,        // a count, pointer or id out of its range
  kBadDimensions = -2,      // a model's dimensions that the kernels cannot run
  kUnknownTensor = -3,      // a tensor name the step does not read (the caller may skip that tensor)
  kBadTensor = -4,          // a tensor whose type, shape or layer is not the model's
  kMissingTensor = -5,      // a tensor the model needs, or the partner of one that is set, is not set
  kAlreadySet = -6,         // a setting made twice, or after what it must precede
  kUnknownSequence = -7,    // no such sequence in the cache
  kOutOfPages = -8,         // the page budget cannot hold the positions asked for
  kRowTooLong = -9,         // a row's tokens run past the positions reserved for its sequence
  kRepeatedSequence = -10,  // one sequence in two rows of a step
  kEmptyRow = -11,          // a row of a step with no tokens
  kBadToken = -12,          // a token id outside the vocabulary
  kNotEmpty = -13,          // a copy's target already holds positions
  kOutOfMemory = -14,       // an allocation, or the page pool's address space, was refused
};

}  // namespace palaver

extern "C" {

int64_t pv_abi_version();
// What a status means, in a few words ("out of KV pages"); "unknown status" for a code that is none of them.
const char* pv_status_reason(int64_t status);

// dims: vocab, hidden, ffn, layers, heads, kv_heads, head_dim. *model is the new model, or null on a refusal.
palaver::Status pv_model_new(const int64_t* dims, double eps, double rope_base, int64_t adjacent_pairs, void** model);
void pv_model_free(void* model);
palaver::Status pv_model_rope(void* model, int64_t rotary_dims, double base, const float* factors,
                              double attention_factor);
palaver::Status pv_model_gemma3(void* model, double attn_scale, double rope_factor, int64_t window, double local_base,
                                const int8_t* sliding);
// The widest block-kernel family this CPU runs (blocks.h's KernelFamily: 1 AVX2, 2 AVX-512), which a new model uses.
int64_t pv_kernels_widest();
// Make the model's block kernels a family's (0: the widest); kBadArgument for one this CPU cannot run.
palaver::Status pv_model_kernels(void* model, int64_t family);
// Set the model's arithmetic: 0 exact (float32 activations, the default), 1 fast (int8 activations and integer dot
// products, int8_dots.h), with the widest integer dot products its kernel family allows. Call it after setting the
// weights: the fast mode repacks those set so far, once (int8_repack.h), and frees the copies when set back to 0.
palaver::Status pv_model_arithmetic(void* model, int64_t mode);
// The model's integer dot products (int8_dots.h's DotFamily: 0 none, in the exact mode; 1 AVX2, 2 AVX-VNNI,
// 3 AVX-512 VNNI).
int64_t pv_model_dots(void* model);
// Point the model at a tensor's data by its GGUF name ("blk.3.attn_q.weight", "output_norm.weight").
palaver::Status pv_model_set(void* model, const char* name, const void* data, int64_t type, int64_t rows,
                             int64_t cols);
// Check that every tensor the model needs is set; on a refusal, write the name of one that is not into missing.
palaver::Status pv_model_check(void* model, char* missing, int64_t capacity);

// *cache is the new cache, or null on a refusal. kv_type: 0 float16 keys and values, 1 q8_0 (kv_cache.h's KvType).
palaver::Status pv_cache_new(void* model, int64_t page_tokens, int64_t max_pages, int64_t kv_type, void** cache);
void pv_cache_free(void* cache);
int64_t pv_cache_page_bytes(void* cache);
int64_t pv_cache_used_pages(void* cache);
int64_t pv_seq_new(void* cache);  // a sequence id (positive), or kOutOfMemory
void pv_seq_free(void* cache, int64_t seq);
int64_t pv_seq_len(void* cache, int64_t seq);  // its positions, or kUnknownSequence
palaver::Status pv_seq_reserve(void* cache, int64_t seq, int64_t tokens);
palaver::Status pv_seq_truncate(void* cache, int64_t seq, int64_t length);  // gives back pages past length
palaver::Status pv_seq_rewind(void* cache, int64_t seq, int64_t length);    // keeps them reserved
palaver::Status pv_seq_copy(void* cache, int64_t dst, int64_t src, int64_t tokens);
// The bytes pv_seq_export writes for tokens positions, or kBadArgument.
int64_t pv_seq_export_bytes(void* cache, int64_t tokens);
// Copy seq's first tokens positions into out, whose capacity must be pv_seq_export_bytes(tokens); only those
// positions' keys and values, in an order that depends on the cache's page size, its model's shape and its KV type.
palaver::Status pv_seq_export(void* cache, int64_t seq, int64_t tokens, void* out, int64_t capacity);
// Fill the empty seq with tokens positions that pv_seq_export wrote from a cache of the same kind, all or none.
palaver::Status pv_seq_import(void* cache, int64_t seq, int64_t tokens, const void* in, int64_t bytes);
// One step: row r appends counts[r] tokens to sequence seqs[r]. logits receives [vocab] next-token logits packed in
// row order: after the row's last token where want[r] is 1, after each of its tokens where it is 2, none where 0.
palaver::Status pv_step(void* model, void* cache, int64_t rows, const int64_t* seqs, const int64_t* counts,
                        const int32_t* tokens, const int8_t* want, float* logits);
// Run each of rows texts (counts[r] tokens, taken in order from tokens) through the model on pages of the cache that
// are reserved for the call (every text's, or none: kOutOfPages leaves the cache as it was) and given back before it
// returns, in steps of at most chunk tokens; means[r][hidden] receives the mean of text r's final-normed hidden
// states. A text's mean is the same bits alone, beside any others, and in any chunks.
palaver::Status pv_embed(void* model, void* cache, int64_t rows, const int64_t* counts, const int32_t* tokens,
                         int64_t chunk, float* means);

// The process's one thread pool, shared by the native step and the block kernels.
void pv_set_threads(int64_t threads);
int64_t pv_threads();
// Run body(context, begin, end) over [0, total) in chunks of chunk, on the calling thread and the pool's helpers.
void pv_pool_run(int64_t total, int64_t chunk, void (*body)(void*, int64_t, int64_t), void* context);

}  // extern "C"

namespace palaver {

// Run f(begin, end) over [0, total) in chunks of chunk, on the process's pool.
template <typename F>
void run_chunks(int64_t total, int64_t chunk, const F& f) {
  const auto call = [](void* context, int64_t begin, int64_t end) { (*static_cast<const F*>(context))(begin, end); };
  pv_pool_run(total, chunk, call, const_cast<void*>(static_cast<const void*>(&f)));
}

}  // namespace palaver
