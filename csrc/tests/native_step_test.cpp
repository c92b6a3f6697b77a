// The native step's own tests, built with AddressSanitizer and UndefinedBehaviorSanitizer (tests/engine/native/test_binding.py
// compiles and runs this): a random model of every block type, batches of 1 to 130 rows, prefill chunks and sequence
// lengths on both sides of every page and tile boundary, and the cache's bookkeeping; then the same for a Gemma 3
// model, whose sliding layer's window (13 positions) starts inside a page and inside a block of 8 scores; and for a
// model that rotates half of each head with LongRoPE's factors (Phi-3.5, Phi-4-mini).

#include "check.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

extern "C" {
void* pv_model_new(const int64_t* dims, double eps, double rope_base, int64_t adjacent_pairs);
void pv_model_free(void* model);
int64_t pv_model_set(void* model, int64_t layer, int64_t part, const void* data, int64_t type, int64_t rows,
                     int64_t cols);
int64_t pv_model_check(void* model);
int64_t pv_model_gemma3(void* model, double attn_scale, double rope_factor, int64_t window, double local_base,
                        const int8_t* sliding);
int64_t pv_model_rope(void* model, int64_t rotary_dims, double base, const float* factors, double attention_factor);
void* pv_cache_new(void* model, int64_t page_tokens, int64_t max_pages);
void pv_cache_free(void* cache);
int64_t pv_cache_used_pages(void* cache);
int64_t pv_seq_new(void* cache);
void pv_seq_free(void* cache, int64_t seq);
int64_t pv_seq_len(void* cache, int64_t seq);
int64_t pv_seq_reserve(void* cache, int64_t seq, int64_t tokens);
void pv_seq_truncate(void* cache, int64_t seq, int64_t length);
int64_t pv_seq_copy(void* cache, int64_t dst, int64_t src, int64_t tokens);
int64_t pv_step(void* model, void* cache, int64_t rows, const int64_t* seqs, const int64_t* counts,
                const int32_t* tokens, const int8_t* want, float* logits);
void pv_set_threads(int64_t threads);
}

namespace {

constexpr int64_t kVocab = 97, kHidden = 64, kFfn = 96, kLayers = 2, kHeads = 4, kKvHeads = 2, kHeadDim = 16;
constexpr int64_t kPage = 16;
constexpr int64_t kF32 = 0, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8;

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

struct TinyModel {
  std::vector<std::vector<uint8_t>> blocks;
  std::vector<std::vector<float>> norms;
  void* handle = nullptr;

