// The fast arithmetic mode (PALAVER_ARITHMETIC=fast): each input row's activations quantised to int8 blocks of 32,
// by that row alone, and multiplied with the weights' integer codes by integer dot products, as llama.cpp does.
//
// Two kernels. The one served (int8_groups.h) reads the weights repacked once, when the model turns fast, in groups
// of 8 rows whose codes share registers (the layout below; int8_repack.h writes it), as llama.cpp's repacked
// block_q4_0x8 and friends: 8 weight rows' sums a register, no horizontal sum. The other (int8_tiles.h) reads the
// file's blocks as they are, a row at a time, for a matrix set after the model turned fast. Their bits differ.
//
// A weight is scale * code - offset: the code an unsigned byte (Q8_0's a signed one), the scale and offset floats of
// its block, or of its 16 for the K-quants that scale each 16 (Q2_K, Q3_K, Q6_K). An activation is d * q with q in
// -127..127. A block's 32 products are then summed as integers, exactly, and only the block's sums meet floats: an
// 8-lane accumulator takes each block's sums times scale * d in block order, and the offsets' terms (offset * d *
// the sum of q) are added in block order too, so a row's result depends only on its own activations, never on the
// batch.
//
// Three families of integer dot products: AVX-512 VNNI (vpdpbusd on 256 bits, with AVX-512 VL), AVX-VNNI (the same
// instruction, VEX-encoded), and AVX2's vpmaddubsw and vpmaddwd, which cannot overflow here (a code is at most 128,
// an activation at most 127 in magnitude: two products sum to at most 32,512). All three give the same integers,
// hence the same bits. The float types (F32, F16, BF16) have no codes: the exact kernels multiply them.
#pragma once

#include "block_format.h"
#include "blocks_avx2.h"

#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace palaver {

// 32 activations as int8, with d: their largest magnitude / 127. halves are the sums of q over each half of 16,
// exact; sum is d times the sum of all 32 (for the offsets' terms).
struct Int8Block {
  int8_t q[kBlock];
  float d;
  float sum;
  int32_t halves[2];
};

// Whether a type's weights have integer codes (every block type; not the float types).
constexpr bool integer_codes(int64_t type) { return type != kF32 && type != kF16 && type != kBF16 && served(type); }

template <int64_t Type>
constexpr bool kSignedCodes = Type == kQ8_0;
template <int64_t Type>
constexpr bool kHalfScales = Type == kQ2_K || Type == kQ3_K || Type == kQ6_K;

// A block's 32 codes in weight order, and what makes them weights: scale[h] * code - offset[h] for half h (both
// halves alike unless kHalfScales); scales holds scale[0] in lanes 0-3 and scale[1] in lanes 4-7, the lanes of the
// dot products' sums that each half's products land in.
struct WeightCodes {
  __m256i q;
  float scale[2];
  float offset[2];
  __m256 scales;
};

// Block b (weights 32b .. 32b + 31) of a row as codes. Each offset below is exact: a power of two times a scale, or
// a float16 stored as such.
template <int64_t Type>
PALAVER_BLOCK_STEP void block_codes(const uint8_t* row, int64_t b, WeightCodes* codes) {
  constexpr int64_t parts = unit_weights(Type) / kBlock;
  const uint8_t* unit = row + unit_offset(Type, b);
  const int64_t part = b % parts;
  float scale = 0.0f, offset = 0.0f;
  if constexpr (Type == kQ4_0 || Type == kQ4_1) {
    codes->q = avx2::nibble_bytes(unit + (Type == kQ4_1 ? 4 : 2));
    scale = half_to_float(unit);
    offset = Type == kQ4_1 ? -half_to_float(unit + 2) : 8.0f * scale;
  } else if constexpr (Type == kQ5_0) {
    codes->q = _mm256_add_epi8(avx2::q5_bytes<Type>(unit), _mm256_set1_epi8(16));  // q - 16 back to q
    scale = half_to_float(unit);
    offset = 16.0f * scale;
  } else if constexpr (Type == kQ5_1) {
    codes->q = avx2::q5_bytes<Type>(unit);
    scale = half_to_float(unit);
    offset = -half_to_float(unit + 2);
  } else if constexpr (Type == kQ8_0) {
    codes->q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(unit + 2));
    scale = half_to_float(unit);
  } else if constexpr (Type == kQ4_K || Type == kQ5_K) {
    codes->q = avx2::k_part_bytes<Type>(unit, part, &scale, &offset);
  } else if constexpr (Type == kQ6_K) {
    codes->q = _mm256_add_epi8(avx2::q6_k_part_bytes(unit, part, codes->scale), _mm256_set1_epi8(32));
    for (int h = 0; h < 2; ++h) codes->offset[h] = 32.0f * codes->scale[h];
  } else if constexpr (Type == kQ2_K) {
    codes->q = avx2::two_bit_part(unit + 16, part);
    avx2::q2_k_part_scales(unit, part, codes->scale, codes->offset);
  } else if constexpr (Type == kQ3_K) {
    codes->q = _mm256_add_epi8(avx2::q3_k_part_bytes(unit, part, codes->scale), _mm256_set1_epi8(4));
    for (int h = 0; h < 2; ++h) codes->offset[h] = 4.0f * codes->scale[h];
  }
  if constexpr (kHalfScales<Type>) {
    codes->scales = _mm256_set_m128(_mm_set1_ps(codes->scale[1]), _mm_set1_ps(codes->scale[0]));
  } else {
    codes->scale[0] = codes->scale[1] = scale;
    codes->offset[0] = codes->offset[1] = offset;
  }
}

