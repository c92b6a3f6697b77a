// The fast mode's own tests, built with AddressSanitizer and UndefinedBehaviorSanitizer (tests/engine/native/
// test_binding.py compiles and runs this): activations quantised as ggml's quantize_row_q8_0 does; then, for every
// block type with integer codes, the repacked kernels (groups of 8 rows) and the per-row ones against a
// double-precision reference of the same quantised arithmetic (the exact kernels' de-quantised weights, which
// blocks_test checks against ggml's, times the de-quantised int8 activations), within a few float roundings a
// block; each input row's products the same bits alone and in batches of every size around the register tiles;
// and every dot family this CPU runs the AVX2 family's bits.

#include "check.h"
#include "blocks.h"
#include "int8_repack.h"
#include "random_blocks.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace int8_test {

using namespace palaver;
using palaver_test::random_rows;

// Input rows: normal, one of them all zeros (d = 0), one a single large value among small ones.
std::vector<float> random_inputs(std::mt19937& rng, int64_t m, int64_t k) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(m * k));
  for (float& value : x) value = normal(rng);
  if (m > 3) std::fill_n(&x[static_cast<size_t>(2 * k)], k, 0.0f);
  if (m > 4) {
    std::fill_n(&x[static_cast<size_t>(3 * k)], k, 1e-3f);
    x[static_cast<size_t>(3 * k + k / 2)] = 3e4f;
  }
  return x;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// Each quantised block: |q| <= 127, d * q within half a step of x, halves and sum the sums of q.
void check_quantised(const std::vector<float>& x, const std::vector<Int8Block>& x8) {
  for (size_t i = 0; i < x8.size(); ++i) {
    const Int8Block& block = x8[i];
    int halves[2] = {0, 0};
    for (int j = 0; j < kBlock; ++j) {
      const float value = x[i * kBlock + static_cast<size_t>(j)];
      CHECK(block.q[j] >= -127);
      CHECK(std::fabs(value - block.d * static_cast<float>(block.q[j])) <= 0.5001f * block.d);
      halves[j / 16] += block.q[j];
    }
    CHECK(block.halves[0] == halves[0] && block.halves[1] == halves[1]);
    CHECK(block.sum == block.d * static_cast<float>(halves[0] + halves[1]));
  }
}

// The reference's product of every input row with every weight row, in double, and a bound on what a few float
// roundings a block may cost: the sum over the weights of |activation| * (|scale * code| + |offset|), the
// magnitudes the kernels' float steps meet.
struct Reference {
  std::vector<double> y, bound;
};

Reference reference(const std::vector<uint8_t>& w, int64_t type, int64_t rows, int64_t cols,
                    const std::vector<Int8Block>& x8, int64_t m) {
  const int64_t row_bytes = row_bytes_of(type, cols), blocks = cols / kBlock;
  Reference out{std::vector<double>(static_cast<size_t>(m * rows)), std::vector<double>(static_cast<size_t>(m * rows))};
  std::vector<float> weights(static_cast<size_t>(cols));
  for (int64_t n = 0; n < rows; ++n) {
    const uint8_t* row = w.data() + n * row_bytes;
    avx2::dequantise_row(row, type, blocks, weights.data());
    std::vector<double> magnitude(static_cast<size_t>(cols));
    for (int64_t b = 0; b < blocks; ++b) {
      WeightCodes codes;
      avx2::with_type(type, [&](auto kind) {
        if constexpr (integer_codes(decltype(kind)::value)) block_codes<decltype(kind)::value>(row, b, &codes);
      });
      uint8_t q[kBlock];
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), codes.q);
      for (int j = 0; j < kBlock; ++j) {
        const double code = type == kQ8_0 ? static_cast<int8_t>(q[j]) : q[j];
        magnitude[static_cast<size_t>(b * kBlock + j)] =
            std::fabs(codes.scale[j / 16] * code) + std::fabs(static_cast<double>(codes.offset[j / 16]));
      }
    }
    for (int64_t r = 0; r < m; ++r) {
      double sum = 0.0, bound = 0.0;
      for (int64_t i = 0; i < cols; ++i) {
        const Int8Block& block = x8[static_cast<size_t>(r * blocks + i / kBlock)];
        const double activation = static_cast<double>(block.d) * block.q[i % kBlock];
        sum += static_cast<double>(weights[static_cast<size_t>(i)]) * activation;
        bound += std::fabs(activation) * magnitude[static_cast<size_t>(i)];
      }
      out.y[static_cast<size_t>(r * rows + n)] = sum;
      out.bound[static_cast<size_t>(r * rows + n)] = bound;
    }
  }
  return out;
}

// A kernel's products of m input rows with all the weight rows: y[m][rows].
using Product = std::vector<float> (*)(int64_t family, const Int8Block* x, int64_t m, int64_t type, int64_t rows,
                                       int64_t cols, const std::vector<uint8_t>& w, const uint8_t* repacked);

