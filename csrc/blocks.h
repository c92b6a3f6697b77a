// GGUF blocks (Q4_0, Q4_1, Q8_0) read in float32, and the dot products over them: one place for both libraries.
//
// Each weight is dequantised exactly as gguf-py does (q * d, (q - 8) * d, q * d + m, all exact or rounded once in
// float32). Every dot product uses one 8-lane accumulator over k = lane, lane + 8, ... in order and a fixed
// horizontal sum, whichever path computes it: a row's result does not depend on which other rows share the call.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace palaver {

constexpr int64_t kBlock = 32;  // weights per GGUF block, for every type served here
enum QuantType : int64_t { kF32 = 0, kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8 };  // ggml's type numbers

// Bytes of one block: a float16 scale, [a float16 minimum,] then the weights; 0 for types not served here.
constexpr int64_t block_bytes(int64_t type) {
  return type == kQ4_0 ? 2 + 16 : type == kQ4_1 ? 2 + 2 + 16 : type == kQ8_0 ? 2 + 32 : 0;
}

inline float half_to_float(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return _cvtsh_ss(bits);
}

inline float horizontal_sum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_shuffle_ps(sum, sum, 1));
  return _mm_cvtss_f32(sum);
}

constexpr int64_t kTileN = 4;   // weight rows dequantised together and reused across input rows
constexpr int64_t kTileM = 3;   // input rows per register tile: 12 accumulators, 3 inputs, 1 weight
constexpr int64_t kChunkM = 64; // input rows kept hot in cache while a tile of weights is reused
// Prefetch this far ahead of the weights being read: the hardware prefetchers fall behind on a tile's four
// interleaved row streams (measured: a decode step's kernel time fell by a third at 4 KB).
constexpr int64_t kPrefetchBytes = 4096;

// Write a register tile's dot products to y. Constant bounds keep the accumulators in registers; the tile's
// edge is cut when copying out.
template <int Rows>
inline void store_tile(const __m256 (&acc)[Rows][kTileN], int64_t tile_n, float* y, int64_t n_out) {
  float sums[Rows][kTileN];
  for (int r = 0; r < Rows; ++r)
    for (int n = 0; n < kTileN; ++n) sums[r][n] = horizontal_sum(acc[r][n]);
  for (int r = 0; r < Rows; ++r)
    for (int n = 0; n < tile_n; ++n) y[r * n_out + n] = sums[r][n];
}

// Dot products of Rows rows of x with the tile's dequantised weight rows, written to y.
template <int Rows>
inline void tile_dot(const float* x, int64_t k, const float* weights, int64_t tile_n, float* y, int64_t n_out) {
  __m256 acc[Rows][kTileN];
  for (int r = 0; r < Rows; ++r)
    for (int n = 0; n < kTileN; ++n) acc[r][n] = _mm256_setzero_ps();
  for (int64_t i = 0; i < k; i += 8) {
    __m256 xs[Rows];
    for (int r = 0; r < Rows; ++r) xs[r] = _mm256_loadu_ps(x + r * k + i);
    for (int n = 0; n < kTileN; ++n) {
      const __m256 w = _mm256_loadu_ps(weights + n * k + i);
      for (int r = 0; r < Rows; ++r) acc[r][n] = _mm256_fmadd_ps(w, xs[r], acc[r][n]);
    }
  }
  store_tile<Rows>(acc, tile_n, y, n_out);
}

// One block's 32 weights in four registers, dequantised exactly as dequantise_row does.
template <int64_t Type>
inline void block_weights(const uint8_t* block, __m256 w[4]) {
  if constexpr (Type == kF32) {
    for (int j = 0; j < 4; ++j) w[j] = _mm256_loadu_ps(reinterpret_cast<const float*>(block) + 8 * j);
    return;
  } else {
    const __m256 d = _mm256_set1_ps(half_to_float(block));
    if constexpr (Type == kQ8_0) {
      for (int j = 0; j < 4; ++j) {
        const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + 8 * j));
        w[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
      }
    } else {
      // Widen bytes to 32-bit lanes first: one byte's low nibble is weight i, its high nibble weight i + 16.
      const uint8_t* packed = block + (Type == kQ4_1 ? 4 : 2);
      const __m256i first = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed)));
      const __m256i second = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed + 8)));
      const __m256i mask = _mm256_set1_epi32(0x0F);
      const __m256i nibbles[4] = {_mm256_and_si256(first, mask), _mm256_and_si256(second, mask),
                                  _mm256_srli_epi32(first, 4), _mm256_srli_epi32(second, 4)};
      if constexpr (Type == kQ4_1) {
        const __m256 m = _mm256_set1_ps(half_to_float(block + 2));
        for (int j = 0; j < 4; ++j) w[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(nibbles[j]), d, m);
      } else {
        const __m256i eight = _mm256_set1_epi32(8);
        for (int j = 0; j < 4; ++j) w[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(nibbles[j], eight)), d);
      }
    }
  }
}

