// The whole forward pass of a Llama-family model (Llama; Qwen2 with its Q/K/V biases; Qwen3 with its Q/K norms;
// Gemma 3 with its scaled embeddings, four norms a layer, GELU and sliding-window layers) in one native call per
// step: embedding rows, RMSNorm, the joined Q/K/V projection, biases or head norms, rotary, a paged KV cache that
// each row owns, grouped-query attention over each row's own history, the output projection, the gated MLP,
// residuals, the final norm and the head.
//
// A step takes any mix of rows: one new token for a row that is decoding, a chunk of its prompt for a row that is
// prefilling. Every token's arithmetic is its own, in a fixed order: a row's result is the same bits alone and in
// any batch, whatever its neighbours' lengths (batch invariance). Python calls this through ctypes, which lets
// go of the interpreter lock for the whole step.
#include "blocks.h"
#include "chunk_pool.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <unordered_map>
#include <vector>

namespace palaver {
namespace {

struct Matrix {
  const uint8_t* data = nullptr;
  int64_t type = -1, rows = 0, cols = 0, row_bytes = 0;
};

struct Layer {
  const float* attn_norm = nullptr;
  const float* ffn_norm = nullptr;
  const float* q_bias = nullptr;  // Qwen2's Q, K and V biases: all three, or none
  const float* k_bias = nullptr;
  const float* v_bias = nullptr;
  const float* q_norm = nullptr;  // Qwen3's RMSNorm of each query and key head before rotary: both, or neither
  const float* k_norm = nullptr;
  const float* post_attn_norm = nullptr;  // Gemma 3's norms of the attention's and the MLP's outputs: both, or neither
  const float* post_ffn_norm = nullptr;
  bool sliding = false;  // Gemma 3: attends over the last window positions, with the local rotary frequencies
  Matrix q, k, v, o, gate, up, down;
};

enum Part : int64_t {
  kEmbed = 0, kHead = 1, kOutNorm = 2, kRopeFreqs = 3,
  kAttnNorm = 10, kFfnNorm = 11, kQ = 12, kK = 13, kV = 14, kO = 15, kGate = 16, kUp = 17, kDown = 18,
  kQBias = 19, kKBias = 20, kVBias = 21, kQNorm = 22, kKNorm = 23, kPostAttnNorm = 24, kPostFfnNorm = 25,
};

// A segment of a joined projection: one matrix's rows, written at column offset of the output.
struct Segment {
  const Matrix* matrix;
  int64_t column;
};

struct Model {
  int64_t vocab = 0, hidden = 0, ffn = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0;
  float eps = 1e-5f;
  bool adjacent_pairs = true;  // rotary pairs (2i, 2i+1), as GGUF stores Llama's Q and K; else (i, i + d/2)
  bool scaled = false;         // whether Llama 3's or LongRoPE's frequency factors have set inv_freq
  float rotary_scale = 1.0f;   // LongRoPE's attention factor, which multiplies every cosine and sine
  bool gelu = false;           // Gemma 3's MLP: GELU (tanh) of the gate, else SiLU
  float embed_scale = 1.0f;    // Gemma 3 scales each embedding row by sqrt(hidden)
  float attn_scale = 1.0f;     // what scores are multiplied by: 1 / sqrt(head_dim) unless the model says otherwise
  int64_t window = 0;          // the sliding layers' window, in positions (0: no layer slides)
  Matrix embed, head;
  const float* out_norm = nullptr;
  std::vector<Layer> blocks;
  std::vector<float> inv_freq, local_inv_freq;  // the sliding layers' frequencies, where there are any
  std::mutex step_mutex;  // one step at a time: the workspace below is the model's
  std::vector<float> x, xn, qkv, attn, gate_up, act, out_rows, rotary, local_rotary;
};

// Sequences' keys and values, in pages of page_tokens positions. A page holds, for every layer, the keys then
// the values of each key/value head: [layer][k|v][kv_head][page_tokens][head_dim], as float16.
struct Cache {
  const Model* model = nullptr;
  int64_t page_tokens = 0, max_pages = 0, used_pages = 0, next_id = 1;
  int64_t page_halves = 0;  // float16 values in one page
  std::unordered_map<int64_t, std::vector<std::unique_ptr<uint16_t[]>>> pages;
  std::unordered_map<int64_t, int64_t> lengths;
  std::mutex mutex;  // sequences are made and freed from the caller's thread while no step runs, but be safe
};

inline uint16_t* kv_at(const Cache& cache, uint16_t* page, int64_t layer, int64_t which, int64_t kv_head,
                       int64_t slot) {
  const Model& m = *cache.model;
  return page + (((layer * 2 + which) * m.kv_heads + kv_head) * cache.page_tokens + slot) * m.head_dim;
}

void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  // As transformers' LlamaRMSNorm: the mean of squares in float32, then x * rsqrt(mean + eps) * weight.
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(sum / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * scale);
}

// y[m][n_out] = x[m][k] @ (the segments' rows)^T, each segment's rows written from its column on.
void project(const float* x, int64_t m, int64_t k, const std::vector<Segment>& segments, float* y, int64_t n_out) {
  std::vector<std::pair<int64_t, int64_t>> tiles;  // (segment, first row)
  for (int64_t s = 0; s < static_cast<int64_t>(segments.size()); ++s)
    for (int64_t n0 = 0; n0 < segments[s].matrix->rows; n0 += kTileN) tiles.emplace_back(s, n0);
  const int64_t grain = std::max<int64_t>(1, 16384 / (k * std::max<int64_t>(1, std::min<int64_t>(m, 8))));
  ChunkPool::instance().run(static_cast<int64_t>(tiles.size()), grain, [&](int64_t begin, int64_t end) {
    std::vector<float> buffer(m < kTileM ? 0 : kTileN * k, 0.0f);
    for (int64_t t = begin; t < end; ++t) {
      const Segment& segment = segments[tiles[t].first];
      const Matrix& w = *segment.matrix;
      const int64_t n0 = tiles[t].second, tile_n = std::min(kTileN, w.rows - n0);
      tile_of_rows(x, m, k, w.data, w.type, w.row_bytes, n0, tile_n, y, n_out, segment.column + n0, buffer.data());
    }
  });
}

// The cosines and sines of one position's rotary angles, as transformers computes them: float32 angle, then cos/sin,
// then LongRoPE's attention factor where there is one.
void rotary_table(const std::vector<float>& inv_freq, float scale, int64_t pos, float* cos_sin) {
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  for (int64_t i = 0; i < half; ++i) {
    const float angle = static_cast<float>(pos) * inv_freq[i];
    cos_sin[i] = std::cos(angle) * scale;
    cos_sin[half + i] = std::sin(angle) * scale;
  }
}

// Rotate one head's vector by the angles in cos_sin: its first 2 * inv_freq.size() values (all of them, unless the
// model rotates part of each head, as Phi-4-mini does); the rest pass through.
void rotate(const Model& m, float* v, const float* cos_sin) {
  const int64_t half = static_cast<int64_t>(m.inv_freq.size());
  for (int64_t i = 0; i < half; ++i) {
    const float c = cos_sin[i], s = cos_sin[half + i];
    const int64_t a = m.adjacent_pairs ? 2 * i : i, b = m.adjacent_pairs ? 2 * i + 1 : i + half;
    const float x0 = v[a], x1 = v[b];
    v[a] = x0 * c - x1 * s;
    v[b] = x1 * c + x0 * s;
  }
}

// exp of 8 floats (Cephes' expf, as ggml vectorises it): each lane's result depends only on that lane's input.
inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-88.3762626647949f));
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i power = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(power));
}

