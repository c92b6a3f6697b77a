// GGUF blocks read in float32, and the dot products over them: one place for both libraries. The block types and
// the tiles are in block_format.h; each family of kernels is in its own file, AVX2 (every CPU the native step runs
// on) in blocks_avx2.h and AVX-512 in blocks_avx512.h. A caller picks a family once, at load, by the CPU's flags at
// run time (kernels_of), and calls through it. Both families give every dot product the same bits.
#pragma once

#include "block_format.h"
#include "blocks_avx2.h"
#include "blocks_avx512.h"
#include "int8_dots.h"

#include <cstdint>

namespace palaver {

// The kernel families, by the numbers the C interface uses (native_step.h's pv_model_kernels).
enum KernelFamily : int64_t { kWidestKernels = 0, kAvx2Kernels = 1, kAvx512Kernels = 2 };

struct Kernels {
  int64_t family;
  // The dot products of m input rows of k floats with the tile_n (at most kTileN) weight rows from row n0 of a
  // matrix whose rows are row_bytes apart, written to y[m][n_out] from column y_col; buffer is tile_buffer(m, k).
  void (*tile_of_rows)(const float* x, int64_t m, int64_t k, const uint8_t* weights, int64_t type, int64_t row_bytes,
                       int64_t n0, int64_t tile_n, float* y, int64_t n_out, int64_t y_col, float* buffer);
  // One row of blocks dequantised into out[0 .. blocks * 32).
  void (*dequantise_row)(const uint8_t* row, int64_t type, int64_t blocks, float* out);
};

// Whether this CPU (and its operating system, which must save the wide registers) runs a family.
inline bool cpu_runs(int64_t family) {
  __builtin_cpu_init();
  if (family == kAvx2Kernels) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (family == kAvx512Kernels)
    return cpu_runs(kAvx2Kernels) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  return false;
}

// A family's kernels (kWidestKernels: the widest this CPU runs), or null for one this CPU cannot run.
inline const Kernels* kernels_of(int64_t family) {
  static constexpr Kernels kAvx2{kAvx2Kernels, avx2::tile_of_rows, avx2::dequantise_row};
  static constexpr Kernels kAvx512{kAvx512Kernels, avx512::tile_of_rows, avx512::dequantise_row};
  if (family == kWidestKernels) family = cpu_runs(kAvx512Kernels) ? kAvx512Kernels : kAvx2Kernels;
  if (!cpu_runs(family)) return nullptr;
  return family == kAvx512Kernels ? &kAvx512 : &kAvx2;
}

}  // namespace palaver
