// y = x @ W.T where W is stored as GGUF blocks (Q4_0, Q4_1, Q8_0) and x stays float32.
//
// Each weight is dequantised exactly as gguf-py does (q * d, (q - 8) * d, q * d + m, all exact or rounded
// once in float32), so the model's arithmetic is the float32 model's, with no new quantisation error.
// Every dot product uses one 8-lane accumulator over k = lane, lane + 8, ... in order and a fixed
// horizontal sum: a row's result does not depend on which other rows share the call (batch invariance).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kBlock = 32;  // weights per GGUF block, for every type served here
enum QuantType : int64_t { kQ4_0 = 2, kQ4_1 = 3, kQ8_0 = 8 };  // ggml's type numbers

int64_t block_bytes(int64_t type) {
  switch (type) {
    case kQ4_0: return 2 + 16;
    case kQ4_1: return 2 + 2 + 16;
    case kQ8_0: return 2 + 32;
    default: TORCH_CHECK(false, "gguf_linear: unsupported GGUF type ", type);
  }
}

inline float half_to_float(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return _cvtsh_ss(bits);
}

inline float horizontal_sum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_shuffle_ps(sum, sum, 1));
  return _mm_cvtss_f32(sum);
}

constexpr int64_t kTileN = 4;   // weight rows dequantised together and reused across input rows
constexpr int64_t kTileM = 3;   // input rows per register tile: 12 accumulators, 3 inputs, 1 weight
constexpr int64_t kChunkM = 64; // input rows kept hot in cache while a tile of weights is reused

// Dot products of rows [m0, m0 + rows) of x with the tile's weight rows, written to y.
template <int Rows>
void tile_dot(const float* x, int64_t k, const float* weights, int64_t tile_n, float* y, int64_t n_out) {
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
  // Constant bounds here keep the accumulators in registers; the tile's edge is cut when copying out.
  float sums[Rows][kTileN];
  for (int r = 0; r < Rows; ++r)
    for (int n = 0; n < kTileN; ++n) sums[r][n] = horizontal_sum(acc[r][n]);
  for (int r = 0; r < Rows; ++r)
    for (int n = 0; n < tile_n; ++n) y[r * n_out + n] = sums[r][n];
}

// One block's 32 weights in four registers, dequantised exactly as dequantise_row does.
template <int64_t Type>
inline void block_weights(const uint8_t* block, __m256 w[4]) {
  const __m256 d = _mm256_set1_ps(half_to_float(block));
  if constexpr (Type == kQ8_0) {
    for (int j = 0; j < 4; ++j) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + 8 * j));
      w[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)), d);
    }
  } else {
    const __m128i packed = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + (Type == kQ4_1 ? 4 : 2)));
    const __m128i mask = _mm_set1_epi8(0x0F);
    const __m128i low = _mm_and_si128(packed, mask);
    const __m128i high = _mm_and_si128(_mm_srli_epi16(packed, 4), mask);
    const __m128i halves[4] = {low, _mm_srli_si128(low, 8), high, _mm_srli_si128(high, 8)};
    if constexpr (Type == kQ4_1) {
      const __m256 m = _mm256_set1_ps(half_to_float(block + 2));
      for (int j = 0; j < 4; ++j) w[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(halves[j])), d, m);
    } else {
      const __m256i eight = _mm256_set1_epi32(8);
      for (int j = 0; j < 4; ++j)
        w[j] = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(halves[j]), eight)), d);
    }
  }
}

// Dequantise one row of blocks into out[0 .. blocks * 32).
template <int64_t Type>
void dequantise_row_of(const uint8_t* row, int64_t blocks, float* out) {
  constexpr int64_t stride = Type == kQ8_0 ? 34 : Type == kQ4_1 ? 20 : 18;
  for (int64_t b = 0; b < blocks; ++b) {
    __m256 w[4];
    block_weights<Type>(row + b * stride, w);
    for (int j = 0; j < 4; ++j) _mm256_storeu_ps(out + b * kBlock + 8 * j, w[j]);
  }
}

void dequantise_row(const uint8_t* row, int64_t type, int64_t blocks, float* out) {
  if (type == kQ4_0) dequantise_row_of<kQ4_0>(row, blocks, out);
  else if (type == kQ4_1) dequantise_row_of<kQ4_1>(row, blocks, out);
  else dequantise_row_of<kQ8_0>(row, blocks, out);
}

