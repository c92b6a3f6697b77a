// Random valid rows of blocks, for the block and int8 tests: every byte random, the float16 scales finite, some of
// them at float16's extremes.
#pragma once

#include "blocks.h"

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

namespace palaver_test {

using namespace palaver;

inline uint16_t half_bits(float value) {
  // Round to float16 through the hardware conversion, as gguf-py's astype(float16) does.
  return static_cast<uint16_t>(_cvtss_sh(value, 0));
}

// Random valid units of a type, rows by cols weights.
inline std::vector<uint8_t> random_rows(std::mt19937& rng, int64_t type, int64_t rows, int64_t cols) {
  std::vector<uint8_t> data(static_cast<size_t>(rows * row_bytes_of(type, cols)));
  std::uniform_int_distribution<int> byte(0, 255);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float extremes[] = {65504.0f, -65504.0f, 6.1e-5f, 5.96e-8f, 0.0f, -0.0f, 0.01f};
  std::uniform_int_distribution<int> pick(0, 20);
  auto scale = [&]() {
    const int chosen = pick(rng);
    return half_bits(chosen < 7 ? extremes[chosen] : normal(rng) * 0.05f);
  };
  if (type == kF32) {
    for (size_t i = 0; i < data.size(); i += 4) {
      const float value = normal(rng);
      std::memcpy(&data[i], &value, 4);
    }
    return data;
  }
  if (type == kF16 || type == kBF16) {
    for (size_t i = 0; i < data.size(); i += 2) {
      float value = normal(rng);
      uint32_t bits = 0;
      std::memcpy(&bits, &value, 4);
      const uint16_t stored = type == kF16 ? scale() : static_cast<uint16_t>(bits >> 16);
      std::memcpy(&data[i], &stored, 2);
    }
    return data;
  }
  for (auto& b : data) b = static_cast<uint8_t>(byte(rng));
  const int64_t unit = unit_bytes(type);
  for (size_t u = 0; u < data.size(); u += static_cast<size_t>(unit)) {
    std::vector<int64_t> offsets = {0};
    if (type == kQ4_1 || type == kQ5_1 || type == kQ4_K || type == kQ5_K) offsets.push_back(2);
    if (type == kQ6_K) offsets = {208};
    if (type == kQ2_K) offsets = {80, 82};
    if (type == kQ3_K) offsets = {108};
    for (int64_t offset : offsets) {
      const uint16_t bits = scale();
      std::memcpy(&data[u + static_cast<size_t>(offset)], &bits, 2);
    }
  }
  return data;
}

}  // namespace palaver_test
