// The native step's own tests, built with AddressSanitizer and UndefinedBehaviorSanitizer (tests/engine/native/test_binding.py
// compiles and runs this): random models of Q4_0, Q4_1 and Q8_0 blocks; batches on both sides of every tile and
// chunk of the projections (3, 4, 8 and 64 rows) and of the threads' shares (128 tokens), prefilling and decoding,
// with each kernel family this CPU runs, which all give the AVX2 family's bits; prefill chunks and sequence lengths
// on both sides of every page (16 positions) and block of 8 scores; the cache's books and its page pool; the thread
// pool's chunks; and weights set by name, refused by name. Four models: a Llama with
// Qwen2's biases and Qwen3's head norms; a Gemma 3 whose sliding layer's window (13 positions) starts inside a page
// and inside a block of 8 scores; a Phi-3.5 with joined projections that rotates half of each head with LongRoPE's
// factors; and heads of 80, whose values are summed in two passes of 64 dimensions and one of 16. Embeddings: each
// text's mean the same bits alone, beside others and in any chunks (texts of one page, one position past it, and
// around every tile), the head's image of it the mean of the logits after each position, and the cache as it was.
// Each variant runs again on a q8_0 KV cache (heads of 16 and 80 end in a short block of 16), which keeps every
// bit-for-bit rule, takes fewer bytes, and stays close to float16; a sequence exported and imported at every page
// boundary decodes the same bits as the one it came from.

#include "attention.h"
#include "blocks.h"
#include "check.h"
#include "kv_cache.h"
#include "native_step.h"
#include "vector_math.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace native_step_test {

using namespace palaver;

constexpr int64_t kVocab = 97, kPage = 16;

struct Shape {
  int64_t hidden = 64, ffn = 96, layers = 2, heads = 4, kv_heads = 2, head_dim = 16;
};

enum class Variant { kLlama, kGemma3, kLongRope, kWideHeads };

uint16_t half_of(float value) {
  // Small positive scales only: exponent and mantissa written directly (value in [2^-10, 1)).
  int exponent = 0;
  float mantissa = std::frexp(value, &exponent);  // value = mantissa * 2^exponent, mantissa in [0.5, 1)
  const int biased = exponent - 1 + 15;
  const auto fraction = static_cast<uint16_t>((mantissa * 2.0f - 1.0f) * 1024.0f);
  return static_cast<uint16_t>((biased << 10) | fraction);
}

// A matrix of random blocks of one type, kept alive for the model's lifetime.
std::vector<uint8_t> random_blocks(std::mt19937& rng, int64_t type, int64_t rows, int64_t cols) {
  const int64_t blocks = rows * cols / 32;
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> scale(0.002f, 0.02f);
  const int64_t stride = type == kQ8_0 ? 34 : type == kQ4_1 ? 20 : 18;
  std::vector<uint8_t> data(static_cast<size_t>(blocks * stride));
  for (int64_t b = 0; b < blocks; ++b) {
    uint8_t* block = &data[static_cast<size_t>(b * stride)];
    const uint16_t d = half_of(scale(rng));
    std::memcpy(block, &d, 2);
    int64_t start = 2;
    if (type == kQ4_1) {
      const uint16_t m = static_cast<uint16_t>(half_of(scale(rng)) | 0x8000);  // a negative minimum
      std::memcpy(block + 2, &m, 2);
      start = 4;
    }
    for (int64_t i = start; i < stride; ++i) block[i] = static_cast<uint8_t>(byte(rng));
  }
  return data;
}

std::string layer_tensor(int64_t layer, const char* name) { return "blk." + std::to_string(layer) + "." + name; }

std::string missing_of(void* model) {
  char missing[64] = "";
  CHECK(pv_model_check(model, missing, sizeof missing) == kMissingTensor);
  return missing;
}

struct TinyModel {
  Shape shape;
  std::vector<std::vector<uint8_t>> blocks;
  std::vector<std::vector<float>> vectors;
  std::mt19937 rng{7};
  int64_t next_type = 0;
  void* handle = nullptr;
  int64_t head_type = -1;  // the head's block type, and its blocks' place in `blocks`
  size_t head_blocks = 0;

  // window > 0 makes it a Gemma 3 whose first layer slides over that many positions.
  explicit TinyModel(Variant variant, int64_t window = 13) {
    if (variant == Variant::kWideHeads) shape.heads = 2, shape.kv_heads = 1, shape.head_dim = 80;
    const Shape& s = shape;
    const int64_t dims[7] = {kVocab, s.hidden, s.ffn, s.layers, s.heads, s.kv_heads, s.head_dim};
    const bool halves = variant == Variant::kGemma3 || variant == Variant::kLongRope;
    CHECK(pv_model_new(dims, 1e-5, 10000.0, halves ? 0 : 1, &handle) == kOk);
    if (variant == Variant::kLongRope) {
      const float factors[4] = {1.0f, 1.5f, 3.0f, 7.5f};
      CHECK(pv_model_rope(handle, shape.head_dim + 2, 10000.0, factors, 1.2) == kBadArgument);  // wider than a head
      CHECK(pv_model_rope(handle, shape.head_dim / 2, 10000.0, factors, 1.2) == kOk);
      CHECK(pv_model_rope(handle, shape.head_dim / 2, 10000.0, factors, 1.2) == kAlreadySet);
    }
    if (variant == Variant::kGemma3) {
      const int8_t sliding[2] = {1, 0};
      CHECK(pv_model_gemma3(handle, 0.2, 2.0, window, 10000.0, sliding) == kOk);
      CHECK(pv_model_gemma3(handle, 0.2, 2.0, window, 10000.0, sliding) == kAlreadySet);
    }
    set_weights(variant);
  }
  TinyModel(const TinyModel&) = delete;
  TinyModel& operator=(const TinyModel&) = delete;
  ~TinyModel() { pv_model_free(handle); }