// Quantise m rows of k floats (k a multiple of 32) to k / 32 blocks each, as ggml's quantize_row_q8_0 does (d the
// block's largest magnitude / 127, each q rounded to the nearest, ties to even), keeping d in float32.
inline void quantise_rows(const float* x, int64_t m, int64_t k, Int8Block* out) {
  const __m256 sign_bit = _mm256_set1_ps(-0.0f);
  for (int64_t i = 0; i < m * (k / kBlock); ++i) {
    const float* v = x + i * kBlock;
    __m256 values[4];
    __m256 largest = _mm256_setzero_ps();
    for (int j = 0; j < 4; ++j) {
      values[j] = _mm256_loadu_ps(v + 8 * j);
      largest = _mm256_max_ps(largest, _mm256_andnot_ps(sign_bit, values[j]));
    }
    __m128 top = _mm_max_ps(_mm256_castps256_ps128(largest), _mm256_extractf128_ps(largest, 1));
    top = _mm_max_ps(top, _mm_movehl_ps(top, top));
    top = _mm_max_ss(top, _mm_movehdup_ps(top));
    const float amax = _mm_cvtss_f32(top);
    const float d = amax / 127.0f;
    const __m256 inverse = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    __m256i q[4];
    for (int j = 0; j < 4; ++j)
      q[j] = _mm256_cvtps_epi32(
          _mm256_round_ps(_mm256_mul_ps(values[j], inverse), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    // Each half's sum of q, exactly, before packing.
    int halves[2];
    for (int h = 0; h < 2; ++h) {
      const __m256i pair = _mm256_add_epi32(q[2 * h], q[2 * h + 1]);
      __m128i s = _mm_add_epi32(_mm256_castsi256_si128(pair), _mm256_extracti128_si256(pair, 1));
      s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
      s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
      halves[h] = _mm_cvtsi128_si32(s);
    }
    // Packing interleaves the 128-bit lanes; the permutation puts the 32 bytes back in order.
    const __m256i words = _mm256_packs_epi32(q[0], q[1]), words_high = _mm256_packs_epi32(q[2], q[3]);
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(words, words_high),
                                                      _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    Int8Block& block = out[i];
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(block.q), bytes);
    block.d = d;
    for (int h = 0; h < 2; ++h) block.halves[h] = halves[h];
    block.sum = d * static_cast<float>(halves[0] + halves[1]);
  }
}

// The repacked layout, which int8_repack.h writes once when a model turns fast and int8_groups.h reads: a matrix's
// rows in groups of kGroupRows (a short last group repeats its last row), each group's units (blocks of 32, or
// K-quant super-blocks) in order. A unit holds its 8 rows' scales, then each part's (each 32 weights') codes
// interleaved so that one 256-bit register holds 4 consecutive codes of every row, a row a 32-bit lane: a dot
// product's lane is a weight row, and 8 rows' sums come out of one register with no horizontal sum.
//
// The scales, from byte 0 of a unit: each row's d as float16, then
//   Q4_1, Q5_1: m (float16) 16                  Q4_K, Q5_K: dmin 16, each part's 6-bit scales 32, minimums 96
//   Q6_K, Q3_K: each 16's int8 scale 16         Q2_K: dmin 16, each 16's scale and minimum (as stored, a byte) 32
// each of the last four a byte a row, 8 rows at a time. Then a part's codes in up to three kinds of planes, in this
// order (the types' stored bits, rearranged):
//   nibbles, 128 bytes (Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K): plane u's lane r holds row r's codes 4u .. 4u + 3
//     in its four bytes' low nibbles, and 16 + 4u .. 16 + 4u + 3 in their high nibbles; or Q8_0's bytes, 256
//     bytes: plane t's lane r holds codes 4t .. 4t + 3;
//   pairs, 64 bytes (Q6_K's top two bits, Q2_K's and Q3_K's low two): plane v's byte i of lane r holds in bits 2s
//     and 2s + 1 those of code 4(v + 2s) + i;
//   bits, 32 bytes (Q5's fifth, Q3_K's third): byte i of lane r holds in bit t that of code 4t + i.
// Each unit is as large as its 8 rows' stored units, but Q4_K's, Q5_K's and Q3_K's, which keep their scales as
// bytes: 32 more than 1,152, 1,408 and 880.
constexpr int64_t kGroupRows = 8;

constexpr bool repacked_type(int64_t type) { return integer_codes(type); }

constexpr bool has_nibbles(int64_t type) { return type != kQ8_0 && type != kQ2_K && type != kQ3_K; }
constexpr bool has_pairs(int64_t type) { return type == kQ6_K || type == kQ2_K || type == kQ3_K; }
constexpr bool has_bits(int64_t type) { return type == kQ5_0 || type == kQ5_1 || type == kQ5_K || type == kQ3_K; }
// Where in a code its pairs and its bit go.
constexpr int pairs_shift(int64_t type) { return type == kQ6_K ? 4 : 0; }
constexpr int bit_shift(int64_t type) { return type == kQ3_K ? 2 : 4; }

constexpr int64_t scales_bytes(int64_t type) {
  switch (type) {
    case kQ4_1: case kQ5_1: return 32;
    case kQ4_K: case kQ5_K: case kQ2_K: return 160;
    case kQ6_K: case kQ3_K: return 144;
    default: return 16;
  }
}

constexpr int64_t part_bytes(int64_t type) {
  return (type == kQ8_0 ? 256 : has_nibbles(type) ? 128 : 0) + (has_pairs(type) ? 64 : 0) + (has_bits(type) ? 32 : 0);
}

// Where part `part` of a unit (its weights 32 * part .. 32 * part + 31) starts: its nibbles or bytes, then pairs,
// then bits.
constexpr int64_t part_offset(int64_t type, int64_t part) { return scales_bytes(type) + part * part_bytes(type); }
constexpr int64_t pairs_offset(int64_t type) { return type == kQ6_K ? 128 : 0; }
constexpr int64_t bits_offset(int64_t type) { return part_bytes(type) - 32; }

constexpr int64_t group_unit_bytes(int64_t type) { return part_offset(type, unit_weights(type) / kBlock); }

// Bytes of a group of rows of cols weights, repacked.
constexpr int64_t group_bytes(int64_t type, int64_t cols) { return cols / unit_weights(type) * group_unit_bytes(type); }

}  // namespace palaver

