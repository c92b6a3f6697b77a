// GGUF blocks read in float32, and the dot products over them: one place for both libraries. Served: float32,
// float16 and bfloat16 tensors; Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 blocks of 32 weights; and the K-quants Q2_K, Q3_K,
// Q4_K, Q5_K and Q6_K, super-blocks of 256 weights in eight parts of 32 (the types inside Q2_K, Q3_K_M, Q4_K_M,
// Q5_K_M and Q6_K files).
//
// Each weight is dequantised exactly as gguf-py does: every product of a block's integers and its float16 scales is
// exact in float32, so each weight is rounded at most once, where gguf-py rounds it (Q6_K's (d * scale) * q, an
// offset's subtraction or addition; Q3_K's weights are exact products). Every dot product uses one 8-lane accumulator over k = lane, lane + 8, ... in
// order and a fixed horizontal sum, whichever path computes it: a row's result does not depend on which other rows
// share the call.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace palaver {

constexpr int64_t kBlock = 32;   // weights per block as the kernel reads them; a K-quant super-block holds eight
constexpr int64_t kSuper = 256;  // weights per K-quant super-block
// ggml's type numbers.
enum QuantType : int64_t {
  kF32 = 0, kF16 = 1, kQ4_0 = 2, kQ4_1 = 3, kQ5_0 = 6, kQ5_1 = 7, kQ8_0 = 8,
  kQ2_K = 10, kQ3_K = 11, kQ4_K = 12, kQ5_K = 13, kQ6_K = 14, kBF16 = 30,
};

// Weights in one stored unit of a type: a super-block of 256 for the K-quants, a block of 32 for the rest.
constexpr int64_t unit_weights(int64_t type) {
  return type == kQ2_K || type == kQ3_K || type == kQ4_K || type == kQ5_K || type == kQ6_K ? kSuper : kBlock;
}

// Bytes of one stored unit; 0 for types not served here.
//   Q4_0: d, 16 bytes of nibbles        Q4_1: d, m, 16 bytes        Q8_0: d, 32 int8
//   Q5_0: d, 4 bytes of fifth bits, 16  Q5_1: d, m, 4, 16
//   Q4_K: d, dmin, 12 bytes of 6-bit scales and minimums, 128 bytes of nibbles
//   Q5_K: as Q4_K, with 32 bytes of fifth bits before the nibbles
//   Q6_K: 128 bytes of low nibbles, 64 of high pairs, 16 int8 scales, then d
//   Q2_K: 16 bytes of 4-bit scales and minimums, 64 bytes of 2-bit weights, d, dmin
//   Q3_K: 32 bytes of third bits, 64 bytes of 2-bit weights, 12 bytes of 6-bit scales, d
constexpr int64_t unit_bytes(int64_t type) {
  switch (type) {
    case kF32: return kBlock * 4;
    case kF16: case kBF16: return kBlock * 2;
    case kQ4_0: return 2 + 16;
    case kQ4_1: return 2 + 2 + 16;
    case kQ5_0: return 2 + 4 + 16;
    case kQ5_1: return 2 + 2 + 4 + 16;
    case kQ8_0: return 2 + 32;
    case kQ4_K: return 2 + 2 + 12 + 128;
    case kQ5_K: return 2 + 2 + 12 + 32 + 128;
    case kQ6_K: return 128 + 64 + 16 + 2;
    case kQ2_K: return 16 + 64 + 2 + 2;
    case kQ3_K: return 32 + 64 + 12 + 2;
    default: return 0;
  }
}

constexpr bool served(int64_t type) { return unit_bytes(type) > 0; }

// Bytes of a row of cols weights; 0 when the type is not served or cols does not split into its units.
constexpr int64_t row_bytes_of(int64_t type, int64_t cols) {
  return served(type) && cols > 0 && cols % unit_weights(type) == 0 ? cols / unit_weights(type) * unit_bytes(type)
                                                                     : 0;
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

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  return bits;
}

// The work is done on 32 weights at once, as bytes in weight order, and only then widened to four registers of 8.

