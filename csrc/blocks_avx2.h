// The AVX2 family of block kernels, which every CPU the native step runs on has: each block dequantised into four
// registers of 8 floats and multiplied with float32 inputs.
//
// Each weight is dequantised exactly as gguf-py does: every product of a block's integers and its float16 scales is
// exact in float32, so each weight is rounded at most once, where gguf-py rounds it (Q6_K's (d * scale) * q, an
// offset's subtraction or addition; Q3_K's weights are exact products). Every dot product uses one 8-lane
// accumulator over k = lane, lane + 8, ... in order and horizontal_sum: a row's result does not depend on which
// other rows share the call. The byte-level steps here are the AVX-512 family's too (blocks_avx512.h).
#pragma once

#include "block_format.h"

#include <type_traits>

namespace palaver::avx2 {

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

// The work is done on 32 weights at once, as bytes in weight order, and only then widened to four registers of 8.

// A 32-weight block's nibbles as bytes in weight order: byte i's low nibble is weight i, its high nibble i + 16.
PALAVER_BLOCK_STEP __m256i nibble_bytes(const uint8_t* packed) {
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(raw), _mm_srli_epi16(raw, 4), 1);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// 0xFF in byte i where bit i of the 32 bits is set (ggml's bytes_from_bits_32).
PALAVER_BLOCK_STEP __m256i bit_bytes(uint32_t bits) {
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
  const __m256i others = _mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
  return _mm256_cmpeq_epi8(others, _mm256_set1_epi64x(-1));
}

// 32 bytes (signed or not) as four registers of 8 floats, in order.
template <bool Signed>
PALAVER_BLOCK_STEP void widen(__m256i q, __m256 w[4]) {
  const __m128i low = _mm256_castsi256_si128(q), high = _mm256_extracti128_si256(q, 1);
  const __m128i parts[4] = {low, _mm_srli_si128(low, 8), high, _mm_srli_si128(high, 8)};
  for (int j = 0; j < 4; ++j)
    w[j] = _mm256_cvtepi32_ps(Signed ? _mm256_cvtepi8_epi32(parts[j]) : _mm256_cvtepu8_epi32(parts[j]));
}

PALAVER_BLOCK_STEP __m256i shift_bytes_right(__m256i x, int count) {  // count < 8; the caller masks what crossed a byte
  return _mm256_srl_epi16(x, _mm_cvtsi32_si128(count));
}

// Q5_0's and Q5_1's 32 weights as bytes: Q5_1's 0..31; Q5_0's q - 16, signed.
template <int64_t Type>
PALAVER_BLOCK_STEP __m256i q5_bytes(const uint8_t* unit) {
  constexpr bool has_min = Type == kQ5_1;
  const __m256i q = nibble_bytes(unit + 2 + (has_min ? 2 : 0) + 4);
  const __m256i fifth = bit_bytes(load_u32(unit + 2 + (has_min ? 2 : 0)));
  // Q5_1 adds 16 where the bit is set; Q5_0 writes q - 16 as a signed byte: 0xF0 where the bit is clear.
  return _mm256_or_si256(q, has_min ? _mm256_and_si256(fifth, _mm256_set1_epi8(0x10))
                                    : _mm256_andnot_si256(fifth, _mm256_set1_epi8(static_cast<char>(0xF0))));
}

// A K-quant's 6-bit scale and minimum for part j of 8, as ggml's get_scale_min_k4.
PALAVER_BLOCK_STEP void scale_min_k4(int j, const uint8_t* q, int* scale, int* minimum) {
  if (j < 4) {
    *scale = q[j] & 63;
    *minimum = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *minimum = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Part `part` (0..7) of a Q4_K or Q5_K super-block: its 32 q of 4 or 5 bits as bytes, and d * scale, dmin * min.
// Both products are exact in float32 (11 bits of scale by 6 bits).
template <int64_t Type>
PALAVER_BLOCK_STEP __m256i k_part_bytes(const uint8_t* super, int64_t part, float* ds, float* dm) {
  int scale = 0, minimum = 0;
  scale_min_k4(static_cast<int>(part), super + 4, &scale, &minimum);
  *ds = half_to_float(super) * static_cast<float>(scale);
  *dm = half_to_float(super + 2) * static_cast<float>(minimum);
  const uint8_t* nibbles = super + 16 + (Type == kQ5_K ? 32 : 0) + (part / 2) * 32;
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(nibbles));
  __m256i q = _mm256_and_si256(shift_bytes_right(raw, part % 2 ? 4 : 0), _mm256_set1_epi8(0x0F));
  if constexpr (Type == kQ5_K) {  // bit `part` of qh[l] is weight l's fifth bit
    const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(super + 16));
    const __m256i bit = _mm256_and_si256(shift_bytes_right(qh, static_cast<int>(part)), _mm256_set1_epi8(1));
    q = _mm256_or_si256(q, _mm256_slli_epi16(bit, 4));  // the bit moves within its byte
  }
  return q;
}

// Part `part` (0..7) of a Q6_K super-block: its 32 q - 32 as signed bytes, and d * scale for each 16 (exact).
PALAVER_BLOCK_STEP __m256i q6_k_part_bytes(const uint8_t* super, int64_t part, float scales[2]) {
  const int64_t half = part / 4, quarter = part % 4;
  const __m256i low = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(super + half * 64 + (quarter % 2) * 32));
  const __m256i high = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(super + 128 + half * 32));
  const __m256i l4 = _mm256_and_si256(shift_bytes_right(low, quarter / 2 ? 4 : 0), _mm256_set1_epi8(0x0F));
  const __m256i h2 = _mm256_and_si256(shift_bytes_right(high, static_cast<int>(quarter) * 2), _mm256_set1_epi8(3));
  const auto* stored = reinterpret_cast<const int8_t*>(super + 192 + half * 8 + quarter * 2);
  const float d = half_to_float(super + 208);
  for (int i = 0; i < 2; ++i) scales[i] = d * static_cast<float>(stored[i]);
  return _mm256_sub_epi8(_mm256_or_si256(l4, _mm256_slli_epi16(h2, 4)), _mm256_set1_epi8(32));
}

