// The block kernel's own tests, built with AddressSanitizer and UndefinedBehaviorSanitizer (tests/engine/native/test_binding.py
// compiles and runs this), for each kernel family this CPU runs: every type's weights against ggml's scalar
// reference, bit for bit, and each input row's product the same bits alone and in batches of every size, on both
// sides of every tile, register tile and chunk, over rows of one and of several blocks or super-blocks, on a
// thread's tile buffer that earlier calls left stale; and every family's products the AVX2 family's bits.

#include "check.h"
#include "blocks.h"
#include "random_blocks.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

namespace blocks_test {

using namespace palaver;
using palaver_test::half_bits;
using palaver_test::random_rows;

float half(const uint8_t* p) { return half_to_float(p); }

// ggml's get_scale_min_k4.
void scale_min(int j, const uint8_t* q, int* d, int* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// One unit of a type, dequantised as ggml's scalar dequantize_row_* does it, into out.
void reference_unit(int64_t type, const uint8_t* x, float* y) {
  switch (type) {
    case kF32: std::memcpy(y, x, 32 * 4); return;
    case kF16: for (int i = 0; i < 32; ++i) y[i] = half(x + 2 * i); return;
    case kBF16:
      for (int i = 0; i < 32; ++i) {
        const uint32_t bits = static_cast<uint32_t>(x[2 * i] | (x[2 * i + 1] << 8)) << 16;
        std::memcpy(&y[i], &bits, 4);
      }
      return;
    case kQ8_0:
      for (int i = 0; i < 32; ++i) y[i] = static_cast<float>(static_cast<int8_t>(x[2 + i])) * half(x);
      return;
    case kQ4_0: case kQ4_1: case kQ5_0: case kQ5_1: {
      const bool has_min = type == kQ4_1 || type == kQ5_1, fifth = type == kQ5_0 || type == kQ5_1;
      uint32_t qh = 0;
      if (fifth) std::memcpy(&qh, x + (has_min ? 4 : 2), 4);
      const uint8_t* qs = x + 2 + (has_min ? 2 : 0) + (fifth ? 4 : 0);
      for (int j = 0; j < 16; ++j) {
        const int h0 = fifth ? static_cast<int>(((qh >> j) << 4) & 0x10) : 0;
        const int h1 = fifth ? static_cast<int>((qh >> (j + 12)) & 0x10) : 0;
        const int q0 = (qs[j] & 0x0F) | h0, q1 = (qs[j] >> 4) | h1;
        if (has_min) {
          y[j] = static_cast<float>(q0) * half(x) + half(x + 2);
          y[j + 16] = static_cast<float>(q1) * half(x) + half(x + 2);
        } else {
          const int offset = fifth ? 16 : 8;
          y[j] = static_cast<float>(q0 - offset) * half(x);
          y[j + 16] = static_cast<float>(q1 - offset) * half(x);
        }
      }
      return;
    }
    case kQ4_K: case kQ5_K: {
      const float d = half(x), dmin = half(x + 2);
      const uint8_t* scales = x + 4;
      const uint8_t* qh = x + 16;
      const uint8_t* q = x + 16 + (type == kQ5_K ? 32 : 0);
      int is = 0;
      uint8_t u1 = 1, u2 = 2;
      for (int j = 0; j < 256; j += 64) {
        int sc = 0, m = 0;
        scale_min(is + 0, scales, &sc, &m);
        const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
        scale_min(is + 1, scales, &sc, &m);
        const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
        for (int l = 0; l < 32; ++l) {
          const int high = type == kQ5_K && (qh[l] & u1) ? 16 : 0;
          *y++ = d1 * static_cast<float>((q[l] & 0xF) + high) - m1;
        }
        for (int l = 0; l < 32; ++l) {
          const int high = type == kQ5_K && (qh[l] & u2) ? 16 : 0;
          *y++ = d2 * static_cast<float>((q[l] >> 4) + high) - m2;
        }
        q += 32;
        is += 2;
        u1 = static_cast<uint8_t>(u1 << 2);
        u2 = static_cast<uint8_t>(u2 << 2);
      }
      return;
    }
    case kQ6_K: {
      const float d = half(x + 208);
      const uint8_t* ql = x;
      const uint8_t* qh = x + 128;
      const auto* sc = reinterpret_cast<const int8_t*>(x + 192);
      for (int n = 0; n < 256; n += 128) {
        for (int l = 0; l < 32; ++l) {
          const int is = l / 16;
          const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
          const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
          const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
          const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
          y[l + 0] = d * static_cast<float>(sc[is + 0]) * static_cast<float>(q1);
          y[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
          y[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
          y[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
      }
      return;
    }
    case kQ2_K: {  // ggml's dequantize_row_q2_K
      const float d = half(x + 80), dmin = half(x + 82);
      const uint8_t* q = x + 16;
      int is = 0;
      for (int n = 0; n < 256; n += 128) {
        int shift = 0;
        for (int j = 0; j < 4; ++j) {
          for (int part = 0; part < 2; ++part) {
            const uint8_t sc = x[is++];
            const float dl = d * static_cast<float>(sc & 0xF), ml = dmin * static_cast<float>(sc >> 4);
            for (int l = 0; l < 16; ++l) *y++ = dl * static_cast<float>((q[l + 16 * part] >> shift) & 3) - ml;
          }
          shift += 2;
        }
        q += 32;
      }
      return;
    }
    case kQ3_K: {  // ggml's dequantize_row_q3_K, its scales unpacked as it does
      const uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
      uint32_t aux[4];
      std::memcpy(aux, x + 96, 12);
      const uint32_t tmp = aux[2];
      aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
      aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
      aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
      aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
      int8_t scales[16];
      std::memcpy(scales, aux, 16);
      const float d_all = half(x + 108);
      const uint8_t* q = x + 32;
      const uint8_t* hm = x;
      uint8_t m = 1;
      int is = 0;
      for (int n = 0; n < 256; n += 128) {
        int shift = 0;
        for (int j = 0; j < 4; ++j) {
          for (int part = 0; part < 2; ++part) {
            const float dl = d_all * static_cast<float>(scales[is++] - 32);
            for (int l = 16 * part; l < 16 * part + 16; ++l)
              *y++ = dl * static_cast<float>(static_cast<int8_t>((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
          }
          shift += 2;
          m = static_cast<uint8_t>(m << 1);
        }
        q += 32;
      }
      return;
    }
    default: CHECK(false);
  }
}

bool same_bits(const float* a, const float* b, int64_t n) { return std::memcmp(a, b, static_cast<size_t>(n) * 4) == 0; }

void check_type(std::mt19937& rng, const Kernels& kernels, int64_t type) {
  const int64_t unit = unit_weights(type);
  for (int64_t cols : {unit, 2 * unit, 3 * unit}) {
    for (int64_t rows : {1, 3, 4, 5, 8, 9}) {  // tiles of kTileN = 4 weight rows: short, whole, one over, two
      const std::vector<uint8_t> w = random_rows(rng, type, rows, cols);
      const int64_t row_bytes = row_bytes_of(type, cols);
      // Each weight exactly as the scalar reference gives it.
      std::vector<float> weights(static_cast<size_t>(rows * cols)), expected(weights.size());
      for (int64_t r = 0; r < rows; ++r) {
        kernels.dequantise_row(w.data() + r * row_bytes, type, cols / kBlock, &weights[static_cast<size_t>(r * cols)]);
        for (int64_t u = 0; u < cols / unit; ++u)
          reference_unit(type, w.data() + r * row_bytes + u * unit_bytes(type), &expected[static_cast<size_t>(r * cols + u * unit)]);
      }
      CHECK(same_bits(weights.data(), expected.data(), rows * cols));
      // Each input row's products the same bits alone and in batches of every size around kTileM and kChunkM: the
      // fused path (1 and 2 rows), whole and partial register tiles, and one, two and three chunks of rows.
      const int64_t m_most = 2 * kChunkM + 1;
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<float> x(static_cast<size_t>(m_most * cols));
      for (float& value : x) value = normal(rng);
      std::vector<float> alone(static_cast<size_t>(m_most * rows));
      auto product = [&](const Kernels& family, const float* input, int64_t m, float* y) {  // on a stale buffer
        for (int64_t n0 = 0; n0 < rows; n0 += kTileN)
          family.tile_of_rows(input, m, cols, w.data(), type, row_bytes, n0, std::min(kTileN, rows - n0), y, rows, n0,
                              tile_buffer(m, cols));
      };
      for (int64_t i = 0; i < m_most; ++i)
        product(kernels, &x[static_cast<size_t>(i * cols)], 1, &alone[static_cast<size_t>(i * rows)]);
      // Register tiles of 3 (AVX2) and of 8 and 4 (AVX-512) rows, whole and cut, inside and across chunks.
      for (int64_t m : {int64_t{2}, kTileM, kTileM + 1, kTileM + 2, 2 * kTileM, int64_t{7}, int64_t{8}, int64_t{9},
                        int64_t{12}, int64_t{13}, int64_t{15}, kChunkM - 1, kChunkM, kChunkM + 1, kChunkM + kTileM,
                        kChunkM + kTileM + 1, kChunkM + 12, 2 * kChunkM, m_most}) {
        std::vector<float> together(static_cast<size_t>(m * rows));
        product(kernels, x.data(), m, together.data());
        CHECK(same_bits(together.data(), alone.data(), m * rows));
      }
      std::vector<float> avx2_alone(alone.size());
      for (int64_t i = 0; i < m_most; ++i)
        product(*kernels_of(kAvx2Kernels), &x[static_cast<size_t>(i * cols)], 1,
                &avx2_alone[static_cast<size_t>(i * rows)]);
      CHECK(same_bits(alone.data(), avx2_alone.data(), m_most * rows));
    }
  }
}

int run() {
  for (int64_t family : {kAvx2Kernels, kAvx512Kernels}) {
    const Kernels* kernels = kernels_of(family);
    if (kernels == nullptr) {
      std::printf("kernel family %lld skipped: this CPU cannot run it\n", static_cast<long long>(family));
      continue;
    }
    std::mt19937 rng(11);
    for (int64_t type : {kF32, kF16, kBF16, kQ4_0, kQ4_1, kQ5_0, kQ5_1, kQ8_0, kQ2_K, kQ3_K, kQ4_K, kQ5_K, kQ6_K})
      check_type(rng, *kernels, type);
    std::printf("kernel family %lld checked\n", static_cast<long long>(family));
  }
  CHECK(row_bytes_of(kQ4_K, 576) == 0 && row_bytes_of(kQ5_0, 576) == 18 * 22 && !served(9) && !served(15));
  if (palaver_test::failures) {
    std::fprintf(stderr, "%d block checks failed\n", palaver_test::failures);
    return 1;
  }
  std::printf("all block checks passed\n");
  return 0;
}

}  // namespace blocks_test