// In calls of one group and of two groups then the rest, as a pool's tasks might split them.
std::vector<float> grouped(int64_t family, const Int8Block* x, int64_t m, int64_t type, int64_t rows, int64_t cols,
                           const std::vector<uint8_t>&, const uint8_t* repacked) {
  std::vector<float> y(static_cast<size_t>(m * rows), NAN);
  const int64_t first = std::min(rows, (m % 2 ? 1 : 2) * kGroupRows);
  for (int64_t n0 = 0; n0 < rows; n0 = n0 == 0 ? first : rows)
    int8_groups_of(family)(x, m, cols / kBlock, repacked + n0 / kGroupRows * group_bytes(type, cols), type,
                           (n0 == 0 ? first : rows) - n0, y.data() + n0, rows);
  return y;
}

std::vector<float> per_row(int64_t family, const Int8Block* x, int64_t m, int64_t type, int64_t rows, int64_t cols,
                           const std::vector<uint8_t>& w, const uint8_t*) {
  std::vector<float> y(static_cast<size_t>(m * rows), NAN);
  for (int64_t n0 = 0; n0 < rows; n0 += kTileN)
    int8_tiles_of(family)(x, m, cols / kBlock, w.data(), type, row_bytes_of(type, cols), n0,
                          std::min(kTileN, rows - n0), y.data(), rows, n0);
  return y;
}

// Within the reference's bound, alone and batched the same bits, every family the AVX2 family's bits.
void check_kernel(Product product, std::mt19937& rng, int64_t type, int64_t rows, int64_t cols, bool repack) {
  const std::vector<uint8_t> w = random_rows(rng, type, rows, cols);
  const int64_t row_bytes = row_bytes_of(type, cols);
  std::unique_ptr<CacheLine[]> packed;
  if (repack) {
    CHECK(repacked_bytes(type, kGroupRows, cols) <= kGroupRows * row_bytes * 104 / 100);  // Q3_K: 32 more in 880
    packed = repacked(w.data(), type, rows, cols, row_bytes);
  }
  const uint8_t* repacked_rows = repack ? packed[0].bytes : nullptr;
  const int64_t m_most = kChunkM + 1, blocks = cols / kBlock;
  const std::vector<float> x = random_inputs(rng, m_most, cols);
  std::vector<Int8Block> x8(static_cast<size_t>(m_most * blocks));
  quantise_rows(x.data(), m_most, cols, x8.data());
  check_quantised(x, x8);
  const Reference want = reference(w, type, rows, cols, x8, m_most);
  std::vector<float> alone;
  for (int64_t r = 0; r < m_most; ++r) {
    const std::vector<float> row = product(kMaddubsDots, &x8[static_cast<size_t>(r * blocks)], 1, type, rows, cols, w,
                                           repacked_rows);
    alone.insert(alone.end(), row.begin(), row.end());
  }
  const double roundings = 4.0 * static_cast<double>(blocks + 2) * std::ldexp(1.0, -24);
  for (size_t i = 0; i < alone.size(); ++i) {
    const bool close = std::fabs(alone[i] - want.y[i]) <= roundings * want.bound[i] + 1e-30;
    CHECK(close);
    if (!close)
      std::fprintf(stderr, "type %lld rows %lld cols %lld output %zu: %.9g, want %.9g (bound %.3g)\n",
                   static_cast<long long>(type), static_cast<long long>(rows), static_cast<long long>(cols), i,
                   alone[i], want.y[i], want.bound[i]);
  }
  for (int64_t family : {kMaddubsDots, kAvxVnniDots, kAvx512VnniDots}) {
    if (!cpu_runs_dots(family)) continue;
    for (int64_t m : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{4}, int64_t{5}, int64_t{6}, int64_t{7}, int64_t{9},
                      int64_t{16}, int64_t{17}, m_most}) {
      std::vector<float> batched = product(family, x8.data(), m, type, rows, cols, w, repacked_rows);
      CHECK(same_bits(batched, std::vector<float>(alone.begin(), alone.begin() + m * rows)));
    }
  }
}

void check_type(std::mt19937& rng, int64_t type) {
  const int64_t unit = unit_weights(type);
  const std::vector<int64_t> widths = unit == kSuper ? std::vector<int64_t>{unit, 2 * unit}
                                                     : std::vector<int64_t>{unit, 2 * unit, 3 * unit};
  for (int64_t cols : widths)
    for (int64_t rows : {1, 7, 8, 9, 15, 16, 17}) {
      if (repacked_type(type)) check_kernel(grouped, rng, type, rows, cols, true);
      check_kernel(per_row, rng, type, rows, cols, false);
    }
}

int run() {
  for (int64_t family : {kMaddubsDots, kAvxVnniDots, kAvx512VnniDots})
    std::printf("dot family %lld: %s\n", static_cast<long long>(family), cpu_runs_dots(family) ? "checked" : "skipped");
  std::mt19937 rng(17);
  for (int64_t type : {kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ8_0, kQ4_K, kQ6_K, kQ2_K, kQ3_K, kQ5_K}) check_type(rng, type);
  if (palaver_test::failures) {
    std::fprintf(stderr, "%d int8 checks failed\n", palaver_test::failures);
    return 1;
  }
  std::printf("all int8 checks passed\n");
  return 0;
}

}  // namespace int8_test
