// The AVX-512 family of block kernels, for CPUs that have AVX-512 F, BW and VL (blocks.h chooses it at run time;
// nothing outside this file's region runs an AVX-512 instruction, so the library still loads on AVX2-only CPUs).
//
// Each 16-float register holds two weight rows' 8 floats of the same columns, [row a | row b], each widened from
// the same bytes and scaled by the same products as the AVX2 family's: every lane does the AVX2 lane's arithmetic in
// the AVX2 lane's order, so both families give every dot product the same bits. The width halves the instructions
// that dequantise and multiply a tile; the order of accumulation is unchanged.
#pragma once

#include "block_format.h"
#include "blocks_avx2.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")
// GCC 12's AVX-512 headers fill the unused lanes of a result with a self-initialised value, which it then warns of
// once inlined here (GCC bug 105593, mended in its own headers later).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace palaver::avx512 {

// [low | high] in one register.
PALAVER_BLOCK_STEP __m512 join(__m256 low, __m256 high) {
  const __m512d wide = _mm512_castpd256_pd512(_mm256_castps_pd(low));
  return _mm512_castpd_ps(_mm512_insertf64x4(wide, _mm256_castps_pd(high), 1));
}

PALAVER_BLOCK_STEP __m256 low_half(__m512 v) { return _mm512_castps512_ps256(v); }
PALAVER_BLOCK_STEP __m256 high_half(__m512 v) {
  const __m512d both = _mm512_castps_pd(v);
  return _mm256_castpd_ps(_mm512_castpd512_pd256(_mm512_shuffle_f64x2(both, both, 0xEE)));
}

// Lane 0 of v in the low 8 lanes, lane `second` in the high 8: one shuffle.
PALAVER_BLOCK_STEP __m512 spread(__m128 v, int second) {
  return _mm512_permutexvar_ps(_mm512_set_epi32(second, second, second, second, second, second, second, second, 0,
                                                0, 0, 0, 0, 0, 0, 0),
                               _mm512_castps128_ps512(v));
}

// a in the low 8 lanes, b in the high 8: the same scalar for each row's half.
PALAVER_BLOCK_STEP __m512 pair_of(float a, float b) {
  return spread(_mm_unpacklo_ps(_mm_set_ss(a), _mm_set_ss(b)), 1);
}

// The float16 scales at bytes 0 and 2 of units a and b, converted at once: [d_a | d_b] and [m_a | m_b].
PALAVER_BLOCK_STEP void scales_of(const uint8_t* ua, const uint8_t* ub, __m512* d, __m512* m) {
  const __m128 four = _mm_cvtph_ps(_mm_unpacklo_epi32(_mm_cvtsi32_si128(static_cast<int>(load_u32(ua))),
                                                      _mm_cvtsi32_si128(static_cast<int>(load_u32(ub)))));
  *d = spread(four, 2);  // [d_a, m_a, d_b, m_b]
  *m = spread(_mm_shuffle_ps(four, four, 0x0D), 1);  // [m_a, m_b, ...]
}

// 8 floats of an input row in both halves, to meet both rows of a pair.
PALAVER_BLOCK_STEP __m512 both_halves(const float* x) {
  return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_castps_pd(_mm256_loadu_ps(x))));
}

// Two rows' 32 bytes (signed or not) as four registers: register j holds each row's bytes 8j .. 8j + 7 as floats.
template <bool Signed>
PALAVER_BLOCK_STEP void widen_pair(__m256i a, __m256i b, __m512 w[4]) {
  const __m128i a_low = _mm256_castsi256_si128(a), a_high = _mm256_extracti128_si256(a, 1);
  const __m128i b_low = _mm256_castsi256_si128(b), b_high = _mm256_extracti128_si256(b, 1);
  const __m128i parts[4] = {_mm_unpacklo_epi64(a_low, b_low), _mm_unpackhi_epi64(a_low, b_low),
                            _mm_unpacklo_epi64(a_high, b_high), _mm_unpackhi_epi64(a_high, b_high)};
  for (int j = 0; j < 4; ++j)
    w[j] = _mm512_cvtepi32_ps(Signed ? _mm512_cvtepi8_epi32(parts[j]) : _mm512_cvtepu8_epi32(parts[j]));
}