  void matrix(const std::string& name, int64_t rows, int64_t cols) {
    const int64_t types[3] = {kQ4_0, kQ4_1, kQ8_0};
    const int64_t type = types[next_type++ % 3];
    blocks.push_back(random_blocks(rng, type, rows, cols));
    if (name == "output.weight") head_type = type, head_blocks = blocks.size() - 1;
    CHECK(pv_model_set(handle, name.c_str(), blocks.back().data(), type, rows, cols) == kOk);
  }

  void vector(const std::string& name, int64_t width, float low, float high) {
    std::uniform_real_distribution<float> values(low, high);
    vectors.emplace_back(static_cast<size_t>(width));
    for (float& value : vectors.back()) value = values(rng);
    CHECK(pv_model_set(handle, name.c_str(), vectors.back().data(), kF32, 1, width) == kOk);
  }

  void set_weights(Variant variant) {
    const Shape& s = shape;
    const int64_t q = s.heads * s.head_dim, kv = s.kv_heads * s.head_dim;
    matrix("token_embd.weight", kVocab, s.hidden);
    matrix("output.weight", kVocab, s.hidden);
    vector("output_norm.weight", s.hidden, 0.8f, 1.2f);
    for (int64_t layer = 0; layer < s.layers; ++layer) {
      vector(layer_tensor(layer, "attn_norm.weight"), s.hidden, 0.8f, 1.2f);
      vector(layer_tensor(layer, "ffn_norm.weight"), s.hidden, 0.8f, 1.2f);
      if (variant == Variant::kLongRope) {  // Phi-3's joined Q/K/V, and gate then up, read as views of their rows
        matrix(layer_tensor(layer, "attn_qkv.weight"), q + 2 * kv, s.hidden);
        matrix(layer_tensor(layer, "ffn_up.weight"), 2 * s.ffn, s.hidden);
      } else {
        matrix(layer_tensor(layer, "attn_q.weight"), q, s.hidden);
        matrix(layer_tensor(layer, "attn_k.weight"), kv, s.hidden);
        matrix(layer_tensor(layer, "attn_v.weight"), kv, s.hidden);
        matrix(layer_tensor(layer, "ffn_gate.weight"), s.ffn, s.hidden);
        matrix(layer_tensor(layer, "ffn_up.weight"), s.ffn, s.hidden);
      }
      matrix(layer_tensor(layer, "attn_output.weight"), s.hidden, q);
      matrix(layer_tensor(layer, "ffn_down.weight"), s.hidden, s.ffn);
    }
    CHECK(pv_model_check(handle, nullptr, 0) == kOk);
    // Qwen2's Q/K/V biases on the first layer: a bias alone is refused by the check, all three are served.
    vector(layer_tensor(0, "attn_q.bias"), q, -0.5f, 0.5f);
    CHECK(missing_of(handle) == "blk.0.attn_k.bias");
    vector(layer_tensor(0, "attn_k.bias"), kv, -0.5f, 0.5f);
    CHECK(missing_of(handle) == "blk.0.attn_v.bias");
    vector(layer_tensor(0, "attn_v.bias"), kv, -0.5f, 0.5f);
    // Qwen3's head norms on the second layer: both or neither.
    vector(layer_tensor(1, "attn_q_norm.weight"), s.head_dim, 0.5f, 1.5f);
    CHECK(missing_of(handle) == "blk.1.attn_k_norm.weight");
    vector(layer_tensor(1, "attn_k_norm.weight"), s.head_dim, 0.5f, 1.5f);
    CHECK(pv_model_check(handle, nullptr, 0) == kOk);
    if (variant == Variant::kGemma3) {  // Gemma 3's norms of the attention's and the MLP's outputs: both or neither
      for (int64_t layer = 0; layer < s.layers; ++layer) {
        vector(layer_tensor(layer, "post_attention_norm.weight"), s.hidden, 0.8f, 1.2f);
        CHECK(missing_of(handle) == layer_tensor(layer, "post_ffw_norm.weight"));
        vector(layer_tensor(layer, "post_ffw_norm.weight"), s.hidden, 0.8f, 1.2f);
      }
      CHECK(pv_model_check(handle, nullptr, 0) == kOk);
    }
  }
};

int32_t token_at(int64_t seed, int64_t i) { return static_cast<int32_t>((seed * 31 + i * 7) % kVocab); }

bool same_bits(const float* a, const float* b) { return std::memcmp(a, b, sizeof(float) * kVocab) == 0; }

int64_t g_kv_type = kKvF16;  // the KV type of every cache the checks make

void* new_cache(void* model, int64_t pages) {
  void* cache = nullptr;
  CHECK(pv_cache_new(model, kPage, pages, g_kv_type, &cache) == kOk);
  return cache;
}

// Step the next count tokens of seed's sequence into seq, from position start; the logits after them.
std::vector<float> feed(void* model, void* cache, int64_t seq, int64_t seed, int64_t start, int64_t count) {
  std::vector<int32_t> tokens;
  for (int64_t i = start; i < start + count; ++i) tokens.push_back(token_at(seed, i));
  std::vector<float> logits(kVocab);
  const int8_t want = 1;
  CHECK(pv_step(model, cache, 1, &seq, &count, tokens.data(), &want, logits.data()) == kOk);
  return logits;
}

// Prefill length tokens in chunks of chunk into a fresh cache; return the logits after the last one.
std::vector<float> prefill(void* model, int64_t seed, int64_t length, int64_t chunk) {
  void* cache = new_cache(model, 64);
  const int64_t seq = pv_seq_new(cache);
  CHECK(pv_seq_reserve(cache, seq, length) == kOk);
  std::vector<float> logits;
  for (int64_t start = 0; start < length; start += chunk)
    logits = feed(model, cache, seq, seed, start, std::min(chunk, length - start));
  CHECK(pv_seq_len(cache, seq) == length);
  pv_cache_free(cache);
  return logits;
}

void chunks_and_pages_give_the_same_bits(
    void* model,
    std::initializer_list<int64_t> lengths = {1, 2, 3, 4, 12, 13, 14, 15, 16, 17, 21, 22, 31, 32, 33, 47, 48, 49, 63,
                                              64, 65, 130},
    std::initializer_list<int64_t> chunks = {1, 2, 3, 15, 16, 17, 33}) {
  for (int64_t length : lengths) {
    const auto whole = prefill(model, length, length, length);
    for (int64_t chunk : chunks)
      if (chunk < length) CHECK(same_bits(whole.data(), prefill(model, length, length, chunk).data()));
  }
}

