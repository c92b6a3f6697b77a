// Attention over a row's own pages of the KV cache: one query head of one token at a time, in float32, in an order
// that does not depend on where a position falls in a block or a page.
#pragma once

#include "blocks.h"
#include "kv_cache.h"
#include "vector_math.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace palaver {

// Sum each of 8 accumulators across its lanes, as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)); lane j of the result is
// accumulator j's sum, which depends on that accumulator alone.
inline __m256 sums_of(const __m256 (&acc)[8]) {
  const __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
  const __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

// Values i to i + 7 of one head's key or value as the cache holds it, in float32. A q8_0 value is its int8 times its
// block's float16 scale, a product float32 holds exactly.
template <int64_t Type>
inline __m256 load8(const uint8_t* vector, int64_t i, int64_t head_dim) {
  if constexpr (Type == kKvQ8_0) {
    uint16_t scale_bits;
    std::memcpy(&scale_bits, vector + i / 32 * 2, 2);
    const __m256 scale = _mm256_set1_ps(_cvtsh_ss(scale_bits));
    const uint8_t* values = vector + (head_dim + 31) / 32 * 2 + i;
    const __m256i ints = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(values)));
    return _mm256_mul_ps(_mm256_cvtepi32_ps(ints), scale);
  } else {
    (void)head_dim;
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(vector + 2 * i)));
  }
}