// Block b of two rows a and b, dequantised as avx2::block_weights does each: register j holds [a's weights
// 8j .. 8j + 7 | b's]. Every step is the AVX2 family's, lane for lane.
template <int64_t Type>
PALAVER_BLOCK_STEP void block_pair(const uint8_t* row_a, const uint8_t* row_b, int64_t b, __m512 w[4]) {
  constexpr int64_t parts = unit_weights(Type) / kBlock;
  const uint8_t* ua = row_a + unit_offset(Type, b);
  const uint8_t* ub = row_b + unit_offset(Type, b);
  const int64_t part = b % parts;
  if constexpr (Type == kQ4_0 || Type == kQ4_1) {
    constexpr bool has_min = Type == kQ4_1;
    const __m128i pa = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ua + (has_min ? 4 : 2)));
    const __m128i pb = _mm_loadu_si128(reinterpret_cast<const __m128i*>(ub + (has_min ? 4 : 2)));
    const __m512i first = _mm512_cvtepu8_epi32(_mm_unpacklo_epi64(pa, pb));  // bytes 0..7 of each
    const __m512i second = _mm512_cvtepu8_epi32(_mm_unpackhi_epi64(pa, pb));
    const __m512i mask = _mm512_set1_epi32(0x0F);
    const __m512i nibbles[4] = {_mm512_and_si512(first, mask), _mm512_and_si512(second, mask),
                                _mm512_srli_epi32(first, 4), _mm512_srli_epi32(second, 4)};
    __m512 d, m;
    scales_of(ua, ub, &d, &m);  // Q4_0's m is its first nibbles' bytes, unused
    if constexpr (has_min) {
      for (int j = 0; j < 4; ++j) w[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(nibbles[j]), d, m);
    } else {
      for (int j = 0; j < 4; ++j)
        w[j] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(nibbles[j], _mm512_set1_epi32(8))), d);
    }
  } else if constexpr (Type == kQ8_0) {
    __m512 d, unused;
    scales_of(ua, ub, &d, &unused);
    for (int j = 0; j < 4; ++j) {
      const __m128i qa = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(ua + 2 + 8 * j));
      const __m128i qb = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(ub + 2 + 8 * j));
      w[j] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_unpacklo_epi64(qa, qb))), d);
    }
  } else if constexpr (Type == kQ5_0 || Type == kQ5_1) {
    constexpr bool has_min = Type == kQ5_1;
    widen_pair<!has_min>(avx2::q5_bytes<Type>(ua), avx2::q5_bytes<Type>(ub), w);
    __m512 d, m;
    scales_of(ua, ub, &d, &m);  // Q5_0's m is its fifth bits, unused
    if constexpr (has_min) {
      for (int j = 0; j < 4; ++j) w[j] = _mm512_fmadd_ps(w[j], d, m);
    } else {
      for (int j = 0; j < 4; ++j) w[j] = _mm512_mul_ps(w[j], d);
    }
  } else if constexpr (Type == kQ4_K || Type == kQ5_K) {
    float ds[2], dm[2];
    const __m256i qa = avx2::k_part_bytes<Type>(ua, part, &ds[0], &dm[0]);
    const __m256i qb = avx2::k_part_bytes<Type>(ub, part, &ds[1], &dm[1]);
    widen_pair<false>(qa, qb, w);
    const __m512 scale = pair_of(ds[0], ds[1]), minimum = pair_of(dm[0], dm[1]);
    for (int j = 0; j < 4; ++j) w[j] = _mm512_fmsub_ps(w[j], scale, minimum);  // as the AVX2 family: exact product
  } else if constexpr (Type == kQ6_K) {
    float sa[2], sb[2];
    widen_pair<true>(avx2::q6_k_part_bytes(ua, part, sa), avx2::q6_k_part_bytes(ub, part, sb), w);
    for (int j = 0; j < 4; ++j) w[j] = _mm512_mul_ps(w[j], pair_of(sa[j / 2], sb[j / 2]));
  } else if constexpr (Type == kQ2_K) {
    float dsa[2], dma[2], dsb[2], dmb[2];
    widen_pair<false>(avx2::two_bit_part(ua + 16, part), avx2::two_bit_part(ub + 16, part), w);
    avx2::q2_k_part_scales(ua, part, dsa, dma);
    avx2::q2_k_part_scales(ub, part, dsb, dmb);
    for (int j = 0; j < 4; ++j)
      w[j] = _mm512_fmsub_ps(w[j], pair_of(dsa[j / 2], dsb[j / 2]), pair_of(dma[j / 2], dmb[j / 2]));
  } else if constexpr (Type == kQ3_K) {
    float sa[2], sb[2];
    widen_pair<true>(avx2::q3_k_part_bytes(ua, part, sa), avx2::q3_k_part_bytes(ub, part, sb), w);
    for (int j = 0; j < 4; ++j) w[j] = _mm512_mul_ps(w[j], pair_of(sa[j / 2], sb[j / 2]));
  } else if constexpr (Type == kF16 || Type == kBF16) {  // each row's 8 halves side by side, widened at once
    for (int j = 0; j < 4; ++j) {
      const __m256i halves = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ua + 16 * j))),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(ub + 16 * j)), 1);
      w[j] = Type == kF16 ? _mm512_cvtph_ps(halves)
                          : _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16));
    }
  } else {  // F32: nothing to share between the rows but the register
    __m256 wa[4], wb[4];
    avx2::block_weights<Type>(row_a, b, wa);
    avx2::block_weights<Type>(row_b, b, wb);
    for (int j = 0; j < 4; ++j) w[j] = join(wa[j], wb[j]);
  }
}