// Few input rows: dequantise in registers as the weights stream past, with the same accumulation as tile_dot.
template <int64_t Type, int Rows>
void fused_dot(const float* x, int64_t k, const uint8_t* const rows[kTileN], int64_t tile_n, float* y, int64_t n_out) {
  constexpr int64_t stride = Type == kQ8_0 ? 34 : Type == kQ4_1 ? 20 : 18;
  __m256 acc[Rows][kTileN];
  for (int r = 0; r < Rows; ++r)
    for (int n = 0; n < kTileN; ++n) acc[r][n] = _mm256_setzero_ps();
  for (int64_t b = 0; b < k / kBlock; ++b) {
    for (int n = 0; n < kTileN; ++n) {
      __m256 w[4];
      block_weights<Type>(rows[n] + b * stride, w);
      for (int j = 0; j < 4; ++j)
        for (int r = 0; r < Rows; ++r)
          acc[r][n] = _mm256_fmadd_ps(w[j], _mm256_loadu_ps(x + r * k + b * kBlock + 8 * j), acc[r][n]);
    }
  }
  float sums[Rows][kTileN];
  for (int r = 0; r < Rows; ++r)
    for (int n = 0; n < kTileN; ++n) sums[r][n] = horizontal_sum(acc[r][n]);
  for (int r = 0; r < Rows; ++r)
    for (int n = 0; n < tile_n; ++n) y[r * n_out + n] = sums[r][n];
}

template <int Rows>
void fused_dot_any(int64_t type, const float* x, int64_t k, const uint8_t* const rows[kTileN], int64_t tile_n,
                   float* y, int64_t n_out) {
  if (type == kQ4_0) fused_dot<kQ4_0, Rows>(x, k, rows, tile_n, y, n_out);
  else if (type == kQ4_1) fused_dot<kQ4_1, Rows>(x, k, rows, tile_n, y, n_out);
  else fused_dot<kQ8_0, Rows>(x, k, rows, tile_n, y, n_out);
}

// Work sharing that never waits for a thread the OS has not scheduled. The caller claims chunks itself; helpers
// that wake in time claim the rest. With busy neighbours on the same cores, a barrier-based pool (OpenMP's)
// stalls every call until each of its threads gets a time slice; here a late helper simply finds no work left.
class ChunkPool {
 public:
  using Body = std::function<void(int64_t, int64_t)>;

  static ChunkPool& instance() {
    static ChunkPool* pool = new ChunkPool;  // never destroyed: detached helpers wait on it until exit
    return *pool;
  }

  void run(int64_t total, int64_t chunk, const Body& body) {
    const int64_t chunks = (total + chunk - 1) / chunk;
    const int64_t helpers = std::min<int64_t>(threads_.load() - 1, chunks - 1);
    if (helpers <= 0) {
      body(0, total);
      return;
    }
    std::lock_guard<std::mutex> one_call(call_mutex_);  // calls from several threads take turns
    ensure_helpers(helpers);
    const Job job{&body, total, chunk, chunks};
    uint64_t generation;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // Close the old job's counter before opening the new one: a helper late from the old one fails its claim.
      generation = ++generation_;
      job_ = job;
      done_.store(0, std::memory_order_relaxed);
      counter_.store(pack(generation, 0), std::memory_order_release);
      published_.store(generation, std::memory_order_release);
    }
    if (sleepers_.load(std::memory_order_acquire) > 0) wake_.notify_all();
    work(generation, job);
    while (done_.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
  }

  void set_threads(int64_t threads) { threads_.store(std::max<int64_t>(1, threads)); }

 private:
  struct Job {
    const Body* body;
    int64_t total, chunk, chunks;
  };
  static constexpr uint64_t kIndexMask = 0xFFFFFFFFull;
  static uint64_t pack(uint64_t generation, uint64_t index) { return (generation << 32) | index; }

  void ensure_helpers(int64_t count) {
    while (static_cast<int64_t>(helpers_) < count) {
      std::thread([this] { helper(); }).detach();
      ++helpers_;
    }
  }

  // Claim and run chunks of this generation's job until none are left.
  void work(uint64_t generation, const Job& job) {
    uint64_t seen = counter_.load(std::memory_order_acquire);
    while ((seen >> 32) == generation && static_cast<int64_t>(seen & kIndexMask) < job.chunks) {
      if (!counter_.compare_exchange_weak(seen, seen + 1, std::memory_order_acq_rel)) continue;
      const int64_t begin = static_cast<int64_t>(seen & kIndexMask) * job.chunk;
      (*job.body)(begin, std::min(job.total, begin + job.chunk));
      done_.fetch_add(1, std::memory_order_acq_rel);
      seen = counter_.load(std::memory_order_acquire);
    }
  }