// Sum each of 8 accumulators across its lanes, as ((l0+l1)+(l2+l3))+((l4+l5)+(l6+l7)); lane j of the result is
// accumulator j's sum, which depends on that accumulator alone.
inline __m256 sums_of(const __m256 (&acc)[8]) {
  const __m256 s0123 = _mm256_hadd_ps(_mm256_hadd_ps(acc[0], acc[1]), _mm256_hadd_ps(acc[2], acc[3]));
  const __m256 s4567 = _mm256_hadd_ps(_mm256_hadd_ps(acc[4], acc[5]), _mm256_hadd_ps(acc[6], acc[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

inline __m256 load_half(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// One query head of one token attending over positions [begin, length) of its sequence's pages. scores holds
// length - begin rounded up to 8 floats. Every position's score, weight and contribution is computed the same way
// wherever it falls, so the result depends only on the query and the row's own keys and values.
void attend(const Cache& cache, const std::vector<std::unique_ptr<uint16_t[]>>& pages, int64_t layer, int64_t kv_head,
            const float* q, int64_t begin, int64_t length, float* all_scores, float* out) {
  const Model& m = *cache.model;
  const int64_t d = m.head_dim, page_tokens = cache.page_tokens;
  const auto key = [&](int64_t t) {
    return kv_at(cache, pages[t / page_tokens].get(), layer, 0, kv_head, t % page_tokens);
  };
  float* scores = all_scores - begin;  // indexed by position: scores[begin] is the buffer's first float
  const __m256 scale = _mm256_set1_ps(m.attn_scale);
  // Scores, 8 positions at a time: 8 independent accumulators instead of one dependent chain per position.
  // Positions past the end re-read the first key of the block; their lanes are dropped.
  __m256 best8 = _mm256_set1_ps(-INFINITY);
  for (int64_t t0 = begin; t0 < length; t0 += 8) {
    const uint16_t* keys[8];
    for (int64_t j = 0; j < 8; ++j) keys[j] = key(t0 + j < length ? t0 + j : t0);
    __m256 acc[8];
    for (auto& a : acc) a = _mm256_setzero_ps();
    for (int64_t i = 0; i < d; i += 8) {
      const __m256 qv = _mm256_loadu_ps(q + i);
      for (int64_t j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(qv, load_half(keys[j] + i), acc[j]);
    }
    const __m256 block = _mm256_mul_ps(sums_of(acc), scale);
    _mm256_storeu_ps(scores + t0, block);
    const int64_t valid = std::min<int64_t>(8, length - t0);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)), lanes));
    best8 = _mm256_max_ps(best8, _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), block, keep));
  }
  float lanes_best[8];
  _mm256_storeu_ps(lanes_best, best8);
  float best = lanes_best[0];
  for (float value : lanes_best) best = std::max(best, value);
  // Softmax weights: exp(score - best), summed in 8 lanes (dropped lanes add zero).
  __m256 total8 = _mm256_setzero_ps();
  for (int64_t t0 = begin; t0 < length; t0 += 8) {
    const __m256 weight = exp8(_mm256_sub_ps(_mm256_loadu_ps(scores + t0), _mm256_set1_ps(best)));
    const int64_t valid = std::min<int64_t>(8, length - t0);
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(valid)), lanes));
    const __m256 kept = _mm256_and_ps(weight, keep);
    _mm256_storeu_ps(scores + t0, kept);
    total8 = _mm256_add_ps(total8, kept);
  }
  const __m256 total = _mm256_set1_ps(horizontal_sum(total8));
  // The weighted values, position by position, into one accumulator per 8 dimensions (64 at a time).
  for (int64_t d0 = 0; d0 < d; d0 += 64) {
    const int64_t width = std::min<int64_t>(64, d - d0) / 8;
    __m256 acc[8];
    for (auto& a : acc) a = _mm256_setzero_ps();
    for (int64_t t = begin; t < length; ++t) {
      const uint16_t* v = kv_at(cache, pages[t / page_tokens].get(), layer, 1, kv_head, t % page_tokens) + d0;
      const __m256 weight = _mm256_set1_ps(scores[t]);
      for (int64_t a = 0; a < width; ++a) acc[a] = _mm256_fmadd_ps(weight, load_half(v + 8 * a), acc[a]);
    }
    for (int64_t a = 0; a < width; ++a) _mm256_storeu_ps(out + d0 + 8 * a, _mm256_div_ps(acc[a], total));
  }
}