// One step of many rows against each row alone: every row prefills 1 to 19 tokens (some cross a page inside the
// step), then every row decodes one token, so the decoding step's projections take exactly `rows` input rows.
// Every tile's and chunk's boundary of the projections by default; the KV type's own checks take a few sizes, since a
// row's attention reads its own pages alone, whatever the batch.
void every_batch_size_gives_each_row_its_bits_alone(
    void* model, std::initializer_list<int64_t> sizes = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65,
                                                         66, 67, 127, 128, 129, 130}) {
  for (int64_t rows : sizes) {
    void* cache = new_cache(model, rows * 3);
    std::vector<int64_t> seqs, histories, ones(static_cast<size_t>(rows), 1);
    std::vector<int32_t> tokens, next;
    for (int64_t r = 0; r < rows; ++r) {
      seqs.push_back(pv_seq_new(cache));
      histories.push_back(1 + (r * 5) % 19);
      CHECK(pv_seq_reserve(cache, seqs.back(), histories.back() + 1) == kOk);
      for (int64_t i = 0; i < histories.back(); ++i) tokens.push_back(token_at(r, i));
      next.push_back(token_at(r, histories.back()));
    }
    std::vector<int8_t> want(static_cast<size_t>(rows), 1);
    std::vector<float> prefilled(static_cast<size_t>(rows * kVocab)), decoded(prefilled.size());
    CHECK(pv_step(model, cache, rows, seqs.data(), histories.data(), tokens.data(), want.data(), prefilled.data()) ==
          kOk);
    CHECK(pv_step(model, cache, rows, seqs.data(), ones.data(), next.data(), want.data(), decoded.data()) == kOk);
    for (int64_t r : {int64_t{0}, rows / 2, rows - 1}) {
      const int64_t history = histories[static_cast<size_t>(r)];
      CHECK(same_bits(prefill(model, r, history, 64).data(), &prefilled[static_cast<size_t>(r * kVocab)]));
      CHECK(same_bits(prefill(model, r, history + 1, history).data(), &decoded[static_cast<size_t>(r * kVocab)]));
    }
    pv_cache_free(cache);
  }
}

// Each kernel family this CPU runs gives every batch size each row's bits alone, and the AVX2 family's bits; a
// family it cannot run, or none, is refused.
void every_kernel_family_gives_the_same_bits(void* model) {
  CHECK(pv_model_kernels(model, 3) == kBadArgument && pv_model_kernels(model, -1) == kBadArgument);
  CHECK(pv_kernels_widest() == (cpu_runs(kAvx512Kernels) ? kAvx512Kernels : kAvx2Kernels));
  CHECK(pv_model_kernels(model, kAvx2Kernels) == kOk);
  const auto avx2 = prefill(model, 5, 70, 70);  // 70 tokens a step: whole and cut register tiles, past a chunk
  for (int64_t family : {kAvx2Kernels, kAvx512Kernels}) {
    if (pv_model_kernels(model, family) != kOk) {
      CHECK(!cpu_runs(family));
      std::printf("kernel family %lld skipped: this CPU cannot run it\n", static_cast<long long>(family));
      continue;
    }
    CHECK(same_bits(prefill(model, 5, 70, 70).data(), avx2.data()));
    every_batch_size_gives_each_row_its_bits_alone(model);
  }
  CHECK(pv_model_kernels(model, kWidestKernels) == kOk);
}

void threads_do_not_change_the_bits(void* model) {
  pv_set_threads(1);
  const auto one = prefill(model, 3, 70, 70);
  pv_set_threads(2);
  CHECK(pv_threads() == 2);
  const auto two = prefill(model, 3, 70, 70);
  CHECK(same_bits(one.data(), two.data()));
}

void the_cache_keeps_its_books(void* model) {
  void* cache = new_cache(model, 4);
  const int64_t a = pv_seq_new(cache), b = pv_seq_new(cache);
  CHECK(pv_seq_reserve(cache, a, 40) == kOk && pv_cache_used_pages(cache) == 3);
  CHECK(pv_seq_reserve(cache, b, 17) == kOutOfPages && pv_cache_used_pages(cache) == 3);  // all or none
  CHECK(pv_seq_reserve(cache, b, INT64_MAX) == kOutOfPages && pv_cache_used_pages(cache) == 3);
  CHECK(pv_seq_reserve(cache, 999, 1) == kUnknownSequence);
  CHECK(pv_seq_reserve(cache, a, -1) == kBadArgument);
  std::vector<int32_t> tokens(40);
  for (int64_t i = 0; i < 40; ++i) tokens[static_cast<size_t>(i)] = token_at(1, i);
  const int64_t forty = 40;
  const int8_t want = 0;
  CHECK(pv_step(model, cache, 1, &a, &forty, tokens.data(), &want, nullptr) == kOk);
  CHECK(pv_seq_truncate(cache, a, 41) == kBadArgument && pv_seq_truncate(cache, 999, 1) == kUnknownSequence);
  CHECK(pv_seq_truncate(cache, a, 17) == kOk);
  CHECK(pv_seq_len(cache, a) == 17 && pv_cache_used_pages(cache) == 2);
  CHECK(pv_seq_copy(cache, b, a, 17) == kOk && pv_seq_len(cache, b) == 17 && pv_cache_used_pages(cache) == 4);
  const int64_t c = pv_seq_new(cache);
  CHECK(pv_seq_copy(cache, c, a, 17) == kOutOfPages && pv_seq_len(cache, c) == 0);  // no room: nothing copied
  CHECK(pv_seq_copy(cache, b, a, 1) == kNotEmpty);
  CHECK(pv_seq_copy(cache, c, a, 18) == kBadArgument && pv_seq_copy(cache, c, 999, 1) == kUnknownSequence);
  // Bad steps: past the reservation, a sequence twice, a token out of range, no tokens, an unknown sequence.
  std::vector<float> logits(2 * kVocab);
  const int64_t one = 1, zero = 0, past = 16;
  const int64_t twice[2] = {a, a}, ones[2] = {1, 1};
  const int32_t bad_token = kVocab, good[2] = {1, 2};
  const int8_t wants[2] = {1, 1};
  const int64_t unknown = 12345;
  CHECK(pv_step(model, cache, 1, &a, &past, tokens.data(), wants, logits.data()) == kRowTooLong);
  CHECK(pv_step(model, cache, 2, twice, ones, good, wants, logits.data()) == kRepeatedSequence);
  CHECK(pv_step(model, cache, 1, &a, &one, &bad_token, wants, logits.data()) == kBadToken);
  CHECK(pv_step(model, cache, 1, &a, &zero, good, wants, logits.data()) == kEmptyRow);
  CHECK(pv_step(model, cache, 1, &unknown, &one, good, wants, logits.data()) == kUnknownSequence);
  CHECK(pv_step(model, cache, 0, &a, &one, good, wants, logits.data()) == kBadArgument);
  CHECK(pv_seq_len(cache, a) == 17 && pv_seq_len(cache, unknown) == kUnknownSequence);
  pv_seq_free(cache, a);
  pv_seq_free(cache, b);
  pv_seq_free(cache, c);
  pv_seq_free(cache, 999);
  CHECK(pv_cache_used_pages(cache) == 0);
  pv_cache_free(cache);
}