// A 32-weight block's nibbles as bytes in weight order: byte i's low nibble is weight i, its high nibble i + 16.
inline __m256i nibble_bytes(const uint8_t* packed) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// 0xFF in byte i where bit i of the 32 bits is set (ggml's bytes_from_bits_32).
inline __m256i bit_bytes(uint32_t bits) {
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
  const __m256i others = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  return _mm256_cmpeq_epi8(others, _mm256_set1_epi64x(-1));
}

// 32 bytes (signed or not) as four registers of 8 floats, in order.
template <bool Signed>
inline void widen(__m256i q, __m256 w[4]) {
  const __m128i low = _mm256_castsi256_si128(q), high = _mm256_extracti128_si256(q, 1);
  const __m128i parts[4] = {low, _mm_srli_si128(low, 8), high, _mm_srli_si128(high, 8)};
  for (int j = 0; j < 4; ++j)
    w[j] = _mm256_cvtepi32_ps(Signed ? _mm256_cvtepi8_epi32(parts[j]) : _mm256_cvtepu8_epi32(parts[j]));
}

inline __m256i shift_bytes_right(__m256i x, int count) {  // count < 8; the caller masks what crossed a byte
  return _mm256_srl_epi16(x, _mm_cvtsi32_si128(count));
}

// A K-quant's 6-bit scale and minimum for part j of 8, as ggml's get_scale_min_k4.
inline void scale_min_k4(int j, const uint8_t* q, int* scale, int* minimum) {
  if (j < 4) {
    *scale = q[j] & 63;
    *minimum = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *minimum = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Part `part` (0..7) of a Q4_K or Q5_K super-block: 32 weights (d * scale) * q - dmin * min, q of 4 or 5 bits.
template <int64_t Type>
inline void k_part_weights(const uint8_t* super, int64_t part, __m256 w[4]) {
  const float d = half_to_float(super), dmin = half_to_float(super + 2);
  int scale = 0, minimum = 0;
  scale_min_k4(static_cast<int>(part), super + 4, &scale, &minimum);
  const uint8_t* nibbles = super + 16 + (Type == kQ5_K ? 32 : 0) + (part / 2) * 32;
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(nibbles));
  __m256i q = _mm256_and_si256(shift_bytes_right(raw, part % 2 ? 4 : 0), _mm256_set1_epi8(0x0F));
  if constexpr (Type == kQ5_K) {  // bit `part` of qh[l] is weight l's fifth bit
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(super + 16));
    const __m256i bit = _mm256_and_si256(shift_bytes_right(qh, static_cast<int>(part)), _mm256_set1_epi8(1));
    q = _mm256_or_si256(q, _mm256_slli_epi16(bit, 4));  // the bit moves within its byte
  }
  widen<false>(q, w);
  // Both products are exact in float32 (11 bits of scale by 6 bits): only the subtraction rounds, as in gguf-py.
  const __m256 ds = _mm256_set1_ps(d * static_cast<float>(scale));
  const __m256 dm = _mm256_set1_ps(dmin * static_cast<float>(minimum));
  for (int j = 0; j < 4; ++j) w[j] = _mm256_sub_ps(_mm256_mul_ps(w[j], ds), dm);
}

// Part `part` (0..7) of a Q6_K super-block: 32 weights (d * scale) * (q - 32), q of 6 bits, a scale per 16.
inline void q6_k_part_weights(const uint8_t* super, int64_t part, __m256 w[4]) {
  const int64_t half = part / 4, quarter = part % 4;
  const __m256i low = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(super + half * 64 + (quarter % 2) * 32));
  const __m256i high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(super + 128 + half * 32));
  const __m256i l4 = _mm256_and_si256(shift_bytes_right(low, quarter / 2 ? 4 : 0), _mm256_set1_epi8(0x0F));
  const __m256i h2 = _mm256_and_si256(shift_bytes_right(high, static_cast<int>(quarter) * 2), _mm256_set1_epi8(3));
  const __m256i q = _mm256_sub_epi8(_mm256_or_si256(l4, _mm256_slli_epi16(h2, 4)), _mm256_set1_epi8(32));
  widen<true>(q, w);
  const auto* scales = reinterpret_cast<const int8_t*>(super + 192 + half * 8 + quarter * 2);
  const float d = half_to_float(super + 208);
  // d * scale is exact; its product with q rounds once, as gguf-py's (d * scales) * q.
  const __m256 first = _mm256_set1_ps(d * static_cast<float>(scales[0]));
  const __m256 second = _mm256_set1_ps(d * static_cast<float>(scales[1]));
  for (int j = 0; j < 4; ++j) w[j] = _mm256_mul_ps(w[j], j < 2 ? first : second);
}