// The 2-bit weights of part `part` (0..7) of a Q2_K or Q3_K super-block, as bytes in weight order: 32 bytes of qs
// per half, each holding four parts' weights in its bit pairs.
PALAVER_BLOCK_STEP __m256i two_bit_part(const uint8_t* qs, int64_t part) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + (part / 4) * 32));
  return _mm256_and_si256(shift_bytes_right(raw, static_cast<int>(part % 4) * 2), _mm256_set1_epi8(3));
}

// Part `part` of a Q2_K super-block's d * scale and dmin * min for each 16 (exact: 11 bits by 4).
PALAVER_BLOCK_STEP void q2_k_part_scales(const uint8_t* super, int64_t part, float ds[2], float dm[2]) {
  const float d = half_to_float(super + 80), dmin = half_to_float(super + 82);
  for (int half = 0; half < 2; ++half) {
    const uint8_t packed = super[part * 2 + half];
    ds[half] = d * static_cast<float>(packed & 0xF);
    dm[half] = dmin * static_cast<float>(packed >> 4);
  }
}

// Q3_K's 6-bit scale number i (0..15), as ggml unpacks the 12 bytes: a low nibble, and two high bits.
PALAVER_BLOCK_STEP int q3_k_scale(const uint8_t* scales, int64_t i) {
  const int low = (scales[i % 8] >> (4 * (i / 8))) & 0xF;
  const int high = (scales[8 + i % 4] >> (2 * (i / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// Part `part` of a Q3_K super-block: q - 4 where the third bit is clear, as signed bytes, and d * scale for each 16
// (exact, as are their products with q: 11 bits by 6, by 3).
PALAVER_BLOCK_STEP __m256i q3_k_part_bytes(const uint8_t* super, int64_t part, float ds[2]) {
  const __m256i low = two_bit_part(super + 32, part);
  const __m256i hmask = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(super));
  const __m256i bit = _mm256_and_si256(shift_bytes_right(hmask, static_cast<int>(part)), _mm256_set1_epi8(1));
  const float d = half_to_float(super + 108);
  for (int half = 0; half < 2; ++half) ds[half] = d * static_cast<float>(q3_k_scale(super + 96, part * 2 + half));
  // q - 4 * (1 - bit): 0..3 with the bit set, -4..-1 without.
  return _mm256_sub_epi8(low, _mm256_slli_epi16(_mm256_xor_si256(bit, _mm256_set1_epi8(1)), 2));
}

// Block b (the weights b * 32 .. b * 32 + 31) of a row, in four registers, dequantised exactly as gguf-py does.
template <int64_t Type>
PALAVER_BLOCK_STEP void block_weights(const uint8_t* row, int64_t b, __m256 w[4]) {
  constexpr int64_t parts = unit_weights(Type) / kBlock;
  const uint8_t* unit = row + unit_offset(Type, b);
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
    float ds = 0.0f, dm = 0.0f;
    widen<false>(k_part_bytes<Type>(unit, b % parts, &ds, &dm), w);
    for (int j = 0; j < 4; ++j)  // q * ds is exact: only the subtraction rounds, as in gguf-py, fused or not
      w[j] = _mm256_fmsub_ps(w[j], _mm256_set1_ps(ds), _mm256_set1_ps(dm));
  } else if constexpr (Type == kQ6_K) {
    float scales[2];
    widen<true>(q6_k_part_bytes(unit, b % parts, scales), w);
    for (int j = 0; j < 4; ++j) w[j] = _mm256_mul_ps(w[j], _mm256_set1_ps(scales[j / 2]));  // rounds once
  } else if constexpr (Type == kQ2_K) {
    float ds[2], dm[2];
    widen<false>(two_bit_part(unit + 16, b % parts), w);
    q2_k_part_scales(unit, b % parts, ds, dm);
    for (int j = 0; j < 4; ++j)  // q * ds is exact: only the subtraction rounds, as in gguf-py, fused or not
      w[j] = _mm256_fmsub_ps(w[j], _mm256_set1_ps(ds[j / 2]), _mm256_set1_ps(dm[j / 2]));
  } else if constexpr (Type == kQ3_K) {
    float ds[2];
    widen<true>(q3_k_part_bytes(unit, b % parts, ds), w);
    for (int j = 0; j < 4; ++j) w[j] = _mm256_mul_ps(w[j], _mm256_set1_ps(ds[j / 2]));
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
        widen<!has_min>(q5_bytes<Type>(unit), w);  // the nibbles and fifth bits of all 32 weights at once
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
    prefetch_ahead(row, Type, b);
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
      prefetch_ahead(rows[n], Type, b);
      __m256 w[4];
      block_weights<Type>(rows[n], b, w);
      for (int j = 0; j < 4; ++j) acc[0][n] = _mm256_fmadd_ps(w[j], xs[j], acc[0][n]);
    }
  }
  store_tile<1>(acc, tile_n, y, 0);
}

// A few input rows (2 to kFusedRows - 1: a row's drafted tokens, two or three replies): one weight row at a time, each
// block dequantised in registers once and multiplied with every input row, whose accumulators stay in registers.
// Each (input row, weight row) sums in fused_dot's order, hence with its bits.
template <int64_t Type, int Rows>
inline void fused_rows(const float* x, int64_t k, const uint8_t* const rows[kTileN], int64_t tile_n, float* y,
                       int64_t n_out) {
  for (int64_t n = 0; n < tile_n; ++n) {
    __m256 acc[Rows];
    for (int r = 0; r < Rows; ++r) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < k / kBlock; ++b) {
      prefetch_ahead(rows[n], Type, b);
      __m256 w[4];
      block_weights<Type>(rows[n], b, w);
      for (int j = 0; j < 4; ++j)
        for (int r = 0; r < Rows; ++r)
          acc[r] = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(x + r * k + b * kBlock + 8 * j), acc[r]);
    }
    for (int r = 0; r < Rows; ++r) y[r * n_out + n] = horizontal_sum(acc[r]);
  }
}

// fused_rows over m (< kFusedRows) input rows, in groups of at most 4.
template <int64_t Type>
inline void few_rows(const float* x, int64_t m, int64_t k, const uint8_t* const rows[kTileN], int64_t tile_n, float* y,
                     int64_t n_out) {
  int64_t r = 0;
  for (; r + 4 <= m; r += 4) fused_rows<Type, 4>(x + r * k, k, rows, tile_n, y + r * n_out, n_out);
  if (m - r == 3) fused_rows<Type, 3>(x + r * k, k, rows, tile_n, y + r * n_out, n_out);
  if (m - r == 2) fused_rows<Type, 2>(x + r * k, k, rows, tile_n, y + r * n_out, n_out);
  if (m - r == 1) fused_rows<Type, 1>(x + r * k, k, rows, tile_n, y + r * n_out, n_out);
}

// The dot products of m input rows of k floats with the tile of weight rows starting at row n0 of a matrix whose
// rows are row_bytes apart, written to y[m][n_out] from column y_col. buffer holds kTileN * k floats.
inline void tile_of_rows(const float* x, int64_t m, int64_t k, const uint8_t* weights, int64_t type, int64_t row_bytes,
                         int64_t n0, int64_t tile_n, float* y, int64_t n_out, int64_t y_col, float* buffer) {
  if (m < kFusedRows) {  // decoding a few rows: weights go straight to registers
    const uint8_t* rows[kTileN];
    for (int64_t n = 0; n < kTileN; ++n) rows[n] = weights + (n0 + std::min(n, tile_n - 1)) * row_bytes;
    with_type(type, [&](auto kind) {
      if (m == 1)
        fused_dot<decltype(kind)::value>(x, k, rows, tile_n, y + y_col);
      else
        few_rows<decltype(kind)::value>(x, m, k, rows, tile_n, y + y_col, n_out);
    });
    return;
  }
  for (int64_t n = 0; n < tile_n; ++n) dequantise_row(weights + (n0 + n) * row_bytes, type, k / kBlock, buffer + n * k);
  for (int64_t n = tile_n; n < kTileN; ++n) std::fill_n(buffer + n * k, k, 0.0f);
  for (int64_t chunk = 0; chunk < m; chunk += kChunkM) {
    const int64_t chunk_end = std::min(m, chunk + kChunkM);
    int64_t r = chunk;
    for (; r + 3 <= chunk_end; r += 3)  // 12 accumulators, 3 inputs, 1 weight
      tile_dot<3>(x + r * k, k, buffer, tile_n, y + r * n_out + y_col, n_out);
    for (; r < chunk_end; ++r) tile_dot<1>(x + r * k, k, buffer, tile_n, y + r * n_out + y_col, n_out);
  }
}

}  // namespace palaver::avx2