// AVX2: each pair of products summed to 16 bits (no overflow, as above), then each pair of those to 32.
namespace palaver::int8_avx2 {

PALAVER_BLOCK_STEP __m256i dot_codes(__m256i codes, __m256i activations) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(codes, activations), _mm256_set1_epi16(1));
}

// Q8_0's signed codes multiply by the sign trick (below); vpmaddubsw would saturate on codes biased to unsigned.
constexpr bool kBiasedSignedCodes = false;

// acc plus, in each lane, the sum of the products of its 16 codes in the 4 registers with the 16 activations at q,
// 4 a register. The products' pairs are summed in 16 bits as far as they cannot overflow: four registers' pairs
// for codes below 32 (2 * 31 * 127 * 4 = 31,496), two for Q6_K's below 64, one for Q8_0's magnitudes up to 128.
template <int64_t Type>
PALAVER_BLOCK_STEP __m256i dot_half(__m256i acc, const __m256i codes[4], const int8_t* q) {
  constexpr int together = Type == kQ8_0 ? 1 : Type == kQ6_K ? 2 : 4;
  for (int t = 0; t < 4; t += together) {
    __m256i pairs = _mm256_setzero_si256();
    for (int j = t; j < t + together; ++j) {
      const __m256i a = _mm256_set1_epi32(static_cast<int>(load_u32(reinterpret_cast<const uint8_t*>(q + 4 * j))));
      pairs = _mm256_add_epi16(pairs, Type == kQ8_0 ? _mm256_maddubs_epi16(_mm256_sign_epi8(codes[j], codes[j]),
                                                                           _mm256_sign_epi8(a, codes[j]))
                                                    : _mm256_maddubs_epi16(codes[j], a));
    }
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
  }
  return acc;
}