// Write one head's key or value into the cache as kv_type says. q8_0 rounds as ggml's quantize_row_q8_0 does: each
// block's scale is its largest magnitude over 127, and each value its nearest multiple of that scale.
inline void store_vector(int64_t kv_type, const float* x, int64_t head_dim, uint8_t* out) {
  if (kv_type != kKvQ8_0) {
    for (int64_t i = 0; i < head_dim; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    return;
  }
  auto* values = reinterpret_cast<int8_t*>(out + (head_dim + 31) / 32 * 2);
  for (int64_t b = 0; b < head_dim; b += 32) {
    const int64_t end = std::min<int64_t>(b + 32, head_dim);
    float largest = 0.0f;
    for (int64_t i = b; i < end; ++i) largest = std::max(largest, std::fabs(x[i]));
    const float scale = largest / 127.0f;
    const float inverse = scale != 0.0f ? 1.0f / scale : 0.0f;
    const auto scale_bits = static_cast<uint16_t>(_cvtss_sh(scale, _MM_FROUND_TO_NEAREST_INT));
    std::memcpy(out + b / 32 * 2, &scale_bits, 2);
    for (int64_t i = b; i < end; ++i) {
      const float q = std::nearbyint(x[i] * inverse);
      values[i] = static_cast<int8_t>(q >= -127.0f && q <= 127.0f ? q : 0.0f);  // NaN, from a broken model's inf: 0
    }
  }
}

// Ask for the next page's keys or values while this page's are used: pages lie anywhere in the pool, so the
// hardware's prefetchers cannot see the next one coming.
inline void prefetch_page(const uint8_t* first, int64_t bytes) {
  for (int64_t line = 0; line < bytes; line += 64)
    _mm_prefetch(reinterpret_cast<const char*>(first + line), _MM_HINT_T0);
}

// One query head of one token attending over positions [begin, length) of its sequence's pages, which hold keys and
// values of KV type Type. scores holds length - begin rounded up to 8 floats. Every position's score, weight and
// contribution is computed the same way wherever it falls, so the result depends only on the query and the row's own
// keys and values.
template <int64_t Type>
inline void attend(const KvCache& cache, uint8_t* const* pages, int64_t layer, int64_t kv_head, float attn_scale,
                   const float* q, int64_t begin, int64_t length, float* all_scores, float* out) {
  const int64_t d = cache.head_dim, page_tokens = cache.page_tokens, stride = cache.vector_bytes;
  // Positions are walked in order, a slot and a page at a time, with no division by the page size for each.
  const int64_t keys_at = cache.kv_at(pages[0], layer, 0, kv_head, 0) - pages[0];
  const int64_t values_at = cache.kv_at(pages[0], layer, 1, kv_head, 0) - pages[0];
  float* scores = all_scores - begin;  // indexed by position: scores[begin] is the buffer's first float
  const __m256 scale = _mm256_set1_ps(attn_scale);
  // Scores, 8 positions at a time: 8 independent accumulators instead of one dependent chain per position.
  // Positions past the end re-read the first key of the block; their lanes are dropped.
  __m256 best8 = _mm256_set1_ps(-INFINITY);
  int64_t page = begin / page_tokens, slot = begin % page_tokens;
  for (int64_t t0 = begin; t0 < length; t0 += 8) {
    const uint8_t* keys[8];
    for (int64_t j = 0; j < 8; ++j) {
      if (t0 + j >= length) {
        keys[j] = keys[0];
        continue;
      }
      keys[j] = pages[page] + keys_at + slot * stride;
      if (slot == 0 && t0 + j + page_tokens < length) prefetch_page(pages[page + 1] + keys_at, page_tokens * stride);
      if (++slot == page_tokens) slot = 0, ++page;
    }
    __m256 acc[8];
    for (auto& a : acc) a = _mm256_setzero_ps();
    for (int64_t i = 0; i < d; i += 8) {
      const __m256 qv = _mm256_loadu_ps(q + i);
      for (int64_t j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(qv, load8<Type>(keys[j], i, d), acc[j]);
    }
    const __m256 block = _mm256_mul_ps(sums_of(acc), scale);
    _mm256_storeu_ps(scores + t0, block);
    const int64_t valid = std::min<int64_t>(8, length - t0);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)), lanes));
    best8 = _mm256_max_ps(best8, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), block, keep));
  }
  float lanes_best[8];
  _mm256_storeu_ps(lanes_best, best8);
  float best = lanes_best[0];
  for (float value : lanes_best) best = std::max(best, value);
  // Softmax weights: exp(score - best), summed in 8 lanes (dropped lanes add zero).
  __m256 total8 = _mm256_setzero_ps();
  for (int64_t t0 = begin; t0 < length; t0 += 8) {
    const __m256 weight = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + t0), _mm256_set1_ps(best)));
    const int64_t valid = std::min<int64_t>(8, length - t0);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)), lanes));
    const __m256 kept = _mm256_and_ps(weight, keep);
    _mm256_storeu_ps(scores + t0, kept);
    total8 = _mm256_add_ps(total8, kept);
  }
  const __m256 total = _mm256_set1_ps(horizontal_sum(total8));
  // The weighted values, position by position, into one accumulator per 8 dimensions (64 at a time). The count of
  // accumulators is a constant in each instance, so they stay in registers: counted at run time, they lived on the
  // stack, and each position's multiply-add waited on a store and a load.
  const auto weigh = [&]<int Width>(int64_t d0) {
    __m256 acc[Width];
    for (auto& a : acc) a = _mm256_setzero_ps();
    int64_t value_page = begin / page_tokens, value_slot = begin % page_tokens;
    for (int64_t t = begin; t < length; ++t) {
      const uint8_t* v = pages[value_page] + values_at + value_slot * stride;
      if (value_slot == 0 && t + page_tokens < length)
        prefetch_page(pages[value_page + 1] + values_at, page_tokens * stride);
      if (++value_slot == page_tokens) value_slot = 0, ++value_page;
      const __m256 weight = _mm256_set1_ps(scores[t]);
      for (int a = 0; a < Width; ++a) acc[a] = _mm256_fmadd_ps(weight, load8<Type>(v, d0 + 8 * a, d), acc[a]);
    }
    for (int a = 0; a < Width; ++a) _mm256_storeu_ps(out + d0 + 8 * a, _mm256_div_ps(acc[a], total));
  };
  for (int64_t d0 = 0; d0 < d; d0 += 64) {
    switch (std::min<int64_t>(64, d - d0) / 8) {
      case 8: weigh.template operator()<8>(d0); break;
      case 7: weigh.template operator()<7>(d0); break;
      case 6: weigh.template operator()<6>(d0); break;
      case 5: weigh.template operator()<5>(d0); break;
      case 4: weigh.template operator()<4>(d0); break;
      case 3: weigh.template operator()<3>(d0); break;
      case 2: weigh.template operator()<2>(d0); break;
      default: weigh.template operator()<1>(d0); break;
    }
  }
}

}  // namespace palaver