  // window > 0 makes it a Gemma 3 whose first layer slides over that many positions; long_rope, a model that
  // rotates the first half of each head with LongRoPE's factors.
  explicit TinyModel(int64_t window = 0, bool long_rope = false) {
    std::mt19937 rng(7);
    const int64_t dims[7] = {kVocab, kHidden, kFfn, kLayers, kHeads, kKvHeads, kHeadDim};
    handle = pv_model_new(dims, 1e-5, 10000.0, window > 0 || long_rope ? 0 : 1);
    if (long_rope) {
      const float factors[kHeadDim / 4] = {1.0f, 1.5f, 3.0f, 7.5f};
      CHECK(pv_model_rope(handle, kHeadDim + 2, 10000.0, factors, 1.2) == -1);  // wider than a head
      CHECK(pv_model_rope(handle, kHeadDim / 2, 10000.0, factors, 1.2) == 0);
      CHECK(pv_model_rope(handle, kHeadDim / 2, 10000.0, factors, 1.2) == -1);  // once
    }
    const int8_t sliding[kLayers] = {1, 0};
    if (window > 0) {
      CHECK(pv_model_gemma3(handle, 0.2, 2.0, window, 10000.0, sliding) == 0);
      CHECK(pv_model_gemma3(handle, 0.2, 2.0, window, 10000.0, sliding) == -1);  // once
    }
    const int64_t types[3] = {kQ4_0, kQ4_1, kQ8_0};
    int64_t next = 0;
    auto matrix = [&](int64_t layer, int64_t part, int64_t rows, int64_t cols) {
      const int64_t type = types[next++ % 3];
      blocks.push_back(random_blocks(rng, type, rows, cols));
      CHECK(pv_model_set(handle, layer, part, blocks.back().data(), type, rows, cols) == 0);
    };
    auto norm = [&](int64_t layer, int64_t part) {
      std::uniform_real_distribution<float> around_one(0.8f, 1.2f);
      norms.emplace_back(kHidden);
      for (float& value : norms.back()) value = around_one(rng);
      CHECK(pv_model_set(handle, layer, part, norms.back().data(), kF32, 1, kHidden) == 0);
    };
    matrix(-1, 0, kVocab, kHidden);
    matrix(-1, 1, kVocab, kHidden);
    norm(-1, 2);
    for (int64_t layer = 0; layer < kLayers; ++layer) {
      norm(layer, 10);
      norm(layer, 11);
      matrix(layer, 12, kHeads * kHeadDim, kHidden);
      matrix(layer, 13, kKvHeads * kHeadDim, kHidden);
      matrix(layer, 14, kKvHeads * kHeadDim, kHidden);
      matrix(layer, 15, kHidden, kHeads * kHeadDim);
      matrix(layer, 16, kFfn, kHidden);
      matrix(layer, 17, kFfn, kHidden);
      matrix(layer, 18, kHidden, kFfn);
    }
    // Qwen2's Q/K/V biases on the first layer: a bias alone is refused by the check, all three are served.
    for (int64_t part : {19, 20, 21}) {
      const int64_t width = (part == 19 ? kHeads : kKvHeads) * kHeadDim;
      std::uniform_real_distribution<float> bias(-0.5f, 0.5f);
      norms.emplace_back(width);
      for (float& value : norms.back()) value = bias(rng);
      CHECK(pv_model_set(handle, 0, part, norms.back().data(), kF32, 1, width) == 0);
      CHECK(pv_model_check(handle) == (part == 21 ? 0 : -1));
    }
    CHECK(pv_model_set(handle, 0, 19, norms.back().data(), kF32, 1, kKvHeads * kHeadDim) == -1);
    // Qwen3's head norms on the second layer: both or neither.
    for (int64_t part : {22, 23}) {
      std::uniform_real_distribution<float> around_one(0.5f, 1.5f);
      norms.emplace_back(kHeadDim);
      for (float& value : norms.back()) value = around_one(rng);
      CHECK(pv_model_set(handle, 1, part, norms.back().data(), kF32, 1, kHeadDim) == 0);
      CHECK(pv_model_check(handle) == (part == 23 ? 0 : -2));
    }
    CHECK(pv_model_check(handle) == 0);
    if (window > 0) {  // Gemma 3's norms of the attention's and the MLP's outputs: both or neither
      for (int64_t layer = 0; layer < kLayers; ++layer) {
        norm(layer, 24);
        CHECK(pv_model_check(handle) == -(layer + 1));
        norm(layer, 25);
      }
      CHECK(pv_model_check(handle) == 0);
    }
  }
  ~TinyModel() { pv_model_free(handle); }
};

int32_t token_at(int64_t seed, int64_t i) { return static_cast<int32_t>((seed * 31 + i * 7) % kVocab); }

// Prefill length tokens in chunks of chunk into a fresh cache; return the logits after the last one.
std::vector<float> prefill(void* model, int64_t seed, int64_t length, int64_t chunk) {
  void* cache = pv_cache_new(model, kPage, 64);
  const int64_t seq = pv_seq_new(cache);
  CHECK(pv_seq_reserve(cache, seq, length) == 0);
  std::vector<float> logits(kVocab);
  for (int64_t start = 0; start < length; start += chunk) {
    const int64_t count = std::min(chunk, length - start);
    std::vector<int32_t> tokens;
    for (int64_t i = start; i < start + count; ++i) tokens.push_back(token_at(seed, i));
    const int8_t want = start + count == length;
    CHECK(pv_step(model, cache, 1, &seq, &count, tokens.data(), &want, logits.data()) == 0);
  }
  CHECK(pv_seq_len(cache, seq) == length);
  pv_cache_free(cache);
  return logits;
}

void chunks_and_pages_give_the_same_bits(void* model) {
  for (int64_t length : {1, 12, 13, 14, 15, 16, 17, 21, 22, 31, 32, 33, 47, 48, 49, 64, 65, 130}) {
    const auto whole = prefill(model, length, length, length);
    for (int64_t chunk : {1, 3, 15, 16, 17, 33}) {
      const auto chunked = prefill(model, length, length, chunk);
      CHECK(std::memcmp(whole.data(), chunked.data(), sizeof(float) * kVocab) == 0);
    }
  }
}

void every_batch_size_gives_each_row_its_bits_alone(void* model) {
  for (int64_t rows = 1; rows <= 130; ++rows) {
    void* cache = pv_cache_new(model, kPage, rows * 3);
    std::vector<int64_t> seqs, counts;
    std::vector<int32_t> tokens;
    for (int64_t r = 0; r < rows; ++r) {
      seqs.push_back(pv_seq_new(cache));
      counts.push_back(1 + (r * 5) % 19);  // 1 to 19 tokens: some rows cross a page inside the step
      CHECK(pv_seq_reserve(cache, seqs.back(), counts.back()) == 0);
      for (int64_t i = 0; i < counts.back(); ++i) tokens.push_back(token_at(r, i));
    }
    std::vector<int8_t> want(static_cast<size_t>(rows), 1);
    std::vector<float> together(static_cast<size_t>(rows * kVocab));
    CHECK(pv_step(model, cache, rows, seqs.data(), counts.data(), tokens.data(), want.data(), together.data()) == 0);
    for (int64_t r : {int64_t{0}, rows / 2, rows - 1}) {
      const auto alone = prefill(model, r, counts[static_cast<size_t>(r)], 64);
      CHECK(std::memcmp(alone.data(), &together[static_cast<size_t>(r * kVocab)], sizeof(float) * kVocab) == 0);
    }
    pv_cache_free(cache);
  }
}

void threads_do_not_change_the_bits(void* model) {
  pv_set_threads(1);
  const auto one = prefill(model, 3, 70, 70);
  pv_set_threads(2);
  const auto two = prefill(model, 3, 70, 70);
  CHECK(std::memcmp(one.data(), two.data(), sizeof(float) * kVocab) == 0);
}

void the_cache_keeps_its_books(void* model) {
  void* cache = pv_cache_new(model, kPage, 4);
  const int64_t a = pv_seq_new(cache), b = pv_seq_new(cache);
  CHECK(pv_seq_reserve(cache, a, 40) == 0 && pv_cache_used_pages(cache) == 3);
  CHECK(pv_seq_reserve(cache, b, 17) == -2 && pv_cache_used_pages(cache) == 3);  // all or none
  CHECK(pv_seq_reserve(cache, 999, 1) == -1);
  std::vector<int32_t> tokens(40);
  for (int64_t i = 0; i < 40; ++i) tokens[static_cast<size_t>(i)] = token_at(1, i);
  const int64_t forty = 40;
  const int8_t want = 0;
  CHECK(pv_step(model, cache, 1, &a, &forty, tokens.data(), &want, nullptr) == 0);
  pv_seq_truncate(cache, a, 17);
  CHECK(pv_seq_len(cache, a) == 17 && pv_cache_used_pages(cache) == 2);
  CHECK(pv_seq_copy(cache, b, a, 17) == 0 && pv_seq_len(cache, b) == 17 && pv_cache_used_pages(cache) == 4);
  const int64_t c = pv_seq_new(cache);
  CHECK(pv_seq_copy(cache, c, a, 17) == -2 && pv_seq_len(cache, c) == 0);  // no room: nothing copied
  CHECK(pv_seq_copy(cache, b, a, 1) == -1);  // the target must be empty
  // Bad steps: past the reservation, a sequence twice, a token out of range, no tokens, an unknown sequence.
  std::vector<float> logits(2 * kVocab);
  const int64_t one = 1, zero = 0, past = 16;
  const int64_t twice[2] = {a, a}, ones[2] = {1, 1};
  const int32_t bad_token = kVocab, good[2] = {1, 2};
  const int8_t wants[2] = {1, 1};
  const int64_t unknown = 12345;
  CHECK(pv_step(model, cache, 1, &a, &past, tokens.data(), wants, logits.data()) == -1);
  CHECK(pv_step(model, cache, 2, twice, ones, good, wants, logits.data()) == -1);
  CHECK(pv_step(model, cache, 1, &a, &one, &bad_token, wants, logits.data()) == -1);
  CHECK(pv_step(model, cache, 1, &a, &zero, good, wants, logits.data()) == -1);
  CHECK(pv_step(model, cache, 1, &unknown, &one, good, wants, logits.data()) == -1);
  CHECK(pv_seq_len(cache, a) == 17);
  pv_seq_free(cache, a);
  pv_seq_free(cache, b);
  pv_seq_free(cache, c);
  pv_seq_free(cache, 999);
  CHECK(pv_cache_used_pages(cache) == 0);
  pv_cache_free(cache);
}

}  // namespace