#include "int8_tiles.h"
#include "int8_groups.h"

}  // namespace palaver::int8_avx2

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avxvnni,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avxvnni,avx2,fma,f16c")
#endif

namespace palaver::int8_avx_vnni {

PALAVER_BLOCK_STEP __m256i dot_codes(__m256i codes, __m256i activations) {
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), codes, activations);
}

// Q8_0's signed codes biased by 128 to unsigned ones, and 128 times the activations' sum taken off (exact).
constexpr bool kBiasedSignedCodes = true;

template <int64_t Type>
PALAVER_BLOCK_STEP __m256i dot_half(__m256i acc, const __m256i codes[4], const int8_t* q) {
  for (int t = 0; t < 4; ++t)
    acc = _mm256_dpbusd_avx_epi32(
        acc, codes[t], _mm256_set1_epi32(static_cast<int>(load_u32(reinterpret_cast<const uint8_t*>(q + 4 * t)))));
  return acc;
}

#include "int8_tiles.h"
#include "int8_groups.h"

}  // namespace palaver::int8_avx_vnni

#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx512vnni,avx512vl,avx512f,avx512bw,avx2,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512vnni,avx512vl,avx512f,avx512bw,avx2,fma,f16c")
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"  // GCC bug 105593, as in blocks_avx512.h
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace palaver::int8_avx512_vnni {

PALAVER_BLOCK_STEP __m256i dot_codes(__m256i codes, __m256i activations) {
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), codes, activations);
}

constexpr bool kBiasedSignedCodes = true;  // as AVX-VNNI's

template <int64_t Type>
PALAVER_BLOCK_STEP __m256i dot_half(__m256i acc, const __m256i codes[4], const int8_t* q) {
  for (int t = 0; t < 4; ++t)
    acc = _mm256_dpbusd_epi32(
        acc, codes[t], _mm256_set1_epi32(static_cast<int>(load_u32(reinterpret_cast<const uint8_t*>(q + 4 * t)))));
  return acc;
}

#include "int8_tiles.h"
#include "int8_groups.h"

}  // namespace palaver::int8_avx512_vnni

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

namespace palaver {

// The integer dot-product families, by the numbers the C interface uses (pv_model_dots): none in the exact mode.
enum DotFamily : int64_t { kNoDots = 0, kMaddubsDots = 1, kAvxVnniDots = 2, kAvx512VnniDots = 3 };

using Int8TileOfRows = void (*)(const Int8Block* x, int64_t m, int64_t blocks, const uint8_t* weights, int64_t type,
                                int64_t row_bytes, int64_t n0, int64_t tile_n, float* y, int64_t n_out,
                                int64_t y_col);

inline bool cpu_runs_dots(int64_t family) {
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (family == kMaddubsDots) return avx2;
  if (family == kAvxVnniDots) return avx2 && __builtin_cpu_supports("avxvnni");
  if (family == kAvx512VnniDots)
    return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  return false;
}

// The widest integer dot products this CPU runs, AVX-512's only with_avx512 (the exact kernels' family is AVX-512):
// AVX2's kernels take AVX-VNNI at most, which AVX2-only CPUs such as Alder Lake have.
inline int64_t widest_dots(bool with_avx512) {
  if (with_avx512 && cpu_runs_dots(kAvx512VnniDots)) return kAvx512VnniDots;
  if (cpu_runs_dots(kAvxVnniDots)) return kAvxVnniDots;
  return kMaddubsDots;
}

inline Int8TileOfRows int8_tiles_of(int64_t family) {
  if (!cpu_runs_dots(family)) return nullptr;
  if (family == kAvx512VnniDots) return int8_avx512_vnni::tile_of_rows;
  if (family == kAvxVnniDots) return int8_avx_vnni::tile_of_rows;
  return int8_avx2::tile_of_rows;
}

// The products of m input rows of `blocks` Int8Blocks with `rows` weight rows of a repacked matrix, from the
// group at `groups` on, written to y[m][n_out] from column 0 (y points at the first group's first column).
using Int8GroupsOfRows = void (*)(const Int8Block* x, int64_t m, int64_t blocks, const uint8_t* groups, int64_t type,
                                  int64_t rows, float* y, int64_t n_out);

inline Int8GroupsOfRows int8_groups_of(int64_t family) {
  if (!cpu_runs_dots(family)) return nullptr;
  if (family == kAvx512VnniDots) return int8_avx512_vnni::groups_of_rows;
  if (family == kAvxVnniDots) return int8_avx_vnni::groups_of_rows;
  return int8_avx2::groups_of_rows;
}

}  // namespace palaver
