// y = x @ W.T where W is stored as GGUF blocks (any type blocks.h serves) and x stays float32: the torch operator
// for the transformers path. The blocks and their dot products are in blocks.h, shared with the native step, and the
// work runs on the process's one thread pool, which palaver_native.so holds (this library links against it).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include "blocks.h"
#include "native_step.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <vector>

namespace {

using namespace palaver;

// The process's kernel family for these operators: the widest this CPU runs until set_kernels says otherwise.
std::atomic<const Kernels*> process_kernels{kernels_of(kWidestKernels)};

void check_blocks(const at::Tensor& blocks, int64_t type, int64_t in_features) {
  TORCH_CHECK(served(type), "palaver: unsupported GGUF type ", type);
  TORCH_CHECK(blocks.scalar_type() == at::kByte && blocks.dim() == 2, "palaver: blocks must be uint8 [out, bytes]");
  TORCH_CHECK(row_bytes_of(type, in_features) > 0 && blocks.size(1) == row_bytes_of(type, in_features),
              "palaver: blocks do not hold rows of ", in_features, " weights");
}

at::Tensor gguf_linear(const at::Tensor& x, const at::Tensor& blocks, int64_t type, int64_t in_features) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && x.size(-1) == in_features,
              "gguf_linear: x must be float32 with ", in_features, " features");
  check_blocks(blocks, type, in_features);
  const at::Tensor input = x.reshape({-1, in_features}).contiguous();
  const at::Tensor weight = blocks.contiguous();
  const int64_t m_total = input.size(0), n_total = weight.size(0), k = in_features;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape.back() = n_total;
  at::Tensor out = at::empty({m_total, n_total}, x.options());
  const float* xp = input.data_ptr<float>();
  const uint8_t* wp = weight.data_ptr<uint8_t>();
  float* yp = out.data_ptr<float>();
  const int64_t row_bytes = weight.size(1);
  const int64_t tiles = (n_total + kTileN - 1) / kTileN;
  const Kernels& kernels = *process_kernels.load();
  run_chunks(tiles, tiles_per_task(k, m_total), [&](int64_t begin, int64_t end) {
    float* buffer = tile_buffer(m_total, k);
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t n0 = tile * kTileN, tile_n = std::min(kTileN, n_total - n0);
      kernels.tile_of_rows(xp, m_total, k, wp, type, row_bytes, n0, tile_n, yp, n_total, n0, buffer);
    }
  });
  return out.view(shape);
}

at::Tensor gguf_dequantise(const at::Tensor& blocks, int64_t type, int64_t in_features) {
  check_blocks(blocks, type, in_features);
  const int64_t per_row = in_features / kBlock;
  const at::Tensor weight = blocks.contiguous();
  at::Tensor out = at::empty({weight.size(0), in_features}, blocks.options().dtype(at::kFloat));
  const uint8_t* wp = weight.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  const int64_t row_bytes = weight.size(1);
  const Kernels& kernels = *process_kernels.load();
  run_chunks(weight.size(0), 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n)
      kernels.dequantise_row(wp + n * row_bytes, type, per_row, op + n * in_features);
  });
  return out;
}

void set_threads(int64_t threads) { pv_set_threads(threads); }  // the process's pool: the native step's too

// Make the operators' kernels a family's (0: the widest this CPU runs) and return the family in use.
int64_t set_kernels(int64_t family) {
  const Kernels* kernels = family >= 0 ? kernels_of(family) : nullptr;
  TORCH_CHECK(kernels != nullptr, "palaver: this CPU cannot run kernel family ", family);
  process_kernels.store(kernels);
  return kernels->family;
}

}  // namespace

TORCH_LIBRARY(palaver, m) {
  m.def("gguf_linear(Tensor x, Tensor blocks, int type, int in_features) -> Tensor");
  m.def("gguf_dequantise(Tensor blocks, int type, int in_features) -> Tensor");
  m.def("set_threads(int threads) -> ()", &set_threads);
  m.def("set_kernels(int family) -> int", &set_kernels);
}

TORCH_LIBRARY_IMPL(palaver, CPU, m) {
  m.impl("gguf_linear", &gguf_linear);
  m.impl("gguf_dequantise", &gguf_dequantise);
}