// Bytes one block of 32 weights takes in a row: a float32 row (type 0) is 128.
constexpr int64_t stride_of(int64_t type) { return type == kF32 ? kBlock * 4 : block_bytes(type); }

// Dequantise one row of blocks into out[0 .. blocks * 32).
template <int64_t Type>
inline void dequantise_row_of(const uint8_t* row, int64_t blocks, float* out) {
  constexpr int64_t stride = stride_of(Type);
  for (int64_t b = 0; b < blocks; ++b) {
    _mm_prefetch(reinterpret_cast<const char*>(row + b * stride + kPrefetchBytes), _MM_HINT_T0);
    __m256 w[4];
    block_weights<Type>(row + b * stride, w);
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(out + b * kBlock + 8 * j, w[j]);
  }
}

inline void dequantise_row(const uint8_t* row, int64_t type, int64_t blocks, float* out) {
  switch (type) {
    case kQ4_0: dequantise_row_of<kQ4_0>(row, blocks, out); break;
    case kQ4_1: dequantise_row_of<kQ4_1>(row, blocks, out); break;
    case kQ8_0: dequantise_row_of<kQ8_0>(row, blocks, out); break;
    default: dequantise_row_of<kF32>(row, blocks, out); break;
  }
}

// One input row: dequantise in registers as the weights stream past, with the same accumulation as tile_dot.
template <int64_t Type>
inline void fused_dot(const float* x, int64_t k, const uint8_t* const rows[kTileN], int64_t tile_n, float* y) {
  constexpr int64_t stride = stride_of(Type);
  __m256 acc[1][kTileN];
  for (int n = 0; n < kTileN; ++n) acc[0][n] = _mm256_setzero_ps();
  for (int64_t b = 0; b < k / kBlock; ++b) {
    __m256 xs[4];
    for (int j = 0; j < 4; ++j) xs[j] = _mm256_loadu_ps(x + b * kBlock + 8 * j);
    for (int n = 0; n < kTileN; ++n) {
      _mm_prefetch(reinterpret_cast<const char*>(rows[n] + b * stride + kPrefetchBytes), _MM_HINT_T0);
      __m256 w[4];
      block_weights<Type>(rows[n] + b * stride, w);
      for (int j = 0; j < 4; ++j) acc[0][n] = _mm256_fmadd_ps(w[j], xs[j], acc[0][n]);
    }
  }
  store_tile<1>(acc, tile_n, y, 0);
}

inline void fused_dot_any(int64_t type, const float* x, int64_t k, const uint8_t* const rows[kTileN],
                          int64_t tile_n, float* y) {
  switch (type) {
    case kQ4_0: fused_dot<kQ4_0>(x, k, rows, tile_n, y); break;
    case kQ4_1: fused_dot<kQ4_1>(x, k, rows, tile_n, y); break;
    case kQ8_0: fused_dot<kQ8_0>(x, k, rows, tile_n, y); break;
    default: fused_dot<kF32>(x, k, rows, tile_n, y); break;
  }
}

// The dot products of m input rows of k floats with the tile of weight rows starting at row n0 of a matrix whose
// rows are row_bytes apart, written to y[m][n_out] from column y_col. buffer holds kTileN * k floats.
inline void tile_of_rows(const float* x, int64_t m, int64_t k, const uint8_t* weights, int64_t type, int64_t row_bytes,
                         int64_t n0, int64_t tile_n, float* y, int64_t n_out, int64_t y_col, float* buffer) {
  if (m < kTileM) {  // decoding one or two rows: weights go straight to registers
    const uint8_t* rows[kTileN];
    for (int64_t n = 0; n < kTileN; ++n) rows[n] = weights + (n0 + std::min(n, tile_n - 1)) * row_bytes;
    for (int64_t r = 0; r < m; ++r) fused_dot_any(type, x + r * k, k, rows, tile_n, y + r * n_out + y_col);
    return;
  }
  for (int64_t n = 0; n < tile_n; ++n) dequantise_row(weights + (n0 + n) * row_bytes, type, k / kBlock, buffer + n * k);
  for (int64_t n = tile_n; n < kTileN; ++n) std::fill_n(buffer + n * k, k, 0.0f);
  for (int64_t chunk = 0; chunk < m; chunk += kChunkM) {
    const int64_t chunk_end = std::min(m, chunk + kChunkM);
    int64_t r = chunk;
    for (; r + kTileM <= chunk_end; r += kTileM)
      tile_dot<kTileM>(x + r * k, k, buffer, tile_n, y + r * n_out + y_col, n_out);
    for (; r < chunk_end; ++r) tile_dot<1>(x + r * k, k, buffer, tile_n, y + r * n_out + y_col, n_out);
  }
}

}  // namespace palaver
