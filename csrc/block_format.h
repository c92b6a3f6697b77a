// What every kernel family shares: GGUF's block types and their sizes, the tiles and chunks the kernels work in,
// and the one horizontal sum whose order fixes every dot product's bits.
//
// Served: float32, float16 and bfloat16 tensors; Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 blocks of 32 weights; and the
// K-quants Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, super-blocks of 256 weights in eight parts of 32 (the types inside Q2_K,
// Q3_K_M, Q4_K_M, Q5_K_M and Q6_K files).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

// For the block-level steps, which a kernel calls once a block: out of line, each call would cost more than the block
// (and in a shared library, a call through the PLT).
#define PALAVER_BLOCK_STEP inline __attribute__((always_inline))

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

// The bytes block b (weights b * 32 .. b * 32 + 31) of a row starts in: its own, or its super-block's.
constexpr int64_t unit_offset(int64_t type, int64_t b) {
  return b / (unit_weights(type) / kBlock) * unit_bytes(type);
}

PALAVER_BLOCK_STEP float half_to_float(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return _cvtsh_ss(bits);
}

PALAVER_BLOCK_STEP uint32_t load_u32(const uint8_t* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  return bits;
}

// Every dot product's last step, in every family: its 8 lanes summed in this order.
inline float horizontal_sum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_shuffle_ps(sum, sum, 1));
  return _mm_cvtss_f32(sum);
}

constexpr int64_t kTileN = 4;   // weight rows dequantised together and reused across input rows
constexpr int64_t kTileM = 3;   // input rows in the AVX2 family's register tile over a dequantised buffer
constexpr int64_t kFusedRows = 8;  // input rows below which the weights go straight to registers (decoding)
constexpr int64_t kChunkM = 64; // input rows kept hot in cache while a tile of weights is reused
// Prefetch this far ahead of the weights being read: the hardware prefetchers fall behind on a tile's four
// interleaved row streams (measured: a decode step's kernel time fell by a third at 4 KB).
constexpr int64_t kPrefetchBytes = 4096;

PALAVER_BLOCK_STEP void prefetch_ahead(const uint8_t* row, int64_t type, int64_t b) {
  _mm_prefetch(reinterpret_cast<const char*>(row + b * kBlock * unit_bytes(type) / unit_weights(type) + kPrefetchBytes),
               _MM_HINT_T0);
}

// Tiles of weight rows per pool task when m input rows of k floats meet a matrix: enough that a small layer is not
// split into more tasks than it is worth.
constexpr int64_t tiles_per_task(int64_t k, int64_t m) {
  return std::max<int64_t>(1, 16384 / (k * std::max<int64_t>(1, std::min<int64_t>(m, 8))));
}

// This thread's buffer for a tile of m input rows of k floats, kept between calls: it is allocated only to grow,
// never in the loop over tiles.
inline float* tile_buffer(int64_t m, int64_t k) {
  thread_local std::vector<float> buffer;
  const auto wanted = static_cast<size_t>(m < kFusedRows ? 0 : kTileN * k);
  if (buffer.size() < wanted) buffer.resize(wanted);
  return buffer.data();
}

}  // namespace palaver