  void helper() {
    uint64_t last = 0;
    for (;;) {
      // A decode step calls the kernel every few dozen microseconds: watch for the next call a little while,
      // yielding the core to anyone who wants it, before sleeping until woken.
      for (int spin = 0; spin < kSpins && published_.load(std::memory_order_acquire) == last; ++spin)
        std::this_thread::yield();
      uint64_t generation;
      Job job;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        if (generation_ == last) {
          sleepers_.fetch_add(1, std::memory_order_acq_rel);
          wake_.wait(lock, [&] { return generation_ != last; });
          sleepers_.fetch_sub(1, std::memory_order_acq_rel);
        }
        generation = last = generation_;
        job = job_;
      }
      work(generation, job);
    }
  }

  std::mutex call_mutex_, mutex_;
  std::condition_variable wake_;
  size_t helpers_ = 0;
  std::atomic<int64_t> threads_{static_cast<int64_t>(std::max(1u, std::thread::hardware_concurrency()))};
  static constexpr int kSpins = 2000;  // about a millisecond of yields
  std::atomic<uint64_t> counter_{0}, published_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<int64_t> done_{0};
  uint64_t generation_ = 0;
  Job job_{nullptr, 0, 1, 0};
};

at::Tensor gguf_linear(const at::Tensor& x, const at::Tensor& blocks, int64_t type, int64_t in_features) {
  TORCH_CHECK(x.scalar_type() == at::kFloat, "gguf_linear: x must be float32");
  TORCH_CHECK(blocks.scalar_type() == at::kByte && blocks.dim() == 2, "gguf_linear: blocks must be uint8 [out, bytes]");
  TORCH_CHECK(in_features % kBlock == 0 && x.size(-1) == in_features, "gguf_linear: bad in_features");
  const int64_t per_row = in_features / kBlock;
  TORCH_CHECK(blocks.size(1) == per_row * block_bytes(type), "gguf_linear: blocks do not match in_features");
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
  // Enough tiles per task that a small layer is not split into more tasks than it is worth.
  const int64_t grain = std::max<int64_t>(1, 16384 / (k * std::max<int64_t>(1, std::min<int64_t>(m_total, 8))));
  ChunkPool::instance().run(tiles, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer(kTileN * k, 0.0f);
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t n0 = tile * kTileN, tile_n = std::min(kTileN, n_total - n0);
      if (m_total < kTileM) {  // decoding one or two rows: no buffer, weights go straight to registers
        const uint8_t* rows[kTileN];
        for (int64_t n = 0; n < kTileN; ++n) rows[n] = wp + (n0 + std::min(n, tile_n - 1)) * row_bytes;
        for (int64_t m = 0; m < m_total; ++m)
          fused_dot_any<1>(type, xp + m * k, k, rows, tile_n, yp + m * n_total + n0, n_total);
        continue;
      }
      for (int64_t n = 0; n < tile_n; ++n) dequantise_row(wp + (n0 + n) * row_bytes, type, per_row, &buffer[n * k]);
      for (int64_t n = tile_n; n < kTileN; ++n) std::fill_n(&buffer[n * k], k, 0.0f);
      for (int64_t chunk = 0; chunk < m_total; chunk += kChunkM) {
        const int64_t chunk_end = std::min(m_total, chunk + kChunkM);
        int64_t m = chunk;
        for (; m + kTileM <= chunk_end; m += kTileM)
          tile_dot<kTileM>(xp + m * k, k, buffer.data(), tile_n, yp + m * n_total + n0, n_total);
        for (; m < chunk_end; ++m) tile_dot<1>(xp + m * k, k, buffer.data(), tile_n, yp + m * n_total + n0, n_total);
      }
    }
  });
  return out.view(shape);
}

at::Tensor gguf_dequantise(const at::Tensor& blocks, int64_t type, int64_t in_features) {
  TORCH_CHECK(blocks.scalar_type() == at::kByte && blocks.dim() == 2, "gguf_dequantise: blocks must be uint8 [out, bytes]");
  const int64_t per_row = in_features / kBlock;
  TORCH_CHECK(in_features % kBlock == 0 && blocks.size(1) == per_row * block_bytes(type), "gguf_dequantise: bad shape");
  const at::Tensor weight = blocks.contiguous();
  at::Tensor out = at::empty({weight.size(0), in_features}, blocks.options().dtype(at::kFloat));
  const uint8_t* wp = weight.data_ptr<uint8_t>();
  float* op = out.data_ptr<float>();
  const int64_t row_bytes = weight.size(1);
  ChunkPool::instance().run(weight.size(0), 64, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) dequantise_row(wp + n * row_bytes, type, per_row, op + n * in_features);
  });
  return out;
}

void set_threads(int64_t threads) { ChunkPool::instance().set_threads(threads); }

}  // namespace

TORCH_LIBRARY(palaver, m) {
  m.def("gguf_linear(Tensor x, Tensor blocks, int type, int in_features) -> Tensor");
  m.def("gguf_dequantise(Tensor blocks, int type, int in_features) -> Tensor");
  m.def("set_threads(int threads) -> ()", &set_threads);
}

TORCH_LIBRARY_IMPL(palaver, CPU, m) {
  m.impl("gguf_linear", &gguf_linear);
  m.impl("gguf_dequantise", &gguf_dequantise);
}