// The sliding layer forgets what falls out of its window: within it, a wider window gives the same bits.
void the_window_bounds_what_a_sliding_layer_sees(void* narrow) {
  TinyModel wide(1000);
  for (int64_t length : {1, 7, 12, 13})
    CHECK(std::memcmp(prefill(narrow, 5, length, length).data(), prefill(wide.handle, 5, length, length).data(),
                      sizeof(float) * kVocab) == 0);
  for (int64_t length : {14, 40})
    CHECK(std::memcmp(prefill(narrow, 5, length, length).data(), prefill(wide.handle, 5, length, length).data(),
                      sizeof(float) * kVocab) != 0);
}

// Counts a hostile file could give: none positive-less or past the bounds is taken, and none divides by zero.
void hostile_dimensions_are_refused() {
  const int64_t good[7] = {kVocab, kHidden, kFfn, kLayers, kHeads, kKvHeads, kHeadDim};
  void* model = pv_model_new(good, 1e-5, 10000.0, 1);
  CHECK(model != nullptr);
  pv_model_free(model);
  for (int i = 0; i < 7; ++i) {
    for (int64_t bad : {int64_t{0}, int64_t{-1}, int64_t{1} << 31, INT64_MAX}) {
      int64_t dims[7];
      std::copy(good, good + 7, dims);
      dims[i] = bad;
      CHECK(pv_model_new(dims, 1e-5, 10000.0, 1) == nullptr);
    }
  }
}

int main() {
  hostile_dimensions_are_refused();
  for (int64_t variant = 0; variant < 3; ++variant) {
    const int64_t window = variant == 1 ? 13 : 0;
    TinyModel model(window, variant == 2);
    chunks_and_pages_give_the_same_bits(model.handle);
    every_batch_size_gives_each_row_its_bits_alone(model.handle);
    threads_do_not_change_the_bits(model.handle);
    the_cache_keeps_its_books(model.handle);
    if (window > 0) the_window_bounds_what_a_sliding_layer_sees(model.handle);
  }
  if (palaver_test::failures) {
    std::fprintf(stderr, "%d checks failed\n", palaver_test::failures);
    return 1;
  }
  std::printf("all native step checks passed\n");
  return 0;
}