// Pages given back are handed out again, holding an earlier sequence's keys and values: a row on them gets the
// same bits as on fresh pages, and the pool never hands out more than its budget.
void reused_pages_give_the_same_bits(void* model) {
  void* cache = new_cache(model, 5);
  const int64_t first = pv_seq_new(cache);
  CHECK(pv_seq_reserve(cache, first, 5 * kPage) == kOk && pv_cache_used_pages(cache) == 5);
  feed(model, cache, first, 8, 0, 5 * kPage);
  pv_seq_free(cache, first);
  const int64_t second = pv_seq_new(cache), third = pv_seq_new(cache);
  CHECK(pv_seq_reserve(cache, second, 40) == kOk && pv_seq_reserve(cache, third, 2 * kPage) == kOk);
  CHECK(pv_seq_reserve(cache, third, 2 * kPage + 1) == kOutOfPages && pv_cache_used_pages(cache) == 5);
  const auto reused = feed(model, cache, second, 9, 0, 40);
  CHECK(same_bits(reused.data(), prefill(model, 9, 40, 40).data()));
  pv_cache_free(cache);  // with sequences still in it
}

// A sequence exported at every page boundary and imported into another cache (fresh, or on reused pages) decodes
// the same bits as the one it came from; only its own positions travel; every refusal leaves the target as it was.
void an_exported_sequence_decodes_as_it_would_have(void* model) {
  void* source = new_cache(model, 8);
  void* target = new_cache(model, 8);
  const int64_t seq = pv_seq_new(source);
  CHECK(pv_seq_reserve(source, seq, 5 * kPage) == kOk);
  feed(model, source, seq, 12, 0, 3 * kPage + 1);
  // Dirty the target's pages, so an import that left a byte unwritten would show.
  const int64_t dirt = pv_seq_new(target);
  CHECK(pv_seq_reserve(target, dirt, 4 * kPage) == kOk);
  feed(model, target, dirt, 13, 0, 4 * kPage);
  pv_seq_free(target, dirt);
  for (int64_t tokens : {int64_t{1}, kPage - 1, kPage, kPage + 1, 2 * kPage, 3 * kPage + 1}) {
    const int64_t bytes = pv_seq_export_bytes(source, tokens);
    CHECK(bytes == pv_seq_export_bytes(target, tokens) && bytes > 0);
    std::vector<uint8_t> out(static_cast<size_t>(bytes) + 1);
    CHECK(pv_seq_export(source, seq, tokens, out.data(), bytes + 1) == kBadArgument);
    CHECK(pv_seq_export(source, 999, tokens, out.data(), bytes) == kUnknownSequence);
    CHECK(pv_seq_export(source, seq, tokens, out.data(), bytes) == kOk);
    const int64_t copy = pv_seq_new(target);
    CHECK(pv_seq_import(target, copy, tokens, out.data(), bytes - 1) == kBadArgument && pv_seq_len(target, copy) == 0);
    CHECK(pv_seq_import(target, copy, tokens, out.data(), bytes) == kOk && pv_seq_len(target, copy) == tokens);
    CHECK(pv_seq_import(target, copy, tokens, out.data(), bytes) == kNotEmpty);
    CHECK(pv_seq_reserve(target, copy, 1) == kOk);
    const auto imported = feed(model, target, copy, 12, tokens, 1);
    CHECK(same_bits(imported.data(), prefill(model, 12, tokens + 1, tokens).data()));
    pv_seq_free(target, copy);
  }
  const int64_t longer = pv_seq_export_bytes(source, 3 * kPage + 2);
  std::vector<uint8_t> out(static_cast<size_t>(longer));
  CHECK(pv_seq_export(source, seq, 3 * kPage + 2, out.data(), longer) == kBadArgument);  // past its length
  CHECK(pv_seq_export_bytes(source, -1) == kBadArgument);
  void* small = new_cache(model, 2);
  const int64_t crowded = pv_seq_new(small);
  const int64_t three_pages = pv_seq_export_bytes(source, 3 * kPage);
  CHECK(pv_seq_export(source, seq, 3 * kPage, out.data(), three_pages) == kOk);
  CHECK(pv_seq_import(small, crowded, 3 * kPage, out.data(), three_pages) == kOutOfPages);
  CHECK(pv_seq_len(small, crowded) == 0 && pv_cache_used_pages(small) == 0);
  pv_cache_free(small);
  pv_cache_free(source);
  pv_cache_free(target);
}