// The 2-bit weights of part `part` (0..7) of a Q2_K or Q3_K super-block, as bytes in weight order: 32 bytes of qs
// per half, each holding four parts' weights in its bit pairs.
inline __m256i two_bit_part(const uint8_t* qs, int64_t part) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + (part / 4) * 32));
  return _mm256_and_si256(shift_bytes_right(raw, static_cast<int>(part % 4) * 2), _mm256_set1_epi8(3));
}

// Part `part` of a Q2_K super-block: 32 weights (d * scale) * q - dmin * min, a 4-bit scale and minimum per 16.
inline void q2_k_part_weights(const uint8_t* super, int64_t part, __m256 w[4]) {
  widen<false>(two_bit_part(super + 16, part), w);
  const float d = half_to_float(super + 80), dmin = half_to_float(super + 82);
  for (int half = 0; half < 2; ++half) {
    const uint8_t packed = super[part * 2 + half];
    // Both products are exact in float32 (11 bits by 4): only the subtraction rounds, as in gguf-py.
    const __m256 ds = _mm256_set1_ps(d * static_cast<float>(packed & 0xF));
    const __m256 dm = _mm256_set1_ps(dmin * static_cast<float>(packed >> 4));
    for (int j = 2 * half; j < 2 * half + 2; ++j) w[j] = _mm256_sub_ps(_mm256_mul_ps(w[j], ds), dm);
  }
}

