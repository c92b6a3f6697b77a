// The native step's model: its dimensions and settings, and its weights, which the caller sets by their GGUF tensor
// names and which are read in place (never copied).
#pragma once

#include "blocks.h"
#include "int8_repack.h"
#include "native_step.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

namespace palaver {

struct Matrix {
  const uint8_t* data = nullptr;
  int64_t type = -1, rows = 0, cols = 0, row_bytes = 0;
  const uint8_t* repacked = nullptr;  // the fast mode's copy in groups of 8 rows (int8_repack.h), where there is one
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

// What a step needs besides the weights, kept between steps: a step allocates only to grow it.
struct Workspace {
  std::vector<float> x, xn, qkv, attn, gate_up, act, out_rows, rotary, local_rotary;
  std::vector<int64_t> row_of, position, last;  // each token's row and position; the tokens whose logits are wanted
  std::vector<uint8_t* const*> row_pages;        // each row's pages
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
  const Kernels* kernels = kernels_of(kWidestKernels);  // the block kernels' family, chosen once by the CPU
  int64_t dots = kNoDots;            // the fast mode's integer dot products (int8_dots.h); none in the exact mode
  Int8TileOfRows int8_tiles = nullptr;
  Int8GroupsOfRows int8_groups = nullptr;
  std::vector<std::unique_ptr<CacheLine[]>> repacked;  // what the matrices' repacked copies point into
  Matrix embed, head;
  const float* out_norm = nullptr;
  std::vector<Layer> blocks;
  std::vector<float> inv_freq, local_inv_freq;  // the sliding layers' frequencies, where there are any
  std::mutex step_mutex;                        // one step at a time: the workspace is the model's
  Workspace work;
};

namespace model_detail {

// The tensors the step reads. Internal: the interface names tensors as GGUF does.
enum Part {
  kEmbed, kHead, kOutNorm, kRopeFreqs,
  kAttnNorm, kFfnNorm, kQ, kK, kV, kO, kGate, kUp, kDown, kJoinedQkv,
  kQBias, kKBias, kVBias, kQNorm, kKNorm, kPostAttnNorm, kPostFfnNorm,
};

struct Named {
  std::string_view name;
  Part part;
};

constexpr Named kModelTensors[] = {
    {"token_embd.weight", kEmbed}, {"output.weight", kHead}, {"output_norm.weight", kOutNorm},
    {"rope_freqs.weight", kRopeFreqs},  // Llama 3's rotary scaling
};
// A layer's, after "blk.<layer>.".
constexpr Named kLayerTensors[] = {
    {"attn_norm.weight", kAttnNorm}, {"ffn_norm.weight", kFfnNorm}, {"attn_q.weight", kQ}, {"attn_k.weight", kK},
    {"attn_v.weight", kV}, {"attn_output.weight", kO}, {"ffn_gate.weight", kGate}, {"ffn_up.weight", kUp},
    {"ffn_down.weight", kDown}, {"attn_qkv.weight", kJoinedQkv},  // Phi-3's joined Q/K/V rows
    {"attn_q.bias", kQBias}, {"attn_k.bias", kKBias}, {"attn_v.bias", kVBias},
    {"attn_q_norm.weight", kQNorm}, {"attn_k_norm.weight", kKNorm},
    {"post_attention_norm.weight", kPostAttnNorm}, {"post_ffw_norm.weight", kPostFfnNorm},
};

template <size_t N>
bool find_part(const Named (&table)[N], std::string_view name, Part* part) {
  for (const Named& named : table)
    if (named.name == name) {
      *part = named.part;
      return true;
    }
  return false;
}

// The layer (-1: the model's own) and part that a GGUF tensor name stands for; false for a name the step does not
// read.
inline bool part_of(std::string_view name, int64_t* layer, Part* part) {
  *layer = -1;
  if (name.starts_with("blk.")) {
    name.remove_prefix(4);
    const size_t dot = name.find('.');
    if (dot == std::string_view::npos || dot == 0 || dot > 6) return false;
    int64_t number = 0;
    for (const char digit : name.substr(0, dot)) {
      if (digit < '0' || digit > '9') return false;
      number = number * 10 + (digit - '0');
    }
    *layer = number;
    name.remove_prefix(dot + 1);
    return find_part(kLayerTensors, name, part);
  }
  return find_part(kModelTensors, name, part);
}

// The floats a vector part holds, or 0 for a matrix.
inline int64_t vector_width(const Model& m, Part part) {
  switch (part) {
    case kOutNorm: case kAttnNorm: case kFfnNorm: case kPostAttnNorm: case kPostFfnNorm: return m.hidden;
    case kQNorm: case kKNorm: return m.head_dim;
    case kQBias: return m.heads * m.head_dim;
    case kKBias: case kVBias: return m.kv_heads * m.head_dim;
    case kRopeFreqs: return static_cast<int64_t>(m.inv_freq.size());
    default: return 0;
  }
}

inline Status set_vector(Model& m, int64_t layer, Part part, const float* v, int64_t type, int64_t rows,
                         int64_t cols) {
  if (type != kF32 || rows != 1 || cols != vector_width(m, part)) return kBadTensor;
  if (part == kRopeFreqs) {  // each frequency divided by its factor, once
    if (m.scaled) return kAlreadySet;
    for (int64_t i = 0; i < cols; ++i) m.inv_freq[i] /= v[i];
    m.scaled = true;
    return kOk;
  }
  if (part == kOutNorm) {
    m.out_norm = v;
    return kOk;
  }
  Layer& l = m.blocks[layer];
  switch (part) {
    case kAttnNorm: l.attn_norm = v; break;
    case kFfnNorm: l.ffn_norm = v; break;
    case kPostAttnNorm: l.post_attn_norm = v; break;
    case kPostFfnNorm: l.post_ffn_norm = v; break;
    case kQNorm: l.q_norm = v; break;
    case kKNorm: l.k_norm = v; break;
    case kQBias: l.q_bias = v; break;
    case kKBias: l.k_bias = v; break;
    default: l.v_bias = v; break;
  }
  return kOk;
}

// Point a matrix part at rows of blocks; a joined matrix (Phi-3's Q/K/V, or gate then up) becomes views of its rows.
inline Status set_matrix(Model& m, int64_t layer, Part part, const uint8_t* data, int64_t type, int64_t rows,
                         int64_t cols) {
  const int64_t row_bytes = row_bytes_of(type, cols);
  const int64_t q_rows = m.heads * m.head_dim, kv_rows = m.kv_heads * m.head_dim;
  if (row_bytes == 0) return kBadTensor;
  const auto view = [&](int64_t first, int64_t count) {
    return Matrix{data + first * row_bytes, type, count, cols, row_bytes};
  };
  const auto shaped = [&](Matrix& target, int64_t want_rows, int64_t want_cols) {
    if (rows != want_rows || cols != want_cols) return kBadTensor;
    target = view(0, rows);
    return kOk;
  };
  if (part == kEmbed) return shaped(m.embed, m.vocab, m.hidden);
  if (part == kHead) return shaped(m.head, m.vocab, m.hidden);
  Layer& l = m.blocks[layer];
  switch (part) {
    case kQ: return shaped(l.q, q_rows, m.hidden);
    case kK: return shaped(l.k, kv_rows, m.hidden);
    case kV: return shaped(l.v, kv_rows, m.hidden);
    case kO: return shaped(l.o, m.hidden, q_rows);
    case kGate: return shaped(l.gate, m.ffn, m.hidden);
    case kDown: return shaped(l.down, m.hidden, m.ffn);
    case kUp:
      if (rows != 2 * m.ffn) return shaped(l.up, m.ffn, m.hidden);
      if (cols != m.hidden) return kBadTensor;
      l.gate = view(0, m.ffn);  // Phi-3's joined gate, then up
      l.up = view(m.ffn, m.ffn);
      return kOk;
    default:  // kJoinedQkv
      if (rows != q_rows + 2 * kv_rows || cols != m.hidden) return kBadTensor;
      l.q = view(0, q_rows);
      l.k = view(q_rows, kv_rows);
      l.v = view(q_rows + kv_rows, kv_rows);
      return kOk;
  }
}

// Write the name of a tensor the model lacks into missing (when it has room); return kMissingTensor.
inline Status lacking(char* missing, int64_t capacity, int64_t layer, const char* tensor) {
  if (missing != nullptr && capacity > 0) {
    if (layer < 0) std::snprintf(missing, static_cast<size_t>(capacity), "%s", tensor);
    else std::snprintf(missing, static_cast<size_t>(capacity), "blk.%lld.%s", static_cast<long long>(layer), tensor);
  }
  return kMissingTensor;
}

// The first tensor a layer lacks: one it always needs, or the partner of one that comes in a group.
inline const char* layer_lacks(const Layer& l) {
  const auto set = [](const void* p) { return p != nullptr; };
  const bool biased = set(l.q_bias) || set(l.k_bias) || set(l.v_bias), normed = set(l.q_norm) || set(l.k_norm);
  const bool post_normed = set(l.post_attn_norm) || set(l.post_ffn_norm);
  const std::pair<bool, const char*> needed[] = {
      {set(l.attn_norm), "attn_norm.weight"}, {set(l.ffn_norm), "ffn_norm.weight"}, {set(l.q.data), "attn_q.weight"},
      {set(l.k.data), "attn_k.weight"}, {set(l.v.data), "attn_v.weight"}, {set(l.o.data), "attn_output.weight"},
      {set(l.gate.data), "ffn_gate.weight"}, {set(l.up.data), "ffn_up.weight"},
      {set(l.down.data), "ffn_down.weight"}, {!biased || set(l.q_bias), "attn_q.bias"},
      {!biased || set(l.k_bias), "attn_k.bias"}, {!biased || set(l.v_bias), "attn_v.bias"},
      {!normed || set(l.q_norm), "attn_q_norm.weight"}, {!normed || set(l.k_norm), "attn_k_norm.weight"},
      {!post_normed || set(l.post_attn_norm), "post_attention_norm.weight"},
      {!post_normed || set(l.post_ffn_norm), "post_ffw_norm.weight"},
  };
  for (const auto& [present, name] : needed)
    if (!present) return name;
  return nullptr;
}

}  // namespace model_detail

// Point the model at a tensor by its GGUF name.
inline Status set_tensor(Model& m, const char* name, const void* data, int64_t type, int64_t rows, int64_t cols) {
  using namespace model_detail;
  int64_t layer = -1;
  Part part = kEmbed;
  if (name == nullptr || !part_of(name, &layer, &part)) return kUnknownTensor;
  if (data == nullptr) return kBadArgument;
  if (layer >= m.layers) return kBadTensor;
  if (vector_width(m, part) > 0)
    return set_vector(m, layer, part, static_cast<const float*>(data), type, rows, cols);
  return set_matrix(m, layer, part, static_cast<const uint8_t*>(data), type, rows, cols);
}

// The matrices the step multiplies (not the embedding, whose rows it only reads).
inline std::vector<Matrix*> multiplied(Model& m) {
  std::vector<Matrix*> matrices = {&m.head};
  for (Layer& l : m.blocks)
    for (Matrix* w : {&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down}) matrices.push_back(w);
  return matrices;
}

// Give every multiplied matrix of a repacked type its repacked copy, once: one set later has none, and takes the
// per-row path.
inline void repack_matrices(Model& m) {
  for (Matrix* w : multiplied(m))
    if (w->data != nullptr && w->repacked == nullptr && repacked_type(w->type)) {
      m.repacked.push_back(palaver::repacked(w->data, w->type, w->rows, w->cols, w->row_bytes));
      w->repacked = m.repacked.back()[0].bytes;
    }
}

inline void drop_repacked(Model& m) {
  for (Matrix* w : multiplied(m)) w->repacked = nullptr;
  m.repacked.clear();
}

// Check that the model has every tensor it needs, and each group's whole; name the first it lacks.
inline Status check_tensors(const Model& m, char* missing, int64_t capacity) {
  using namespace model_detail;
  if (!m.embed.data) return lacking(missing, capacity, -1, "token_embd.weight");
  if (!m.head.data) return lacking(missing, capacity, -1, "output.weight");
  if (!m.out_norm) return lacking(missing, capacity, -1, "output_norm.weight");
  for (int64_t i = 0; i < m.layers; ++i)
    if (const char* tensor = layer_lacks(m.blocks[i])) return lacking(missing, capacity, i, tensor);
  return kOk;
}

}  // namespace palaver