// A q8_0 cache takes about half a float16 cache's bytes a page, and its logits stay close to float16's.
void a_q8_0_cache_is_smaller_and_close(void* model, int64_t head_dim) {
  void* half = nullptr;
  void* q8 = nullptr;
  CHECK(pv_cache_new(model, kPage, 4, kKvF16, &half) == kOk && pv_cache_new(model, kPage, 4, kKvQ8_0, &q8) == kOk);
  const int64_t vector_q8 = (head_dim + 31) / 32 * 2 + head_dim;
  CHECK(pv_cache_page_bytes(q8) * head_dim * 2 == pv_cache_page_bytes(half) * vector_q8);
  const int64_t a = pv_seq_new(half), b = pv_seq_new(q8);
  CHECK(pv_seq_reserve(half, a, 40) == kOk && pv_seq_reserve(q8, b, 40) == kOk);
  const auto exact = feed(model, half, a, 3, 0, 40), quantised = feed(model, q8, b, 3, 0, 40);
  double largest = 0.0, worst = 0.0;
  for (int64_t v = 0; v < kVocab; ++v) {
    largest = std::max(largest, static_cast<double>(std::fabs(exact[v])));
    worst = std::max(worst, static_cast<double>(std::fabs(exact[v] - quantised[v])));
  }
  CHECK(!same_bits(exact.data(), quantised.data()) && worst <= 0.05 * largest);
  pv_cache_free(half);
  pv_cache_free(q8);
}

// The MLP's gates: a value's result is the same bits wherever it falls (in a full 8 or in the tail), within a few
// ulps of libm's formula, and NaN, infinities and the float range's ends give what torch's would.
template <bool Gelu>
void gates_are_lane_wise_and_close_to_libm() {
  auto reference = [](double g, double up) {  // 0.5 g (1 + tanh(u)) as g / (1 + e^-2u): no cancellation near -1
    const double inner = 0.7978845608028654 * (g + 0.044715 * g * g * g);
    return g / (1.0 + std::exp(Gelu ? -2.0 * inner : -g)) * up;
  };
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> spread(-12.0f, 12.0f);
  std::vector<float> gates(64), ups(64), whole(64);
  for (int64_t i = 0; i < 64; ++i) gates[i] = spread(rng), ups[i] = spread(rng);
  gated<Gelu>(gates.data(), ups.data(), 64, whole.data());
  for (int64_t i = 0; i < 64; ++i) {
    const double expected = reference(gates[i], ups[i]);
    CHECK(std::fabs(whole[i] - expected) <= 4e-6 * std::fabs(expected) + 1e-30);
  }
  for (int64_t start = 0; start < 9; ++start)  // every tail length, from every offset
    for (int64_t n = 1; n <= 17; ++n) {
      std::vector<float> part(static_cast<size_t>(n));
      gated<Gelu>(gates.data() + start, ups.data() + start, n, part.data());
      CHECK(std::memcmp(part.data(), whole.data() + start, static_cast<size_t>(n) * sizeof(float)) == 0);
    }
  const float huge = 3.0e38f, inf = INFINITY;
  const float special_gates[] = {-huge, huge, -inf, inf, NAN, -100.0f, 100.0f, 0.0f, -0.0f};
  float special_ups[9], out[9];
  std::fill(special_ups, special_ups + 9, 1.0f);
  gated<Gelu>(special_gates, special_ups, 9, out);
  CHECK(out[0] == 0.0f && out[1] == huge && out[3] == inf && std::isnan(out[4]) && out[5] == 0.0f && out[6] == 100.0f);
  CHECK(std::isnan(out[2]));  // -inf times a sigmoid of 0, as torch's
  CHECK(out[7] == 0.0f && out[8] == 0.0f);
}

// Every index of every total visited once, on both sides of a chunk and of the threads' shares.
void the_pool_covers_every_index_once() {
  for (int64_t chunk : {1, 3, 4}) {
    for (int64_t total : {0, 1, 2, 3, 4, 5, 7, 8, 9, 64, 65}) {
      std::vector<std::atomic<int>> seen(static_cast<size_t>(total));
      run_chunks(total, chunk, [&](int64_t begin, int64_t end) {
        CHECK(begin >= 0 && begin < end && end <= total && end - begin <= chunk);
        for (int64_t i = begin; i < end; ++i) seen[static_cast<size_t>(i)].fetch_add(1);
      });
      for (const auto& count : seen) CHECK(count.load() == 1);
    }
  }
}

// The sliding layer forgets what falls out of its window: within it, a wider window gives the same bits.
void the_window_bounds_what_a_sliding_layer_sees(void* narrow) {
  TinyModel wide(Variant::kGemma3, 1000);
  for (int64_t length : {1, 7, 12, 13})
    CHECK(same_bits(prefill(narrow, 5, length, length).data(), prefill(wide.handle, 5, length, length).data()));
  for (int64_t length : {14, 40})
    CHECK(!same_bits(prefill(narrow, 5, length, length).data(), prefill(wide.handle, 5, length, length).data()));
}

std::vector<int32_t> text_of(int64_t seed, int64_t length) {
  std::vector<int32_t> tokens;
  for (int64_t i = 0; i < length; ++i) tokens.push_back(token_at(seed, i));
  return tokens;
}

// The texts' means from one pv_embed call, in steps of chunk tokens: texts.size() rows of hidden floats.
std::vector<float> embed(void* model, void* cache, const std::vector<std::vector<int32_t>>& texts, int64_t chunk,
                         int64_t hidden) {
  std::vector<int64_t> counts;
  std::vector<int32_t> tokens;
  for (const auto& text : texts) {
    counts.push_back(static_cast<int64_t>(text.size()));
    tokens.insert(tokens.end(), text.begin(), text.end());
  }
  std::vector<float> means(texts.size() * static_cast<size_t>(hidden));
  const auto rows = static_cast<int64_t>(texts.size());
  CHECK(pv_embed(model, cache, rows, counts.data(), tokens.data(), chunk, means.data()) == kOk);
  return means;
}