// Q3_K's 6-bit scale number i (0..15), as ggml unpacks the 12 bytes: a low nibble, and two high bits.
inline int q3_k_scale(const uint8_t* scales, int64_t i) {
  const int low = (scales[i % 8] >> (4 * (i / 8))) & 0xF;
  const int high = (scales[8 + i % 4] >> (2 * (i / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// Part `part` of a Q3_K super-block: 32 weights (d * scale) * (q - 4 where the third bit is clear), a scale per 16.
inline void q3_k_part_weights(const uint8_t* super, int64_t part, __m256 w[4]) {
  const __m256i low = two_bit_part(super + 32, part);
  const __m256i hmask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(super));
  const __m256i bit = _mm256_and_si256(shift_bytes_right(hmask, static_cast<int>(part)), _mm256_set1_epi8(1));
  // q - 4 * (1 - bit): 0..3 with the bit set, -4..-1 without, as signed bytes.
  const __m256i q = _mm256_sub_epi8(low, _mm256_slli_epi16(_mm256_xor_si256(bit, _mm256_set1_epi8(1)), 2));
  widen<true>(q, w);
  const float d = half_to_float(super + 108);
  for (int half = 0; half < 2; ++half) {
    // d * scale and its product with q are exact in float32 (11 bits by 6, by 3): no weight is rounded.
    const __m256 ds = _mm256_set1_ps(d * static_cast<float>(q3_k_scale(super + 96, part * 2 + half)));
    for (int j = 2 * half; j < 2 * half + 2; ++j) w[j] = _mm256_mul_ps(w[j], ds);
  }
}

// Block b (the weights b * 32 .. b * 32 + 31) of a row, in four registers, dequantised exactly as gguf-py does.
template <int64_t Type>
inline void block_weights(const uint8_t* row, int64_t b, __m256 w[4]) {
  constexpr int64_t parts = unit_weights(Type) / kBlock;
  const uint8_t* unit = row + (b / parts) * unit_bytes(Type);
  if constexpr (Type == kF32) {
    for (int j = 0; j < 4; ++j) w[j] = _mm256_loadu_ps(reinterpret_cast<const float*>(unit) + 8 * j);
  } else if constexpr (Type == kF16) {
    for (int j = 0; j < 4; ++j)
      w[j] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(unit + 16 * j)));
  } else if constexpr (Type == kBF16) {
    for (int j = 0; j < 4; ++j) {
      const __m256i bits = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(unit + 16 * j)));
      w[j] = _mm256_castsi256_ps(_mm256_slli_epi32(bits, 16));
    }
  } else if constexpr (Type == kQ4_K || Type == kQ5_K) {
    k_part_weights<Type>(unit, b % parts, w);
  } else if constexpr (Type == kQ6_K) {
    q6_k_part_weights(unit, b % parts, w);
  } else if constexpr (Type == kQ2_K) {
    q2_k_part_weights(unit, b % parts, w);
  } else if constexpr (Type == kQ3_K) {
    q3_k_part_weights(unit, b % parts, w);
  } else {
    const __m256 d = _mm256_set1_ps(half_to_float(unit));
    if constexpr (Type == kQ8_0) {
      for (int j = 0; j < 4; ++j) {
        const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(unit + 2 + 8 * j));
        w[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
      }
    } else {
      constexpr bool has_min = Type == kQ4_1 || Type == kQ5_1, has_fifth = Type == kQ5_0 || Type == kQ5_1;
      if constexpr (!has_fifth) {
        // Q4_0 and Q4_1: each register's 8 bytes widened straight from memory, the cheapest path for 4 bits.
        const uint8_t* packed = unit + (has_min ? 4 : 2);
        const __m256i first = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed)));
        const __m256i second = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed + 8)));
        const __m256i mask = _mm256_set1_epi32(0x0F);
        const __m256i nibbles[4] = {_mm256_and_si256(first, mask), _mm256_and_si256(second, mask),
                                    _mm256_srli_epi32(first, 4), _mm256_srli_epi32(second, 4)};
        for (int j = 0; j < 4; ++j)
          w[j] = _mm256_cvtepi32_ps(has_min ? nibbles[j] : _mm256_sub_epi32(nibbles[j], _mm256_set1_epi32(8)));
      } else {
        // Q5_0 and Q5_1: the nibbles and fifth bits of all 32 weights at once, as bytes, then widened.
        __m256i q = nibble_bytes(unit + 2 + (has_min ? 2 : 0) + 4);
        const __m256i fifth = bit_bytes(load_u32(unit + 2 + (has_min ? 2 : 0)));
        // Q5_1 adds 16 where the bit is set; Q5_0 writes q - 16 as a signed byte: 0xF0 where the bit is clear.
        q = _mm256_or_si256(q, has_min ? _mm256_and_si256(fifth, _mm256_set1_epi8(0x10))
                                       : _mm256_andnot_si256(fifth, _mm256_set1_epi8(static_cast<char>(0xF0))));
        widen<!has_min>(q, w);
      }
      if constexpr (has_min) {
        // q * d is exact (5 bits by 11): the addition rounds once, fused or not.
        const __m256 m = _mm256_set1_ps(half_to_float(unit + 2));
        for (int j = 0; j < 4; ++j) w[j] = _mm256_fmadd_ps(w[j], d, m);
      } else {
        for (int j = 0; j < 4; ++j) w[j] = _mm256_mul_ps(w[j], d);
      }
    }
  }
}

