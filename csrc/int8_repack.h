// The fast mode's repacked weights: a matrix's rows rewritten once, when a model turns fast, in the layout that
// int8_dots.h describes and int8_groups.h reads (groups of 8 rows interleaved, about the original's size).
#pragma once

#include "chunk_pool.h"
#include "int8_dots.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>

namespace palaver {

// Storage for a repacked matrix, in whole cache lines: its first group starts on one.
struct alignas(64) CacheLine {
  uint8_t bytes[64];
};

namespace repack_detail {

using BlockCodes = uint8_t[kGroupRows][kBlock];  // each row's 32 codes in weight order (Q8_0's as signed bytes)

inline void write_nibbles(const BlockCodes& c, uint8_t* out) {
  for (int u = 0; u < 4; ++u)
    for (int r = 0; r < kGroupRows; ++r)
      for (int i = 0; i < 4; ++i)
        out[32 * u + 4 * r + i] = static_cast<uint8_t>((c[r][4 * u + i] & 0x0F) | (c[r][16 + 4 * u + i] & 0x0F) << 4);
}

inline void write_bytes(const BlockCodes& c, uint8_t* out) {
  for (int t = 0; t < 8; ++t)
    for (int r = 0; r < kGroupRows; ++r) std::memcpy(out + 32 * t + 4 * r, &c[r][4 * t], 4);
}

// The two bits of each code from bit `from`.
inline void write_pairs(const BlockCodes& c, int from, uint8_t* out) {
  for (int v = 0; v < 2; ++v)
    for (int r = 0; r < kGroupRows; ++r)
      for (int i = 0; i < 4; ++i) {
        int byte = 0;
        for (int s = 0; s < 4; ++s) byte |= ((c[r][4 * (v + 2 * s) + i] >> from) & 3) << (2 * s);
        out[32 * v + 4 * r + i] = static_cast<uint8_t>(byte);
      }
}

// Bit `from` of each code.
inline void write_bits(const BlockCodes& c, int from, uint8_t* out) {
  for (int r = 0; r < kGroupRows; ++r)
    for (int i = 0; i < 4; ++i) {
      int byte = 0;
      for (int t = 0; t < 8; ++t) byte |= ((c[r][4 * t + i] >> from) & 1) << t;
      out[4 * r + i] = static_cast<uint8_t>(byte);
    }
}

// Row r's scales of unit (a stored unit of Type) into out, a repacked unit.
template <int64_t Type>
inline void repack_scales(const uint8_t* unit, int r, uint8_t* out) {
  constexpr int64_t d_at = Type == kQ6_K ? 208 : Type == kQ3_K ? 108 : Type == kQ2_K ? 80 : 0;
  std::memcpy(out + 2 * r, unit + d_at, 2);
  if constexpr (Type == kQ4_1 || Type == kQ5_1 || Type == kQ4_K || Type == kQ5_K || Type == kQ2_K)
    std::memcpy(out + 16 + 2 * r, unit + (Type == kQ2_K ? 82 : 2), 2);  // m or dmin
  if constexpr (Type == kQ4_K || Type == kQ5_K)
    for (int p = 0; p < 8; ++p) {
      int scale = 0, minimum = 0;
      avx2::scale_min_k4(p, unit + 4, &scale, &minimum);
      out[32 + 8 * p + r] = static_cast<uint8_t>(scale);
      out[96 + 8 * p + r] = static_cast<uint8_t>(minimum);
    }
  for (int h = 0; h < 16; ++h) {
    if constexpr (Type == kQ6_K) out[16 + 8 * h + r] = unit[192 + h];
    if constexpr (Type == kQ3_K) out[16 + 8 * h + r] = static_cast<uint8_t>(avx2::q3_k_scale(unit + 96, h));
    if constexpr (Type == kQ2_K) out[32 + 8 * h + r] = unit[h];
  }
}

// One unit (a block, or a K-quant super-block) u of a group's rows, into out (group_unit_bytes(Type)).
template <int64_t Type>
inline void repack_unit(const uint8_t* const rows[kGroupRows], int64_t u, uint8_t* out) {
  constexpr int64_t parts = unit_weights(Type) / kBlock;
  for (int r = 0; r < kGroupRows; ++r) repack_scales<Type>(rows[r] + u * unit_bytes(Type), r, out);
  for (int64_t part = 0; part < parts; ++part) {
    BlockCodes codes;
    for (int r = 0; r < kGroupRows; ++r) {
      WeightCodes weight;
      block_codes<Type>(rows[r], u * parts + part, &weight);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes[r]), weight.q);
    }
    uint8_t* at = out + part_offset(Type, part);
    if constexpr (Type == kQ8_0) write_bytes(codes, at);
    if constexpr (has_nibbles(Type)) write_nibbles(codes, at);
    if constexpr (has_pairs(Type)) write_pairs(codes, pairs_shift(Type), at + pairs_offset(Type));
    if constexpr (has_bits(Type)) write_bits(codes, bit_shift(Type), at + bits_offset(Type));
  }
}

template <int64_t Type>
inline void repack_group(const uint8_t* data, int64_t rows, int64_t cols, int64_t row_bytes, int64_t g, uint8_t* out) {
  const uint8_t* group_rows[kGroupRows];
  for (int64_t r = 0; r < kGroupRows; ++r)  // a short last group repeats its last row
    group_rows[r] = data + std::min(g * kGroupRows + r, rows - 1) * row_bytes;
  for (int64_t u = 0; u < cols / unit_weights(Type); ++u)
    repack_unit<Type>(group_rows, u, out + g * group_bytes(Type, cols) + u * group_unit_bytes(Type));
}

}  // namespace repack_detail

// Bytes of a matrix's repacked copy: whole groups of kGroupRows rows.
constexpr int64_t repacked_bytes(int64_t type, int64_t rows, int64_t cols) {
  return (rows + kGroupRows - 1) / kGroupRows * group_bytes(type, cols);
}

// Repack rows of a repacked_type into out (repacked_bytes of them), groups shared among the pool's threads.
inline void repack_rows(const uint8_t* data, int64_t type, int64_t rows, int64_t cols, int64_t row_bytes,
                        uint8_t* out) {
  const int64_t groups = (rows + kGroupRows - 1) / kGroupRows;
  avx2::with_type(type, [&](auto kind) {
    if constexpr (repacked_type(decltype(kind)::value))
      ChunkPool::instance().run(groups, 16, [&](int64_t begin, int64_t end) {
        for (int64_t g = begin; g < end; ++g)
          repack_detail::repack_group<decltype(kind)::value>(data, rows, cols, row_bytes, g, out);
      });
  });
}

// A matrix's repacked copy, in new storage.
inline std::unique_ptr<CacheLine[]> repacked(const uint8_t* data, int64_t type, int64_t rows, int64_t cols,
                                             int64_t row_bytes) {
  const int64_t lines = std::max<int64_t>(1, (repacked_bytes(type, rows, cols) + 63) / 64);
  std::unique_ptr<CacheLine[]> storage(new CacheLine[static_cast<size_t>(lines)]);
  repack_rows(data, type, rows, cols, row_bytes, storage[0].bytes);
  return storage;
}

}  // namespace palaver