// Texts on both sides of a page (16 positions), of a projection's register tile (3 rows) and chunk (64 rows), and of
// the threads' shares (128 tokens): each text's mean is the same bits alone in one step, beside the others, and
// however the texts are cut into steps; every page comes back.
void embeddings_are_the_same_bits_alone_and_together(void* model, int64_t hidden) {
  void* cache = new_cache(model, 64);
  std::vector<std::vector<int32_t>> texts;
  for (int64_t length : {1, 2, 3, 4, 15, 16, 17, 32, 33, 63, 64, 65, 129}) texts.push_back(text_of(length, length));
  std::vector<std::vector<float>> alone;
  for (const auto& text : texts) alone.push_back(embed(model, cache, {text}, static_cast<int64_t>(text.size()), hidden));
  for (int64_t chunk : {1, 2, 3, 4, 16, 17, 64, 65, 128, 1000}) {
    const auto together = embed(model, cache, texts, chunk, hidden);
    for (size_t r = 0; r < texts.size(); ++r)
      CHECK(std::memcmp(alone[r].data(), &together[r * static_cast<size_t>(hidden)], sizeof(float) * hidden) == 0);
  }
  CHECK(pv_cache_used_pages(cache) == 0);
  pv_cache_free(cache);
}

// The head is linear: its image of a text's mean state is the mean of the logits after each of the text's positions,
// as the step gives them one position at a time.
void an_embedding_is_the_mean_of_the_final_normed_states(const TinyModel& model) {
  const int64_t hidden = model.shape.hidden, row_bytes = row_bytes_of(model.head_type, hidden);
  std::vector<float> head(static_cast<size_t>(kVocab * hidden));
  for (int64_t v = 0; v < kVocab; ++v)
    avx2::dequantise_row(model.blocks[model.head_blocks].data() + v * row_bytes, model.head_type, hidden / kBlock,
                   &head[static_cast<size_t>(v * hidden)]);
  for (int64_t length : {1, 2, 16, 17}) {
    void* cache = new_cache(model.handle, 4);
    const auto mean = embed(model.handle, cache, {text_of(11, length)}, 128, hidden);
    const int64_t seq = pv_seq_new(cache);
    CHECK(pv_seq_reserve(cache, seq, length) == kOk);
    std::vector<double> mean_logits(kVocab, 0.0);
    for (int64_t i = 0; i < length; ++i) {
      const auto logits = feed(model.handle, cache, seq, 11, i, 1);
      for (int64_t v = 0; v < kVocab; ++v) mean_logits[v] += logits[v] / static_cast<double>(length);
    }
    double largest = 0.0, worst = 0.0;
    for (int64_t v = 0; v < kVocab; ++v) {
      double image = 0.0;
      for (int64_t i = 0; i < hidden; ++i) image += static_cast<double>(head[v * hidden + i]) * mean[i];
      largest = std::max(largest, std::abs(mean_logits[v]));
      worst = std::max(worst, std::abs(image - mean_logits[v]));
    }
    CHECK(largest > 0.0 && worst <= 1e-4 * largest);
    pv_cache_free(cache);
  }
}

// Beside a row that is decoding, an embedding changes nothing of the row's, and takes no page for good; a refusal
// takes none at all.
void an_embedding_leaves_the_cache_as_it_found_it(void* model, int64_t hidden) {
  void* cache = new_cache(model, 8);
  const int64_t seq = pv_seq_new(cache);
  CHECK(pv_seq_reserve(cache, seq, 40) == kOk);
  feed(model, cache, seq, 4, 0, 20);
  const auto beside = embed(model, cache, {text_of(6, 17)}, 128, hidden);
  CHECK(pv_cache_used_pages(cache) == 3 && pv_seq_len(cache, seq) == 20);
  const auto decoded = feed(model, cache, seq, 4, 20, 1);
  CHECK(same_bits(decoded.data(), prefill(model, 4, 21, 20).data()));
  void* empty = new_cache(model, 2);
  CHECK(std::memcmp(beside.data(), embed(model, empty, {text_of(6, 17)}, 17, hidden).data(),
                    sizeof(float) * hidden) == 0);
  pv_cache_free(empty);
  const auto six_pages = text_of(7, 6 * kPage), three_pages = text_of(8, 3 * kPage);
  std::vector<float> means(2 * static_cast<size_t>(hidden));
  const int64_t one_page = kPage, zero = 0, two[2] = {3 * kPage, 3 * kPage};
  std::vector<int32_t> both(three_pages);
  both.insert(both.end(), three_pages.begin(), three_pages.end());
  const int32_t bad[1] = {static_cast<int32_t>(kVocab)};
  const int64_t six = 6 * kPage;
  CHECK(pv_embed(model, cache, 1, &six, six_pages.data(), 128, means.data()) == kOutOfPages);  // 5 pages are free
  CHECK(pv_embed(model, cache, 2, two, both.data(), 128, means.data()) == kOutOfPages);  // each fits, not both
  CHECK(pv_embed(model, cache, 1, &zero, bad, 128, means.data()) == kEmptyRow);
  CHECK(pv_embed(model, cache, 1, &one_page, six_pages.data(), 128, means.data()) == kOk);
  std::vector<int32_t> with_bad(six_pages.begin(), six_pages.begin() + kPage);
  with_bad.back() = bad[0];
  CHECK(pv_embed(model, cache, 1, &one_page, with_bad.data(), 128, means.data()) == kBadToken);
  CHECK(pv_embed(model, cache, 0, &one_page, six_pages.data(), 128, means.data()) == kBadArgument);
  CHECK(pv_embed(model, cache, 1, &one_page, six_pages.data(), 0, means.data()) == kBadArgument);
  CHECK(pv_cache_used_pages(cache) == 3 && pv_seq_len(cache, seq) == 21);
  pv_cache_free(cache);
}