// Rotary frequencies as transformers computes them: the exponent and the power in float32.
std::vector<float> frequencies(double base, int64_t head_dim) {
  std::vector<float> inv_freq;
  for (int64_t i = 0; i < head_dim / 2; ++i)
    inv_freq.push_back(
        1.0f / std::pow(static_cast<float>(base), static_cast<float>(2 * i) / static_cast<float>(head_dim)));
  return inv_freq;
}

inline float silu(float x) { return x / (1.0f + std::exp(-x)); }

// As torch's gelu(approximate="tanh"): 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))).
inline float gelu_tanh(float x) {
  const float inner = 0.7978845608028654f * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + std::tanh(inner));
}

bool valid(const Matrix& w, int64_t rows, int64_t cols) {
  return w.data != nullptr && w.rows == rows && w.cols == cols;
}

}  // namespace
}  // namespace palaver

using palaver::Cache;
using palaver::Matrix;
using palaver::Model;

extern "C" {

// dims: vocab, hidden, ffn, layers, heads, kv_heads, head_dim. Returns null for dimensions the kernels cannot run,
// and for any a file could give that is not positive or past every real model's (the loader refuses those first):
// nothing is sized, and no division made, from a count that is not checked here.
void* pv_model_new(const int64_t* dims, double eps, double rope_base, int64_t adjacent_pairs) {
  constexpr int64_t kMost[7] = {int64_t{1} << 22, int64_t{1} << 17, int64_t{1} << 20, 4096, 4096, 4096, 4096};
  for (int i = 0; i < 7; ++i)
    if (dims[i] <= 0 || dims[i] > kMost[i]) return nullptr;
  auto model = std::make_unique<Model>();
  model->vocab = dims[0], model->hidden = dims[1], model->ffn = dims[2], model->layers = dims[3];
  model->heads = dims[4], model->kv_heads = dims[5], model->head_dim = dims[6];
  if (model->hidden % palaver::kBlock || model->ffn % palaver::kBlock || model->head_dim % 16 ||
      model->heads % model->kv_heads)
    return nullptr;
  model->eps = static_cast<float>(eps);
  model->adjacent_pairs = adjacent_pairs != 0;
  model->attn_scale = 1.0f / std::sqrt(static_cast<float>(model->head_dim));
  model->blocks.resize(model->layers);
  model->inv_freq = palaver::frequencies(rope_base, model->head_dim);
  return model.release();
}

// Rotate only the first rotary_dims of each head (2 <= rotary_dims <= head_dim, even), with frequencies of base; with
// factors (rotary_dims / 2 of them), LongRoPE's: 1 / (factor * base^(2i / rotary_dims)), as transformers computes
// them, and every cosine and sine multiplied by attention_factor. Call before the weights are set. Returns 0, or -1.
int64_t pv_model_rope(void* handle, int64_t rotary_dims, double base, const float* factors, double attention_factor) {
  auto& model = *static_cast<Model*>(handle);
  if (model.scaled || model.gelu || rotary_dims < 2 || rotary_dims > model.head_dim || rotary_dims % 2 ||
      base <= 0 || attention_factor <= 0)
    return -1;
  model.inv_freq.clear();
  for (int64_t i = 0; i < rotary_dims / 2; ++i) {
    const float power = std::pow(static_cast<float>(base), static_cast<float>(2 * i) / static_cast<float>(rotary_dims));
    model.inv_freq.push_back(factors != nullptr ? 1.0f / (factors[i] * power) : 1.0f / power);
  }
  model.rotary_scale = static_cast<float>(attention_factor);
  model.scaled = factors != nullptr;
  return 0;
}

// Make a model Gemma 3's: GELU, embeddings scaled by sqrt(hidden), scores by attn_scale, the global layers'
// frequencies divided by rope_factor, and sliding[i] layers that attend over the last window positions with
// frequencies of local_base. Call once, before the weights are set. Returns 0, or -1.
int64_t pv_model_gemma3(void* handle, double attn_scale, double rope_factor, int64_t window, double local_base,
                        const int8_t* sliding) {
  auto& model = *static_cast<Model*>(handle);
  if (model.gelu || model.scaled || attn_scale <= 0 || rope_factor < 1 || window < 0 || local_base <= 0) return -1;
  model.gelu = true;
  model.embed_scale = static_cast<float>(std::sqrt(static_cast<double>(model.hidden)));
  model.attn_scale = static_cast<float>(attn_scale);
  for (float& frequency : model.inv_freq) frequency /= static_cast<float>(rope_factor);
  model.window = window;
  model.local_inv_freq = palaver::frequencies(local_base, model.head_dim);
  for (int64_t i = 0; i < model.layers; ++i) model.blocks[i].sliding = window > 0 && sliding[i] != 0;
  return 0;
}

void pv_model_free(void* model) { delete static_cast<Model*>(model); }

// Point a part of the model (a layer's, or the model's own when layer is -1) at its weights. Returns 0, or -1.
int64_t pv_model_set(void* handle, int64_t layer, int64_t part, const void* data, int64_t type, int64_t rows,
                     int64_t cols) {
  auto& model = *static_cast<Model*>(handle);
  if (layer < -1 || layer >= model.layers || data == nullptr) return -1;
  const auto* bytes = static_cast<const uint8_t*>(data);
  if (part == palaver::kOutNorm || part == palaver::kAttnNorm || part == palaver::kFfnNorm ||
      part == palaver::kPostAttnNorm || part == palaver::kPostFfnNorm) {
    if (type != palaver::kF32 || rows != 1 || cols != model.hidden || (part != palaver::kOutNorm && layer < 0))
      return -1;
    const auto* floats = reinterpret_cast<const float*>(bytes);
    if (part == palaver::kOutNorm) model.out_norm = floats;
    else if (part == palaver::kAttnNorm) model.blocks[layer].attn_norm = floats;
    else if (part == palaver::kFfnNorm) model.blocks[layer].ffn_norm = floats;
    else if (part == palaver::kPostAttnNorm) model.blocks[layer].post_attn_norm = floats;
    else model.blocks[layer].post_ffn_norm = floats;
    return 0;
  }
  if (part == palaver::kRopeFreqs) {  // Llama 3's rotary scaling: each frequency divided by its factor, once
    const auto half = static_cast<int64_t>(model.inv_freq.size());
    if (layer != -1 || type != palaver::kF32 || rows != 1 || cols != half || model.scaled) return -1;
    const auto* factors = reinterpret_cast<const float*>(bytes);
    for (int64_t i = 0; i < cols; ++i) model.inv_freq[i] /= factors[i];
    model.scaled = true;
    return 0;
  }
  if (part == palaver::kQNorm || part == palaver::kKNorm) {
    if (layer < 0 || type != palaver::kF32 || rows != 1 || cols != model.head_dim) return -1;
    const auto* floats = reinterpret_cast<const float*>(bytes);
    (part == palaver::kQNorm ? model.blocks[layer].q_norm : model.blocks[layer].k_norm) = floats;
    return 0;
  }
  if (part == palaver::kQBias || part == palaver::kKBias || part == palaver::kVBias) {
    const int64_t width = (part == palaver::kQBias ? model.heads : model.kv_heads) * model.head_dim;
    if (layer < 0 || type != palaver::kF32 || rows != 1 || cols != width) return -1;
    const auto* floats = reinterpret_cast<const float*>(bytes);
    palaver::Layer& l = model.blocks[layer];
    (part == palaver::kQBias ? l.q_bias : part == palaver::kKBias ? l.k_bias : l.v_bias) = floats;
    return 0;
  }
  if (palaver::row_bytes_of(type, cols) == 0) return -1;
  Matrix w{bytes, type, rows, cols, palaver::row_bytes_of(type, cols)};
  switch (part) {
    case palaver::kEmbed: model.embed = w; return 0;
    case palaver::kHead: model.head = w; return 0;
    default: break;
  }
  if (layer < 0) return -1;
  palaver::Layer& l = model.blocks[layer];
  switch (part) {
    case palaver::kQ: l.q = w; return 0;
    case palaver::kK: l.k = w; return 0;
    case palaver::kV: l.v = w; return 0;
    case palaver::kO: l.o = w; return 0;
    case palaver::kGate: l.gate = w; return 0;
    case palaver::kUp: l.up = w; return 0;
    case palaver::kDown: l.down = w; return 0;
    default: return -1;
  }
}

// Check that every part is set with the model's shapes. Returns 0, or the layer (1-based, negative) found wanting.
int64_t pv_model_check(void* handle) {
  const auto& m = *static_cast<Model*>(handle);
  const int64_t kv = m.kv_heads * m.head_dim;
  if (!palaver::valid(m.embed, m.vocab, m.hidden) || !palaver::valid(m.head, m.vocab, m.hidden) || !m.out_norm)
    return -1000;
  for (int64_t i = 0; i < m.layers; ++i) {
    const palaver::Layer& l = m.blocks[i];
    const bool biases = l.q_bias != nullptr;
    const bool all_or_none = biases == (l.k_bias != nullptr) && biases == (l.v_bias != nullptr) &&
                             (l.q_norm != nullptr) == (l.k_norm != nullptr) &&
                             (l.post_attn_norm != nullptr) == (l.post_ffn_norm != nullptr);
    if (!all_or_none || !l.attn_norm || !l.ffn_norm || !palaver::valid(l.q, m.heads * m.head_dim, m.hidden) ||
        !palaver::valid(l.k, kv, m.hidden) || !palaver::valid(l.v, kv, m.hidden) ||
        !palaver::valid(l.o, m.hidden, m.heads * m.head_dim) || !palaver::valid(l.gate, m.ffn, m.hidden) ||
        !palaver::valid(l.up, m.ffn, m.hidden) || !palaver::valid(l.down, m.hidden, m.ffn))
      return -(i + 1);
  }
  return 0;
}

void* pv_cache_new(void* model, int64_t page_tokens, int64_t max_pages) {
  const auto& m = *static_cast<Model*>(model);
  if (page_tokens <= 0 || max_pages < 0) return nullptr;
  auto cache = std::make_unique<Cache>();
  cache->model = &m;
  cache->page_tokens = page_tokens;
  cache->max_pages = max_pages;
  cache->page_halves = m.layers * 2 * m.kv_heads * page_tokens * m.head_dim;
  return cache.release();
}

void pv_cache_free(void* cache) { delete static_cast<Cache*>(cache); }

int64_t pv_cache_page_bytes(void* cache) { return static_cast<Cache*>(cache)->page_halves * 2; }
int64_t pv_cache_used_pages(void* cache) { return static_cast<Cache*>(cache)->used_pages; }

int64_t pv_seq_new(void* handle) {
  auto& cache = *static_cast<Cache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  const int64_t id = cache.next_id++;
  cache.pages[id];
  cache.lengths[id] = 0;
  return id;
}

void pv_seq_free(void* handle, int64_t seq) {
  auto& cache = *static_cast<Cache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  auto found = cache.pages.find(seq);
  if (found == cache.pages.end()) return;
  cache.used_pages -= static_cast<int64_t>(found->second.size());
  cache.pages.erase(found);
  cache.lengths.erase(seq);
}

int64_t pv_seq_len(void* handle, int64_t seq) {
  auto& cache = *static_cast<Cache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  auto found = cache.lengths.find(seq);
  return found == cache.lengths.end() ? -1 : found->second;
}

namespace palaver {
namespace {

// Give seq pages for tokens more positions, all or none. Returns 0, -1 for bad arguments, -2 past the budget.
int64_t reserve_locked(Cache& cache, int64_t seq, int64_t tokens) {
  auto found = cache.pages.find(seq);
  if (found == cache.pages.end() || tokens < 0) return -1;
  auto& pages = found->second;
  const int64_t wanted = (cache.lengths[seq] + tokens + cache.page_tokens - 1) / cache.page_tokens;
  const int64_t more = wanted - static_cast<int64_t>(pages.size());
  if (more <= 0) return 0;
  if (cache.used_pages + more > cache.max_pages) return -2;
  std::vector<std::unique_ptr<uint16_t[]>> fresh;
  for (int64_t i = 0; i < more; ++i) {
    fresh.emplace_back(new (std::nothrow) uint16_t[cache.page_halves]);
    if (!fresh.back()) return -2;  // the fresh pages go back as this returns
  }
  for (auto& page : fresh) pages.push_back(std::move(page));
  cache.used_pages += more;
  return 0;
}

}  // namespace
}  // namespace palaver

// Make room for tokens more positions in seq. Returns 0, -1 for an unknown sequence, -2 past the page budget.
int64_t pv_seq_reserve(void* handle, int64_t seq, int64_t tokens) {
  auto& cache = *static_cast<Cache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  return palaver::reserve_locked(cache, seq, tokens);
}

// Forget positions past length, and give back the pages that the remaining positions do not need.
void pv_seq_truncate(void* handle, int64_t seq, int64_t length) {
  auto& cache = *static_cast<Cache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  auto found = cache.pages.find(seq);
  if (found == cache.pages.end() || length < 0 || length > cache.lengths[seq]) return;
  cache.lengths[seq] = length;
  const size_t keep = static_cast<size_t>((length + cache.page_tokens - 1) / cache.page_tokens);
  if (found->second.size() > keep) {
    cache.used_pages -= static_cast<int64_t>(found->second.size() - keep);
    found->second.resize(keep);
  }
}

// Copy the first tokens positions of src into dst, which must be empty. Returns 0, -1, or -2 past the budget.
int64_t pv_seq_copy(void* handle, int64_t dst, int64_t src, int64_t tokens) {
  auto& cache = *static_cast<Cache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  if (dst == src || !cache.pages.count(dst) || !cache.pages.count(src) || cache.lengths[dst] != 0 || tokens < 0 ||
      tokens > cache.lengths[src])
    return -1;
  const int64_t reserved = palaver::reserve_locked(cache, dst, tokens);
  if (reserved != 0) return reserved;
  const auto& from = cache.pages[src];
  auto& to = cache.pages[dst];
  for (int64_t p = 0; p * cache.page_tokens < tokens; ++p)
    std::memcpy(to[p].get(), from[p].get(), static_cast<size_t>(cache.page_halves) * 2);
  cache.lengths[dst] = tokens;
  return 0;
}

// Run one step. Row r appends counts[r] tokens (taken in order from tokens) to sequence seqs[r], whose pages must
// already hold them (pv_seq_reserve); a sequence appears in one row at most. For each row with want[r],
// logits[r][vocab] receives the next-token logits after its last token. Returns 0, or -1 for bad arguments.
int64_t pv_step(void* model_handle, void* cache_handle, int64_t rows, const int64_t* seqs, const int64_t* counts,
                const int32_t* tokens, const int8_t* want, float* logits) {
  using namespace palaver;
  auto& m = *static_cast<Model*>(model_handle);
  auto& cache = *static_cast<Cache*>(cache_handle);
  if (rows <= 0 || cache.model != &m) return -1;
  std::lock_guard<std::mutex> one_step(m.step_mutex);
  std::lock_guard<std::mutex> lock(cache.mutex);
  int64_t n = 0;  // tokens in this step
  std::vector<int64_t> row_of, position;
  std::vector<const std::vector<std::unique_ptr<uint16_t[]>>*> row_pages(rows);
  for (int64_t r = 0; r < rows; ++r) {
    auto found = cache.pages.find(seqs[r]);
    if (found == cache.pages.end() || counts[r] <= 0) return -1;
    for (int64_t other = 0; other < r; ++other)
      if (seqs[other] == seqs[r]) return -1;
    row_pages[r] = &found->second;
    const int64_t start = cache.lengths[seqs[r]];
    if (start + counts[r] > static_cast<int64_t>(found->second.size()) * cache.page_tokens) return -1;
    for (int64_t i = 0; i < counts[r]; ++i) {
      if (tokens[n + i] < 0 || tokens[n + i] >= m.vocab) return -1;
      row_of.push_back(r);
      position.push_back(start + i);
    }
    n += counts[r];
  }
  const int64_t h = m.hidden, q_width = m.heads * m.head_dim, kv_width = m.kv_heads * m.head_dim;
  const int64_t qkv_width = q_width + 2 * kv_width;
  m.x.resize(n * h);
  m.xn.resize(n * h);
  m.qkv.resize(n * qkv_width);
  m.attn.resize(n * q_width);
  m.gate_up.resize(n * 2 * m.ffn);
  m.act.resize(n * m.ffn);
  m.rotary.resize(n * m.head_dim);
  m.local_rotary.resize(m.local_inv_freq.empty() ? 0 : n * m.head_dim);
  int64_t longest = 0;
  for (int64_t t = 0; t < n; ++t) longest = std::max(longest, position[t] + 1);
  ChunkPool& pool = ChunkPool::instance();
  // Work on each token's own vectors, split across threads for a prefill chunk (each token's arithmetic is the same
  // whichever thread does it).
  const auto each_token = [&](const auto& body) {
    pool.run(n, std::max<int64_t>(1, 8192 / h), [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) body(t);
    });
  };
  each_token([&](int64_t t) {
    dequantise_row(m.embed.data + tokens[t] * m.embed.row_bytes, m.embed.type, h / kBlock, &m.x[t * h]);
    if (m.embed_scale != 1.0f)
      for (int64_t i = t * h; i < (t + 1) * h; ++i) m.x[i] *= m.embed_scale;
    rotary_table(m.inv_freq, m.rotary_scale, position[t], &m.rotary[t * m.head_dim]);
    if (!m.local_inv_freq.empty())
      rotary_table(m.local_inv_freq, 1.0f, position[t], &m.local_rotary[t * m.head_dim]);
  });

  for (int64_t layer = 0; layer < m.layers; ++layer) {
    const Layer& l = m.blocks[layer];
    each_token([&](int64_t t) { rms_norm(&m.x[t * h], l.attn_norm, h, m.eps, &m.xn[t * h]); });
    project(m.xn.data(), n, h, {{&l.q, 0}, {&l.k, q_width}, {&l.v, q_width + kv_width}}, m.qkv.data(), qkv_width);
    // Rotate queries and keys, and write each token's key and value at its position, before any attention: a
    // token attends over its own row's earlier positions and itself, whether they came in this step or before.
    each_token([&](int64_t t) {
      float* row = &m.qkv[t * qkv_width];
      if (l.q_bias != nullptr) {  // as a linear layer with a bias: each output's dot product, then its bias
        for (int64_t i = 0; i < q_width; ++i) row[i] += l.q_bias[i];
        for (int64_t i = 0; i < kv_width; ++i) row[q_width + i] += l.k_bias[i];
        for (int64_t i = 0; i < kv_width; ++i) row[q_width + kv_width + i] += l.v_bias[i];
      }
      if (l.q_norm != nullptr) {  // queries' heads, then keys' (they follow the queries in the row)
        std::vector<float> head_in(static_cast<size_t>(m.head_dim));
        for (int64_t head = 0; head < m.heads + m.kv_heads; ++head) {
          float* v = row + head * m.head_dim;
          std::copy(v, v + m.head_dim, head_in.begin());
          rms_norm(head_in.data(), head < m.heads ? l.q_norm : l.k_norm, m.head_dim, m.eps, v);
        }
      }
      const float* cos_sin = l.sliding ? &m.local_rotary[t * m.head_dim] : &m.rotary[t * m.head_dim];
      for (int64_t head = 0; head < m.heads + m.kv_heads; ++head) rotate(m, row + head * m.head_dim, cos_sin);
      uint16_t* page = (*row_pages[row_of[t]])[position[t] / cache.page_tokens].get();
      const int64_t slot = position[t] % cache.page_tokens;
      for (int64_t g = 0; g < m.kv_heads; ++g) {
        const float* key = row + q_width + g * m.head_dim;
        const float* value = row + q_width + kv_width + g * m.head_dim;
        uint16_t* k_out = kv_at(cache, page, layer, 0, g, slot);
        uint16_t* v_out = kv_at(cache, page, layer, 1, g, slot);
        for (int64_t i = 0; i < m.head_dim; i += 8) {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(k_out + i),
                           _mm256_cvtps_ph(_mm256_loadu_ps(key + i), _MM_FROUND_TO_NEAREST_INT));
          _mm_storeu_si128(reinterpret_cast<__m128i*>(v_out + i),
                           _mm256_cvtps_ph(_mm256_loadu_ps(value + i), _MM_FROUND_TO_NEAREST_INT));
        }
      }
    });
    const int64_t group = m.heads / m.kv_heads;
    pool.run(n * m.heads, 4, [&](int64_t begin, int64_t end) {
      std::vector<float> scores(static_cast<size_t>((longest + 7) / 8 * 8));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t t = task / m.heads, head = task % m.heads;
        const int64_t begin = l.sliding ? std::max<int64_t>(0, position[t] + 1 - m.window) : 0;
        attend(cache, *row_pages[row_of[t]], layer, head / group, &m.qkv[t * qkv_width + head * m.head_dim], begin,
               position[t] + 1, scores.data(), &m.attn[t * q_width + head * m.head_dim]);
      }
    });
    project(m.attn.data(), n, q_width, {{&l.o, 0}}, m.xn.data(), h);
    each_token([&](int64_t t) {
      // In place: each output is its own input times the scale, which is summed before any is written.
      if (l.post_attn_norm != nullptr) rms_norm(&m.xn[t * h], l.post_attn_norm, h, m.eps, &m.xn[t * h]);
      for (int64_t i = t * h; i < (t + 1) * h; ++i) m.x[i] += m.xn[i];
      rms_norm(&m.x[t * h], l.ffn_norm, h, m.eps, &m.xn[t * h]);
    });
    project(m.xn.data(), n, h, {{&l.gate, 0}, {&l.up, m.ffn}}, m.gate_up.data(), 2 * m.ffn);
    each_token([&](int64_t t) {
      const float* gate = &m.gate_up[t * 2 * m.ffn];
      float* act = &m.act[t * m.ffn];
      if (m.gelu)
        for (int64_t i = 0; i < m.ffn; ++i) act[i] = gelu_tanh(gate[i]) * gate[m.ffn + i];
      else
        for (int64_t i = 0; i < m.ffn; ++i) act[i] = silu(gate[i]) * gate[m.ffn + i];
    });
    project(m.act.data(), n, m.ffn, {{&l.down, 0}}, m.xn.data(), h);
    each_token([&](int64_t t) {
      if (l.post_ffn_norm != nullptr) rms_norm(&m.xn[t * h], l.post_ffn_norm, h, m.eps, &m.xn[t * h]);
      for (int64_t i = t * h; i < (t + 1) * h; ++i) m.x[i] += m.xn[i];
    });
  }
  for (int64_t r = 0; r < rows; ++r) cache.lengths[seqs[r]] += counts[r];
  // The head, for the last token of each row that wants its logits.
  std::vector<int64_t> last;
  for (int64_t r = 0, t = 0; r < rows; ++r) {
    t += counts[r];
    if (want[r]) last.push_back(t - 1);
  }
  if (!last.empty()) {
    m.out_rows.resize(last.size() * h);
    for (size_t i = 0; i < last.size(); ++i) rms_norm(&m.x[last[i] * h], m.out_norm, h, m.eps, &m.out_rows[i * h]);
    std::vector<float> wanted(last.size() * m.vocab);
    project(m.out_rows.data(), static_cast<int64_t>(last.size()), h, {{&m.head, 0}}, wanted.data(), m.vocab);
    for (int64_t r = 0, i = 0; r < rows; ++r)
      if (want[r]) std::memcpy(logits + r * m.vocab, &wanted[(i++) * m.vocab], m.vocab * sizeof(float));
  }
  return 0;
}

void pv_set_threads(int64_t threads) { palaver::ChunkPool::instance().set_threads(threads); }

}  // extern "C"