// Call f with the type as a template argument.
template <typename F>
inline void with_type(int64_t type, F&& f) {
  switch (type) {
    case kF16: f(std::integral_constant<int64_t, kF16>{}); break;
    case kBF16: f(std::integral_constant<int64_t, kBF16>{}); break;
    case kQ4_0: f(std::integral_constant<int64_t, kQ4_0>{}); break;
    case kQ4_1: f(std::integral_constant<int64_t, kQ4_1>{}); break;
    case kQ5_0: f(std::integral_constant<int64_t, kQ5_0>{}); break;
    case kQ5_1: f(std::integral_constant<int64_t, kQ5_1>{}); break;
    case kQ8_0: f(std::integral_constant<int64_t, kQ8_0>{}); break;
    case kQ4_K: f(std::integral_constant<int64_t, kQ4_K>{}); break;
    case kQ5_K: f(std::integral_constant<int64_t, kQ5_K>{}); break;
    case kQ6_K: f(std::integral_constant<int64_t, kQ6_K>{}); break;
    case kQ2_K: f(std::integral_constant<int64_t, kQ2_K>{}); break;
    case kQ3_K: f(std::integral_constant<int64_t, kQ3_K>{}); break;
    default: f(std::integral_constant<int64_t, kF32>{}); break;
  }
}

// Dequantise one row of blocks into out[0 .. blocks * 32).
template <int64_t Type>
inline void dequantise_row_of(const uint8_t* row, int64_t blocks, float* out) {
  for (int64_t b = 0; b < blocks; ++b) {
    _mm_prefetch(reinterpret_cast<const char*>(row + b * kBlock * unit_bytes(Type) / unit_weights(Type) + kPrefetchBytes),
                 _MM_HINT_T0);
    __m256 w[4];
    block_weights<Type>(row, b, w);
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(out + b * kBlock + 8 * j, w[j]);
  }
}

inline void dequantise_row(const uint8_t* row, int64_t type, int64_t blocks, float* out) {
  with_type(type, [&](auto kind) { dequantise_row_of<decltype(kind)::value>(row, blocks, out); });
}

// One input row: dequantise in registers as the weights stream past, with the same accumulation as tile_dot.
template <int64_t Type>
inline void fused_dot(const float* x, int64_t k, const uint8_t* const rows[kTileN], int64_t tile_n, float* y) {
  __m256 acc[1][kTileN];
  for (int n = 0; n < kTileN; ++n) acc[0][n] = _mm256_setzero_ps();
  for (int64_t b = 0; b < k / kBlock; ++b) {
    __m256 xs[4];
    for (int j = 0; j < 4; ++j) xs[j] = _mm256_loadu_ps(x + b * kBlock + 8 * j);
    for (int n = 0; n < kTileN; ++n) {
      _mm_prefetch(
          reinterpret_cast<const char*>(rows[n] + b * kBlock * unit_bytes(Type) / unit_weights(Type) + kPrefetchBytes),
          _MM_HINT_T0);
      __m256 w[4];
      block_weights<Type>(rows[n], b, w);
      for (int j = 0; j < 4; ++j) acc[0][n] = _mm256_fmadd_ps(w[j], xs[j], acc[0][n]);
    }
  }
  store_tile<1>(acc, tile_n, y, 0);
}

inline void fused_dot_any(int64_t type, const float* x, int64_t k, const uint8_t* const rows[kTileN],
                          int64_t tile_n, float* y) {
  with_type(type, [&](auto kind) { fused_dot<decltype(kind)::value>(x, k, rows, tile_n, y); });
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

// Tiles of weight rows per pool task when m input rows of k floats meet a matrix: enough that a small layer is not
// split into more tasks than it is worth.
constexpr int64_t tiles_per_task(int64_t k, int64_t m) {
  return std::max<int64_t>(1, 16384 / (k * std::max<int64_t>(1, std::min<int64_t>(m, 8))));
}

// This thread's buffer for tile_of_rows with m input rows of k floats, kept between calls: it is allocated only to
// grow, never in the loop over tiles.
inline float* tile_buffer(int64_t m, int64_t k) {
  thread_local std::vector<float> buffer;
  const auto wanted = static_cast<size_t>(m < kTileM ? 0 : kTileN * k);
  if (buffer.size() < wanted) buffer.resize(wanted);
  return buffer.data();
}

}  // namespace palaver