// A q8_0 vector of ordinary values rounds as ggml's quantize_row_q8_0; one holding infinities or NaN (a broken
// model's activations) is written without an undefined conversion, every value in int8's range.
void q8_0_vectors_round_as_ggml_and_survive_broken_activations() {
  std::vector<float> x(80);
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(static_cast<float>(i)) * static_cast<float>(i % 7);
  std::vector<uint8_t> out(static_cast<size_t>(kv_vector_bytes(kKvQ8_0, 80)));
  store_vector(kKvQ8_0, x.data(), 80, out.data());
  const auto* values = reinterpret_cast<const int8_t*>(out.data() + 6);
  for (int64_t block = 0; block < 3; ++block) {
    uint16_t bits;
    std::memcpy(&bits, out.data() + 2 * block, 2);
    const float scale = _cvtsh_ss(bits);
    for (int64_t i = 32 * block; i < std::min<int64_t>(80, 32 * block + 32); ++i)
      CHECK(std::fabs(static_cast<float>(values[i]) * scale - x[static_cast<size_t>(i)]) <= 0.51f * scale + 1e-6f);
  }
  x[3] = INFINITY, x[40] = -INFINITY, x[70] = NAN;
  store_vector(kKvQ8_0, x.data(), 80, out.data());
  for (int64_t i = 0; i < 80; ++i) CHECK(values[i] >= -127 && values[i] <= 127);
}

// Attention walks a row's pages position by position: against a double-precision softmax of the values the cache
// holds, for heads of 16 to 112 (every count of 8-float registers a head's last 64 take), windows that start inside a
// page and lengths on both sides of every page and block of 8 scores, on both KV types.
void attention_matches_a_double_reference() {
  std::mt19937 random(7);
  std::normal_distribution<float> normal;
  for (const int64_t kv_type : {kKvF16, kKvQ8_0}) {
    for (const int64_t d : {int64_t{16}, int64_t{48}, int64_t{80}, int64_t{112}}) {
      KvCache cache;
      cache.layers = 2, cache.kv_heads = 2, cache.head_dim = d, cache.kv_type = kv_type;
      cache.page_tokens = kPage, cache.max_pages = 5;
      CHECK(cache.map_pool() == kOk);
      cache.sequences.try_emplace(1);
      CHECK(cache.reserve(1, 70) == kOk);
      uint8_t* const* pages = cache.sequences[1].pages.data();
      std::vector<float> vector(static_cast<size_t>(d)), q(static_cast<size_t>(d)), out(vector.size());
      for (int64_t t = 0; t < 70; ++t)
        for (int64_t which = 0; which < 2; ++which) {
          for (float& value : vector) value = normal(random);
          store_vector(kv_type, vector.data(), d, cache.kv_at(pages[t / kPage], 1, which, 1, t % kPage));
        }
      for (float& value : q) value = normal(random);
      const auto held = [&](int64_t which, int64_t t) {  // position t's key or value as the cache holds it
        std::vector<float> floats(static_cast<size_t>(d));
        const uint8_t* stored = cache.kv_at(pages[t / kPage], 1, which, 1, t % kPage);
        for (int64_t i = 0; i < d; i += 8)
          _mm256_storeu_ps(&floats[static_cast<size_t>(i)],
                           kv_type == kKvQ8_0 ? load8<kKvQ8_0>(stored, i, d) : load8<kKvF16>(stored, i, d));
        return floats;
      };
      for (const auto& [begin, length] : std::initializer_list<std::pair<int64_t, int64_t>>{
               {0, 1}, {0, 7}, {0, 8}, {0, 9}, {0, 15}, {0, 16}, {0, 17}, {0, 33}, {3, 17}, {13, 30}, {17, 70}}) {
        std::vector<float> scores(static_cast<size_t>((length - begin + 7) / 8 * 8));
        (kv_type == kKvQ8_0 ? attend<kKvQ8_0> : attend<kKvF16>)(cache, pages, 1, 1, 0.125f, q.data(), begin, length,
                                                                scores.data(), out.data());
        std::vector<double> weights;
        double best = -INFINITY, total = 0.0;
        for (int64_t t = begin; t < length; ++t) {
          const auto key = held(0, t);
          double dot = 0.0;
          for (size_t i = 0; i < key.size(); ++i) dot += static_cast<double>(q[i]) * key[i];
          weights.push_back(dot * 0.125);
          best = std::max(best, weights.back());
        }
        for (double& weight : weights) total += (weight = std::exp(weight - best));
        std::vector<double> want(static_cast<size_t>(d));
        for (int64_t t = begin; t < length; ++t) {
          const auto value = held(1, t);
          const double weight = weights[static_cast<size_t>(t - begin)] / total;
          for (size_t i = 0; i < want.size(); ++i) want[i] += weight * value[i];
        }
        for (size_t i = 0; i < want.size(); ++i)
          CHECK(std::fabs(out[i] - want[i]) <= 1e-5 * (1.0 + std::fabs(want[i])));
      }
    }
  }
}

// Counts a hostile file could give: none positive-less or past the bounds is taken, and none divides by zero.
void hostile_dimensions_are_refused() {
  const int64_t good[7] = {kVocab, 64, 96, 2, 4, 2, 16};
  void* model = nullptr;
  CHECK(pv_model_new(good, 1e-5, 10000.0, 1, &model) == kOk && model != nullptr);
  for (int i = 0; i < 7; ++i) {
    for (int64_t bad : {int64_t{0}, int64_t{-1}, int64_t{1} << 31, INT64_MAX}) {
      int64_t dims[7];
      std::copy(good, good + 7, dims);
      dims[i] = bad;
      void* refused = &dims;
      CHECK(pv_model_new(dims, 1e-5, 10000.0, 1, &refused) == kBadDimensions && refused == nullptr);
    }
  }
  void* cache = &model;
  CHECK(pv_cache_new(model, 0, 4, kKvF16, &cache) == kBadArgument && cache == nullptr);
  CHECK(pv_cache_new(model, kPage, -1, kKvF16, &cache) == kBadArgument);
  CHECK(pv_cache_new(model, kPage, INT64_MAX, kKvF16, &cache) == kBadArgument);  // its bytes overflow
  CHECK(pv_cache_new(model, kPage, 4, 2, &cache) == kBadArgument);  // no such KV type
  CHECK(pv_cache_new(model, kPage, 4, -1, &cache) == kBadArgument);
  CHECK(pv_cache_new(model, kPage, int64_t{1} << 40, kKvF16, &cache) == kOutOfMemory && cache == nullptr);  // 4 PB
  CHECK(pv_cache_new(model, kPage, 0, kKvQ8_0, &cache) == kOk);
  const int64_t seq = pv_seq_new(cache);
  CHECK(pv_seq_reserve(cache, seq, 0) == kOk && pv_seq_reserve(cache, seq, 1) == kOutOfPages);
  pv_cache_free(cache);
  pv_model_free(model);
}