// Dequantise one row through block_pair (the row with itself): the family's own weights, which its tests check.
template <int64_t Type>
inline void dequantise_row_of(const uint8_t* row, int64_t blocks, float* out) {
  for (int64_t b = 0; b < blocks; ++b) {
    __m512 w[4];
    block_pair<Type>(row, row, b, w);
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(out + b * kBlock + 8 * j, low_half(w[j]));
  }
}

inline void dequantise_row(const uint8_t* row, int64_t type, int64_t blocks, float* out) {
  avx2::with_type(type, [&](auto kind) { dequantise_row_of<decltype(kind)::value>(row, blocks, out); });
}

// Write pairs of accumulators' dot products to y (horizontal_sum of each half, as the AVX2 family sums each
// accumulator), the tile's edge cut.
template <int Rows>
inline void store_pairs(const __m512 (&acc)[Rows][kTileN / 2], int64_t tile_n, float* y, int64_t n_out) {
  float sums[Rows][kTileN];
  for (int r = 0; r < Rows; ++r)
    for (int p = 0; p < kTileN / 2; ++p) {
      sums[r][2 * p] = horizontal_sum(low_half(acc[r][p]));
      sums[r][2 * p + 1] = horizontal_sum(high_half(acc[r][p]));
    }
  for (int r = 0; r < Rows; ++r)
    for (int n = 0; n < tile_n; ++n) y[r * n_out + n] = sums[r][n];
}

// One input row: both pairs of the tile dequantised in registers as the weights stream past.
template <int64_t Type>
inline void fused_dot(const float* x, int64_t k, const uint8_t* const rows[kTileN], int64_t tile_n, float* y) {
  __m512 acc[1][kTileN / 2];
  for (int p = 0; p < kTileN / 2; ++p) acc[0][p] = _mm512_setzero_ps();
  for (int64_t b = 0; b < k / kBlock; ++b) {
    __m512 xs[4];
    for (int j = 0; j < 4; ++j) xs[j] = both_halves(x + b * kBlock + 8 * j);
    for (int p = 0; p < kTileN / 2; ++p) {
      prefetch_ahead(rows[2 * p], Type, b);
      prefetch_ahead(rows[2 * p + 1], Type, b);
      __m512 w[4];
      block_pair<Type>(rows[2 * p], rows[2 * p + 1], b, w);
      for (int j = 0; j < 4; ++j) acc[0][p] = _mm512_fmadd_ps(w[j], xs[j], acc[0][p]);
    }
  }
  store_pairs<1>(acc, tile_n, y, 0);
}