// Tensors are named as GGUF names them: an unknown name is told apart from a known one of the wrong shape.
void tensors_are_set_and_refused_by_name() {
  const int64_t dims[7] = {kVocab, 64, 96, 2, 4, 2, 16};
  void* model = nullptr;
  CHECK(pv_model_new(dims, 1e-5, 10000.0, 1, &model) == kOk);
  const std::vector<float> norm(64, 1.0f);
  for (const char* unknown : {"rope_factors_long.weight", "blk.0.attn_norm", "blk..attn_norm.weight",
                              "blk.x.attn_norm.weight", "blk.1234567.attn_norm.weight", "attn_norm.weight", ""})
    CHECK(pv_model_set(model, unknown, norm.data(), kF32, 1, 64) == kUnknownTensor);
  CHECK(pv_model_set(model, nullptr, norm.data(), kF32, 1, 64) == kUnknownTensor);
  CHECK(pv_model_set(model, "blk.1.attn_norm.weight", norm.data(), kF32, 1, 64) == kOk);
  CHECK(pv_model_set(model, "blk.2.attn_norm.weight", norm.data(), kF32, 1, 64) == kBadTensor);  // 2 layers
  CHECK(pv_model_set(model, "blk.1.attn_norm.weight", norm.data(), kF32, 1, 32) == kBadTensor);
  CHECK(pv_model_set(model, "blk.1.attn_norm.weight", norm.data(), kQ8_0, 1, 64) == kBadTensor);
  CHECK(pv_model_set(model, "blk.1.attn_norm.weight", nullptr, kF32, 1, 64) == kBadArgument);
  CHECK(pv_model_set(model, "blk.1.attn_q.weight", norm.data(), kQ8_0, 63, 64) == kBadTensor);  // 64 rows
  CHECK(pv_model_set(model, "blk.1.attn_q.weight", norm.data(), kQ8_0, 64, 48) == kBadTensor);  // not blocks
  CHECK(pv_model_set(model, "blk.1.attn_qkv.weight", norm.data(), kQ8_0, 64 + 32, 64) == kBadTensor);
  CHECK(pv_model_set(model, "rope_freqs.weight", norm.data(), kF32, 1, 8) == kOk);
  CHECK(pv_model_set(model, "rope_freqs.weight", norm.data(), kF32, 1, 8) == kAlreadySet);
  CHECK(missing_of(model) == "token_embd.weight");
  char small[4] = "";
  CHECK(pv_model_check(model, small, sizeof small) == kMissingTensor && std::strcmp(small, "tok") == 0);
  pv_model_free(model);
  CHECK(std::strcmp(pv_status_reason(kOutOfPages), "out of KV pages") == 0);
  CHECK(std::strcmp(pv_status_reason(kOutOfMemory - 1), "unknown status") == 0);
  CHECK(pv_abi_version() == kAbiVersion);
}

// Which parts to run: the arguments name them ("basics", "llama", "gemma3", "longrope", "wide_heads"); none, all.
// test_binding.py runs two processes of this binary at once, each with half of the parts.
bool wanted(int argc, char** argv, const char* part) {
  if (argc < 2) return true;
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], part) == 0) return true;
  return false;
}

int run(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string part = argv[i];
    if (part != "basics" && part != "llama" && part != "gemma3" && part != "longrope" && part != "wide_heads") {
      std::fprintf(stderr, "no such part: %s\n", argv[i]);
      return 2;
    }
  }
  if (wanted(argc, argv, "basics")) {
    hostile_dimensions_are_refused();
    q8_0_vectors_round_as_ggml_and_survive_broken_activations();
    tensors_are_set_and_refused_by_name();
    the_pool_covers_every_index_once();
    attention_matches_a_double_reference();
    gates_are_lane_wise_and_close_to_libm<false>();
    gates_are_lane_wise_and_close_to_libm<true>();
  }
  const std::pair<Variant, const char*> variants[] = {{Variant::kLlama, "llama"},
                                                      {Variant::kGemma3, "gemma3"},
                                                      {Variant::kLongRope, "longrope"},
                                                      {Variant::kWideHeads, "wide_heads"}};
  for (const auto& [variant, name] : variants) {
    if (!wanted(argc, argv, name)) continue;
    TinyModel model(variant);
    for (const int64_t kv_type : {kKvF16, kKvQ8_0}) {
      g_kv_type = kv_type;
      if (kv_type == kKvF16) {
        chunks_and_pages_give_the_same_bits(model.handle);
        every_kernel_family_gives_the_same_bits(model.handle);  // whose attention is one, whatever the KV type
      } else {  // each page's and block of 8 scores' boundaries, and a few batches
        chunks_and_pages_give_the_same_bits(model.handle, {1, 7, 8, 9, 15, 16, 17, 33, 65}, {1, 8, 16, 17});
        every_batch_size_gives_each_row_its_bits_alone(model.handle, {1, 2, 9, 17});
      }
      the_cache_keeps_its_books(model.handle);
      reused_pages_give_the_same_bits(model.handle);
      an_exported_sequence_decodes_as_it_would_have(model.handle);
      an_embedding_leaves_the_cache_as_it_found_it(model.handle, model.shape.hidden);
      if (variant == Variant::kGemma3) the_window_bounds_what_a_sliding_layer_sees(model.handle);
    }
    g_kv_type = kKvF16;  // an embedding's pages are its own and read by its own steps alone: one KV type covers them
    threads_do_not_change_the_bits(model.handle);
    embeddings_are_the_same_bits_alone_and_together(model.handle, model.shape.hidden);
    an_embedding_is_the_mean_of_the_final_normed_states(model);
    a_q8_0_cache_is_smaller_and_close(model.handle, model.shape.head_dim);
  }
  if (palaver_test::failures) {
    std::fprintf(stderr, "%d checks failed\n", palaver_test::failures);
    return 1;
  }
  std::printf("all native step checks passed\n");
  return 0;
}

}  // namespace native_step_test