// Dot products of Rows rows of x with the tile's pairs, which the buffer holds interleaved: pair p's 8 columns from
// i on are the 16 floats at p * 2k + 2i.
template <int Rows>
inline void tile_dot(const float* x, int64_t k, const float* pairs, int64_t tile_n, float* y, int64_t n_out) {
  __m512 acc[Rows][kTileN / 2];
  for (int r = 0; r < Rows; ++r)
    for (int p = 0; p < kTileN / 2; ++p) acc[r][p] = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; i += 8) {
    __m512 w[kTileN / 2];
    for (int p = 0; p < kTileN / 2; ++p) w[p] = _mm512_loadu_ps(pairs + p * 2 * k + 2 * i);
    for (int r = 0; r < Rows; ++r) {
      const __m512 xs = both_halves(x + r * k + i);
      for (int p = 0; p < kTileN / 2; ++p) acc[r][p] = _mm512_fmadd_ps(w[p], xs, acc[r][p]);
    }
  }
  store_pairs<Rows>(acc, tile_n, y, n_out);
}

// Whether decoding a type's rows in pairs pays. For the K-quants, whose parts and scales take as many steps in pairs
// as apart, it did not on a Xeon (Sapphire Rapids class, make bench-kernel): their one or two rows take the AVX2
// family's path, with the same bits.
constexpr bool pairs_when_decoding(int64_t type) {
  return type != kQ2_K && type != kQ3_K && type != kQ4_K && type != kQ5_K && type != kQ6_K;
}

// As avx2::tile_of_rows, with the same bits: the tile's rows in two pairs (a short tile repeats its last row).
inline void tile_of_rows(const float* x, int64_t m, int64_t k, const uint8_t* weights, int64_t type, int64_t row_bytes,
                         int64_t n0, int64_t tile_n, float* y, int64_t n_out, int64_t y_col, float* buffer) {
  const uint8_t* rows[kTileN];
  for (int64_t n = 0; n < kTileN; ++n) rows[n] = weights + (n0 + std::min(n, tile_n - 1)) * row_bytes;
  avx2::with_type(type, [&](auto kind) {
    constexpr int64_t kType = decltype(kind)::value;
    if (m < kFusedRows) {  // decoding a few rows: weights go straight to registers
      if (m > 1)
        avx2::few_rows<kType>(x, m, k, rows, tile_n, y + y_col, n_out);
      else if constexpr (pairs_when_decoding(kType))
        fused_dot<kType>(x, k, rows, tile_n, y + y_col);
      else
        avx2::fused_dot<kType>(x, k, rows, tile_n, y + y_col);
      return;
    }
    for (int64_t b = 0; b < k / kBlock; ++b)
      for (int64_t p = 0; p < kTileN / 2; ++p) {
        __m512 w[4];
        block_pair<kType>(rows[2 * p], rows[2 * p + 1], b, w);
        for (int j = 0; j < 4; ++j) _mm512_storeu_ps(buffer + p * 2 * k + (b * 4 + j) * 16, w[j]);
      }
  });
  if (m < kFusedRows) return;
  for (int64_t chunk = 0; chunk < m; chunk += kChunkM) {
    const int64_t chunk_end = std::min(m, chunk + kChunkM);
    int64_t r = chunk;
    for (; r + 8 <= chunk_end; r += 8)  // 16 accumulators, 2 weight pairs, 1 input at a time
      tile_dot<8>(x + r * k, k, buffer, tile_n, y + r * n_out + y_col, n_out);
    for (; r + 4 <= chunk_end; r += 4) tile_dot<4>(x + r * k, k, buffer, tile_n, y + r * n_out + y_col, n_out);
    for (; r < chunk_end; ++r) tile_dot<1>(x + r * k, k, buffer, tile_n, y + r * n_out + y_col, n_out);
  }
}

}  // namespace palaver::avx512

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif
