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
//
// An embedding runs texts through the same layers as a prefill, on temporary pages, and mean-pools each text's
// final-normed hidden states (as llama-server's --pooling mean) where the step would take its last token's logits.
//
// The model and its weights are in model.h, the KV cache and its page pool in kv_cache.h, attention over a row's
// pages in attention.h, and the C interface in native_step.h.
#include "native_step.h"

#include "attention.h"
#include "blocks.h"
#include "chunk_pool.h"
#include "kv_cache.h"
#include "model.h"
#include "vector_math.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

namespace palaver {
namespace {

// A segment of a joined projection: one matrix's rows, written at column offset of the output.
struct Segment {
  const Matrix* matrix;
  int64_t column;
};

void rms_norm(const float* x, const float* weight, int64_t n, float eps, float* out) {
  // As transformers' LlamaRMSNorm: the mean of squares in float32, then x * rsqrt(mean + eps) * weight. In place
  // (out == x) is the same: each output is its own input times the scale, which is summed before any is written.
  float sum = 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += x[i] * x[i];
  const float scale = 1.0f / std::sqrt(sum / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * scale);
}

// y[m][n_out] = x[m][k] @ (the segments' rows)^T, each segment's rows written from its column on, by the model's
// kernel family; in the fast mode, a block type's rows by its integer kernels, on x quantised once for all segments:
// a repacked matrix's in groups of kGroupRows rows, another's in tiles of kTileN.
void project(const Model& model, const float* x, int64_t m, int64_t k, const std::vector<Segment>& segments, float* y,
             int64_t n_out) {
  const bool fast = model.int8_tiles != nullptr;
  std::vector<std::pair<int64_t, int64_t>> tiles;  // (segment, first row)
  bool any_codes = false, all_grouped = true;
  for (int64_t s = 0; s < static_cast<int64_t>(segments.size()); ++s) {
    const Matrix& w = *segments[s].matrix;
    const bool codes = fast && integer_codes(w.type), grouped = codes && w.repacked != nullptr;
    any_codes = any_codes || codes;
    all_grouped = all_grouped && grouped;
    for (int64_t n0 = 0; n0 < w.rows; n0 += grouped ? kGroupRows : kTileN) tiles.emplace_back(s, n0);
  }
  thread_local std::vector<Int8Block> quantised;  // this thread's, allocated only to grow
  if (any_codes) {
    const auto blocks = static_cast<size_t>(m * (k / kBlock));
    if (quantised.size() < blocks) quantised.resize(blocks);
    quantise_rows(x, m, k, quantised.data());
  }
  const Int8Block* x8 = quantised.data();
  const Kernels& kernels = *model.kernels;
  const int64_t per_task = all_grouped ? std::max<int64_t>(1, tiles_per_task(k, m) * kTileN / kGroupRows)
                                       : tiles_per_task(k, m);
  ChunkPool::instance().run(static_cast<int64_t>(tiles.size()), per_task, [&](int64_t begin, int64_t end) {
    float* buffer = tile_buffer(m, k);
    for (int64_t t = begin; t < end;) {
      const Segment& segment = segments[tiles[t].first];
      const Matrix& w = *segment.matrix;
      const int64_t n0 = tiles[t].second, tile_n = std::min(kTileN, w.rows - n0);
      if (fast && integer_codes(w.type) && w.repacked != nullptr) {
        int64_t last = t;  // the task's run of this matrix's groups, in one call
        while (last + 1 < end && tiles[last + 1].first == tiles[t].first) ++last;
        const int64_t rows = std::min(w.rows, tiles[last].second + kGroupRows) - n0;
        model.int8_groups(x8, m, k / kBlock, w.repacked + n0 / kGroupRows * group_bytes(w.type, k), w.type, rows,
                          y + segment.column + n0, n_out);
        t = last + 1;
        continue;
      }
      if (fast && integer_codes(w.type))
        model.int8_tiles(x8, m, k / kBlock, w.data, w.type, w.row_bytes, n0, tile_n, y, n_out, segment.column + n0);
      else
        kernels.tile_of_rows(x, m, k, w.data, w.type, w.row_bytes, n0, tile_n, y, n_out, segment.column + n0, buffer);
      ++t;
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

// Rotary frequencies as transformers computes them: the exponent and the power in float32.
std::vector<float> frequencies(double base, int64_t head_dim) {
  std::vector<float> inv_freq;
  for (int64_t i = 0; i < head_dim / 2; ++i)
    inv_freq.push_back(
        1.0f / std::pow(static_cast<float>(base), static_cast<float>(2 * i) / static_cast<float>(head_dim)));
  return inv_freq;
}


// Grow a thread's scratch to at least size floats; it never shrinks, so a warm thread allocates nothing.
float* grown(std::vector<float>& scratch, int64_t size) {
  if (scratch.size() < static_cast<size_t>(size)) scratch.resize(static_cast<size_t>(size));
  return scratch.data();
}

// One step's tokens over the model and the cache, and the widths every stage uses.
struct Step {
  Model& m;
  KvCache& cache;
  Workspace& w;
  int64_t n = 0;        // tokens in this step
  int64_t longest = 0;  // positions in the longest row after this step
  const int64_t h, q_width, kv_width, qkv_width;

  Step(Model& model, KvCache& kv)
      : m(model), cache(kv), w(model.work), h(model.hidden), q_width(model.heads * model.head_dim),
        kv_width(model.kv_heads * model.head_dim), qkv_width(q_width + 2 * kv_width) {}

  // Work on each token's own vectors, split across threads for a prefill chunk (each token's arithmetic is the
  // same whichever thread does it).
  template <typename Body>
  void each_token(const Body& body) const {
    ChunkPool::instance().run(n, std::max<int64_t>(1, 8192 / h), [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) body(t);
    });
  }
};

// Check the rows and list each token's row and position: no row steps unless every row is right.
Status plan_tokens(Step& s, int64_t rows, const int64_t* seqs, const int64_t* counts, const int32_t* tokens) {
  s.w.row_of.clear();
  s.w.position.clear();
  s.w.row_pages.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    auto found = s.cache.sequences.find(seqs[r]);
    if (found == s.cache.sequences.end()) return kUnknownSequence;
    if (counts[r] <= 0) return kEmptyRow;
    for (int64_t other = 0; other < r; ++other)
      if (seqs[other] == seqs[r]) return kRepeatedSequence;
    const KvCache::Sequence& sequence = found->second;
    s.w.row_pages[r] = sequence.pages.data();
    const int64_t start = sequence.length;
    if (counts[r] > static_cast<int64_t>(sequence.pages.size()) * s.cache.page_tokens - start) return kRowTooLong;
    for (int64_t i = 0; i < counts[r]; ++i) {
      if (tokens[s.n + i] < 0 || tokens[s.n + i] >= s.m.vocab) return kBadToken;
      s.w.row_of.push_back(r);
      s.w.position.push_back(start + i);
    }
    s.n += counts[r];
    s.longest = std::max(s.longest, start + counts[r]);
  }
  return kOk;
}

void size_workspace(Step& s) {
  const Model& m = s.m;
  const int64_t n = s.n;
  s.w.x.resize(n * s.h);
  s.w.xn.resize(n * s.h);
  s.w.qkv.resize(n * s.qkv_width);
  s.w.attn.resize(n * s.q_width);
  s.w.gate_up.resize(n * 2 * m.ffn);
  s.w.act.resize(n * m.ffn);
  s.w.rotary.resize(n * m.head_dim);
  s.w.local_rotary.resize(m.local_inv_freq.empty() ? 0 : n * m.head_dim);
}

// Each token's embedding row, and the cosines and sines of its position.
void embed(const Step& s, const int32_t* tokens) {
  const Model& m = s.m;
  Workspace& w = s.w;
  s.each_token([&](int64_t t) {
    m.kernels->dequantise_row(m.embed.data + tokens[t] * m.embed.row_bytes, m.embed.type, s.h / kBlock, &w.x[t * s.h]);
    if (m.embed_scale != 1.0f)
      for (int64_t i = t * s.h; i < (t + 1) * s.h; ++i) w.x[i] *= m.embed_scale;
    rotary_table(m.inv_freq, m.rotary_scale, w.position[t], &w.rotary[t * m.head_dim]);
    if (!m.local_inv_freq.empty())
      rotary_table(m.local_inv_freq, 1.0f, w.position[t], &w.local_rotary[t * m.head_dim]);
  });
}

// One token's projected Q/K/V row: its biases, head norms and rotary, then its key and value written at its
// position in its row's pages.
void place_token(const Step& s, const Layer& l, int64_t layer, int64_t t) {
  const Model& m = s.m;
  const int64_t q_width = s.q_width, kv_width = s.kv_width;
  float* row = &s.w.qkv[t * s.qkv_width];
  if (l.q_bias != nullptr) {  // as a linear layer with a bias: each output's dot product, then its bias
    for (int64_t i = 0; i < q_width; ++i) row[i] += l.q_bias[i];
    for (int64_t i = 0; i < kv_width; ++i) row[q_width + i] += l.k_bias[i];
    for (int64_t i = 0; i < kv_width; ++i) row[q_width + kv_width + i] += l.v_bias[i];
  }
  if (l.q_norm != nullptr)  // queries' heads, then keys' (they follow the queries in the row), each in place
    for (int64_t head = 0; head < m.heads + m.kv_heads; ++head) {
      float* v = row + head * m.head_dim;
      rms_norm(v, head < m.heads ? l.q_norm : l.k_norm, m.head_dim, m.eps, v);
    }
  const float* cos_sin = l.sliding ? &s.w.local_rotary[t * m.head_dim] : &s.w.rotary[t * m.head_dim];
  for (int64_t head = 0; head < m.heads + m.kv_heads; ++head) rotate(m, row + head * m.head_dim, cos_sin);
  const int64_t position = s.w.position[t];
  uint8_t* page = s.w.row_pages[s.w.row_of[t]][position / s.cache.page_tokens];
  const int64_t slot = position % s.cache.page_tokens;
  for (int64_t g = 0; g < m.kv_heads; ++g) {
    store_vector(s.cache.kv_type, row + q_width + g * m.head_dim, m.head_dim, s.cache.kv_at(page, layer, 0, g, slot));
    store_vector(s.cache.kv_type, row + q_width + kv_width + g * m.head_dim, m.head_dim,
                 s.cache.kv_at(page, layer, 1, g, slot));
  }
}

// Every token's query heads over its own row's positions (a sliding layer's, over the last window of them).
void attend_heads(const Step& s, const Layer& l, int64_t layer) {
  const Model& m = s.m;
  const Workspace& w = s.w;
  const int64_t group = m.heads / m.kv_heads;
  ChunkPool::instance().run(s.n * m.heads, 4, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> scratch;
    float* scores = grown(scratch, (s.longest + 7) / 8 * 8);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t t = task / m.heads, head = task % m.heads, position = w.position[t];
      const int64_t first = l.sliding ? std::max<int64_t>(0, position + 1 - m.window) : 0;
      const auto over = s.cache.kv_type == kKvQ8_0 ? attend<kKvQ8_0> : attend<kKvF16>;
      over(s.cache, w.row_pages[w.row_of[t]], layer, head / group, m.attn_scale,
           &w.qkv[t * s.qkv_width + head * m.head_dim], first, position + 1, scores,
           &s.w.attn[t * s.q_width + head * m.head_dim]);
    }
  });
}

// The attention block, up to its output projection in xn. Every token's key and value is written before any
// token attends: a token attends over its own row's earlier positions and itself, from this step or before.
void attention(const Step& s, int64_t layer) {
  const Layer& l = s.m.blocks[layer];
  Workspace& w = s.w;
  s.each_token([&](int64_t t) { rms_norm(&w.x[t * s.h], l.attn_norm, s.h, s.m.eps, &w.xn[t * s.h]); });
  project(s.m, w.xn.data(), s.n, s.h, {{&l.q, 0}, {&l.k, s.q_width}, {&l.v, s.q_width + s.kv_width}},
          w.qkv.data(), s.qkv_width);
  s.each_token([&](int64_t t) { place_token(s, l, layer, t); });
  attend_heads(s, l, layer);
  project(s.m, w.attn.data(), s.n, s.q_width, {{&l.o, 0}}, w.xn.data(), s.h);
}

// The attention's output joins the residual stream; then the MLP block and its own residual.
void mlp(const Step& s, const Layer& l) {
  const Model& m = s.m;
  Workspace& w = s.w;
  const int64_t h = s.h;
  s.each_token([&](int64_t t) {
    if (l.post_attn_norm != nullptr) rms_norm(&w.xn[t * h], l.post_attn_norm, h, m.eps, &w.xn[t * h]);
    for (int64_t i = t * h; i < (t + 1) * h; ++i) w.x[i] += w.xn[i];
    rms_norm(&w.x[t * h], l.ffn_norm, h, m.eps, &w.xn[t * h]);
  });
  project(s.m, w.xn.data(), s.n, h, {{&l.gate, 0}, {&l.up, m.ffn}}, w.gate_up.data(), 2 * m.ffn);
  s.each_token([&](int64_t t) {
    const float* gate = &w.gate_up[t * 2 * m.ffn];
    float* act = &w.act[t * m.ffn];
    // Vectorised: libm's scalar tanhf was an eighth of Gemma 3's 16-row step.
    if (m.gelu)
      gated<true>(gate, gate + m.ffn, m.ffn, act);
    else
      gated<false>(gate, gate + m.ffn, m.ffn, act);
  });
  project(s.m, w.act.data(), s.n, m.ffn, {{&l.down, 0}}, w.xn.data(), h);
  s.each_token([&](int64_t t) {
    if (l.post_ffn_norm != nullptr) rms_norm(&w.xn[t * h], l.post_ffn_norm, h, m.eps, &w.xn[t * h]);
    for (int64_t i = t * h; i < (t + 1) * h; ++i) w.x[i] += w.xn[i];
  });
}

// The final norm and the head, for the tokens whose logits the rows want (1: the last; 2: each), written to logits
// packed in row order.
void head(const Step& s, int64_t rows, const int64_t* counts, const int8_t* want, float* logits) {
  const Model& m = s.m;
  Workspace& w = s.w;
  w.last.clear();
  for (int64_t r = 0, t = 0; r < rows; ++r) {
    const int64_t first = t;
    t += counts[r];
    for (int64_t token = want[r] == 2 ? first : t - 1; want[r] != 0 && token < t; ++token) w.last.push_back(token);
  }
  if (w.last.empty()) return;
  const auto wanted = static_cast<int64_t>(w.last.size());
  w.out_rows.resize(wanted * s.h);
  for (int64_t i = 0; i < wanted; ++i) rms_norm(&w.x[w.last[i] * s.h], m.out_norm, s.h, m.eps, &w.out_rows[i * s.h]);
  project(s.m, w.out_rows.data(), wanted, s.h, {{&m.head, 0}}, logits, m.vocab);  // straight into the caller's
}

// The rows' tokens through every layer, into the residual stream (w.x); each row's sequence grows by its tokens.
Status forward(Step& s, int64_t rows, const int64_t* seqs, const int64_t* counts, const int32_t* tokens) {
  const Status planned = plan_tokens(s, rows, seqs, counts, tokens);
  if (planned != kOk) return planned;
  size_workspace(s);
  embed(s, tokens);
  for (int64_t layer = 0; layer < s.m.layers; ++layer) {
    attention(s, layer);
    mlp(s, s.m.blocks[layer]);
  }
  for (int64_t r = 0; r < rows; ++r) s.cache.sequences[seqs[r]].length += counts[r];
  return kOk;
}

Status step(Model& m, KvCache& cache, int64_t rows, const int64_t* seqs, const int64_t* counts,
            const int32_t* tokens, const int8_t* want, float* logits) {
  Step s(m, cache);
  const Status ran = forward(s, rows, seqs, counts, tokens);
  if (ran != kOk) return ran;
  head(s, rows, counts, want, logits);
  return kOk;
}

// Add each token's final-normed hidden state to its text's sums, token by token in the order of its positions:
// the sums are the same bits however the text was cut into steps, and whatever else shared them.
void pool(const Step& s, const std::vector<int64_t>& texts, const std::vector<int64_t>& counts, double* sums) {
  Workspace& w = s.w;
  w.out_rows.resize(s.n * s.h);
  s.each_token([&](int64_t t) { rms_norm(&w.x[t * s.h], s.m.out_norm, s.h, s.m.eps, &w.out_rows[t * s.h]); });
  int64_t t = 0;
  for (size_t r = 0; r < texts.size(); ++r) {
    double* sum = sums + texts[r] * s.h;
    for (const int64_t end = t + counts[r]; t < end; ++t)
      for (int64_t i = 0; i < s.h; ++i) sum[i] += w.out_rows[t * s.h + i];
  }
}

// A call's temporary sequences, given back however the call ends.
struct TemporarySequences {
  KvCache& cache;
  std::vector<int64_t> ids;

  TemporarySequences(KvCache& kv, int64_t rows) : cache(kv) { ids.reserve(static_cast<size_t>(rows)); }
  TemporarySequences(const TemporarySequences&) = delete;
  TemporarySequences& operator=(const TemporarySequences&) = delete;
  ~TemporarySequences() {
    for (const int64_t id : ids) cache.release(id);
  }

  // A new sequence with pages for tokens positions; its id, or the reservation's refusal.
  Status add(int64_t tokens, int64_t* id) {
    *id = cache.next_id++;
    cache.sequences.try_emplace(*id);
    ids.push_back(*id);
    return cache.reserve(*id, tokens);
  }
};

// Each text alone on its own temporary sequence, fed as a prefill is (in steps of at most chunk tokens, the texts in
// order), its states pooled after each step. The call allocates its books once, never per token or step.
Status embed_texts(Model& m, KvCache& cache, int64_t rows, const int64_t* counts, const int32_t* tokens,
                   int64_t chunk, float* means) {
  for (int64_t r = 0; r < rows; ++r)
    if (counts[r] <= 0) return kEmptyRow;
  TemporarySequences temporary(cache, rows);
  std::vector<int64_t> seqs(static_cast<size_t>(rows)), starts(static_cast<size_t>(rows)), fed(seqs.size());
  int64_t total = 0;  // within the page budget once every text is reserved: no sum overflows
  for (int64_t r = 0; r < rows; ++r) {
    const Status reserved = temporary.add(counts[r], &seqs[r]);
    if (reserved != kOk) return reserved;
    starts[r] = total;
    total += counts[r];
  }
  for (int64_t i = 0; i < total; ++i)
    if (tokens[i] < 0 || tokens[i] >= m.vocab) return kBadToken;
  std::vector<double> sums(static_cast<size_t>(rows * m.hidden), 0.0);
  std::vector<int64_t> step_texts, step_seqs, step_counts;
  std::vector<int32_t> step_tokens;
  for (int64_t done = 0; done < total;) {
    step_texts.clear(), step_seqs.clear(), step_counts.clear(), step_tokens.clear();
    for (int64_t r = 0, room = chunk; r < rows && room > 0; ++r) {
      const int64_t take = std::min(room, counts[r] - fed[r]);
      if (take == 0) continue;
      step_texts.push_back(r), step_seqs.push_back(seqs[r]), step_counts.push_back(take);
      step_tokens.insert(step_tokens.end(), tokens + starts[r] + fed[r], tokens + starts[r] + fed[r] + take);
      fed[r] += take, room -= take, done += take;
    }
    Step s(m, cache);
    const Status ran = forward(s, static_cast<int64_t>(step_seqs.size()), step_seqs.data(), step_counts.data(),
                               step_tokens.data());
    if (ran != kOk) return ran;
    pool(s, step_texts, step_counts, sums.data());
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < m.hidden; ++i)
      means[r * m.hidden + i] = static_cast<float>(sums[r * m.hidden + i] / static_cast<double>(counts[r]));
  return kOk;
}

const char* reason_of(int64_t status) {
  switch (status) {
    case kOk: return "ok";
    case kBadArgument: return "bad arguments";
    case kBadDimensions: return "bad dimensions";
    case kUnknownTensor: return "a tensor the native step does not read";
    case kBadTensor: return "a tensor of the wrong type, shape or layer";
    case kMissingTensor: return "a tensor the model needs is missing";
    case kAlreadySet: return "a setting made twice or too late";
    case kUnknownSequence: return "no such sequence";
    case kOutOfPages: return "out of KV pages";
    case kRowTooLong: return "row too long for the positions reserved for it";
    case kRepeatedSequence: return "one sequence in two rows";
    case kEmptyRow: return "a row with no tokens";
    case kBadToken: return "a token outside the vocabulary";
    case kNotEmpty: return "the target sequence is not empty";
    case kOutOfMemory: return "out of memory";
    default: return "unknown status";
  }
}

}  // namespace
}  // namespace palaver

using palaver::KvCache;
using palaver::Model;
using palaver::Status;

extern "C" {

int64_t pv_abi_version() { return palaver::kAbiVersion; }

const char* pv_status_reason(int64_t status) { return palaver::reason_of(status); }

// Refuses dimensions the kernels cannot run, and any a file could give that is not positive or past every real
// model's (the loader refuses those first): nothing is sized, and no division made, from a count not checked here.
Status pv_model_new(const int64_t* dims, double eps, double rope_base, int64_t adjacent_pairs, void** out) {
  constexpr int64_t kMost[7] = {int64_t{1} << 22, int64_t{1} << 17, int64_t{1} << 20, 4096, 4096, 4096, 4096};
  *out = nullptr;
  for (int i = 0; i < 7; ++i)
    if (dims[i] <= 0 || dims[i] > kMost[i]) return palaver::kBadDimensions;
  auto model = std::make_unique<Model>();
  model->vocab = dims[0], model->hidden = dims[1], model->ffn = dims[2], model->layers = dims[3];
  model->heads = dims[4], model->kv_heads = dims[5], model->head_dim = dims[6];
  if (model->hidden % palaver::kBlock || model->ffn % palaver::kBlock || model->head_dim % 16 ||
      model->heads % model->kv_heads)
    return palaver::kBadDimensions;
  model->eps = static_cast<float>(eps);
  model->adjacent_pairs = adjacent_pairs != 0;
  model->attn_scale = 1.0f / std::sqrt(static_cast<float>(model->head_dim));
  model->blocks.resize(model->layers);
  model->inv_freq = palaver::frequencies(rope_base, model->head_dim);
  *out = model.release();
  return palaver::kOk;
}

// Rotate only the first rotary_dims of each head (2 <= rotary_dims <= head_dim, even), with frequencies of base; with
// factors (rotary_dims / 2 of them), LongRoPE's: 1 / (factor * base^(2i / rotary_dims)), as transformers computes
// them, and every cosine and sine multiplied by attention_factor. Call once, before the weights are set.
Status pv_model_rope(void* handle, int64_t rotary_dims, double base, const float* factors, double attention_factor) {
  auto& model = *static_cast<Model*>(handle);
  if (model.scaled || model.gelu) return palaver::kAlreadySet;
  if (rotary_dims < 2 || rotary_dims > model.head_dim || rotary_dims % 2 || base <= 0 || attention_factor <= 0)
    return palaver::kBadArgument;
  model.inv_freq.clear();
  for (int64_t i = 0; i < rotary_dims / 2; ++i) {
    const float power = std::pow(static_cast<float>(base), static_cast<float>(2 * i) / static_cast<float>(rotary_dims));
    model.inv_freq.push_back(factors != nullptr ? 1.0f / (factors[i] * power) : 1.0f / power);
  }
  model.rotary_scale = static_cast<float>(attention_factor);
  model.scaled = factors != nullptr;
  return palaver::kOk;
}

// Make a model Gemma 3's: GELU, embeddings scaled by sqrt(hidden), scores by attn_scale, the global layers'
// frequencies divided by rope_factor, and sliding[i] layers that attend over the last window positions with
// frequencies of local_base. Call once, before the weights are set.
Status pv_model_gemma3(void* handle, double attn_scale, double rope_factor, int64_t window, double local_base,
                       const int8_t* sliding) {
  auto& model = *static_cast<Model*>(handle);
  if (model.gelu || model.scaled) return palaver::kAlreadySet;
  if (attn_scale <= 0 || rope_factor < 1 || window < 0 || local_base <= 0) return palaver::kBadArgument;
  model.gelu = true;
  model.embed_scale = static_cast<float>(std::sqrt(static_cast<double>(model.hidden)));
  model.attn_scale = static_cast<float>(attn_scale);
  for (float& frequency : model.inv_freq) frequency /= static_cast<float>(rope_factor);
  model.window = window;
  model.local_inv_freq = palaver::frequencies(local_base, model.head_dim);
  for (int64_t i = 0; i < model.layers; ++i) model.blocks[i].sliding = window > 0 && sliding[i] != 0;
  return palaver::kOk;
}

void pv_model_free(void* model) { delete static_cast<Model*>(model); }

int64_t pv_kernels_widest() {
  const palaver::Kernels* widest = palaver::kernels_of(palaver::kWidestKernels);
  return widest != nullptr ? widest->family : 0;
}

Status pv_model_kernels(void* handle, int64_t family) {
  const palaver::Kernels* kernels = family >= 0 ? palaver::kernels_of(family) : nullptr;
  if (kernels == nullptr) return palaver::kBadArgument;
  auto& model = *static_cast<Model*>(handle);
  model.kernels = kernels;
  if (model.dots != palaver::kNoDots) return pv_model_arithmetic(handle, 1);  // the dots the new family allows
  return palaver::kOk;
}

Status pv_model_arithmetic(void* handle, int64_t mode) {
  if (mode != 0 && mode != 1) return palaver::kBadArgument;
  auto& model = *static_cast<Model*>(handle);
  std::lock_guard<std::mutex> one_step(model.step_mutex);
  model.dots = mode == 1 ? palaver::widest_dots(model.kernels->family == palaver::kAvx512Kernels) : palaver::kNoDots;
  model.int8_tiles = mode == 1 ? palaver::int8_tiles_of(model.dots) : nullptr;
  model.int8_groups = mode == 1 ? palaver::int8_groups_of(model.dots) : nullptr;
  if (mode == 1)
    palaver::repack_matrices(model);  // the matrices set so far; the layout is every dot family's
  else
    palaver::drop_repacked(model);
  return palaver::kOk;
}

int64_t pv_model_dots(void* handle) { return static_cast<Model*>(handle)->dots; }

Status pv_model_set(void* handle, const char* name, const void* data, int64_t type, int64_t rows, int64_t cols) {
  return palaver::set_tensor(*static_cast<Model*>(handle), name, data, type, rows, cols);
}

Status pv_model_check(void* handle, char* missing, int64_t capacity) {
  return palaver::check_tensors(*static_cast<Model*>(handle), missing, capacity);
}

Status pv_cache_new(void* model, int64_t page_tokens, int64_t max_pages, int64_t kv_type, void** out) {
  const auto& m = *static_cast<Model*>(model);
  *out = nullptr;
  auto cache = std::make_unique<KvCache>();
  cache->model = &m;
  cache->layers = m.layers, cache->kv_heads = m.kv_heads, cache->head_dim = m.head_dim;
  cache->page_tokens = page_tokens, cache->max_pages = max_pages, cache->kv_type = kv_type;
  const Status mapped = cache->map_pool();
  if (mapped != palaver::kOk) return mapped;
  *out = cache.release();
  return palaver::kOk;
}

void pv_cache_free(void* cache) { delete static_cast<KvCache*>(cache); }

int64_t pv_cache_page_bytes(void* cache) { return static_cast<KvCache*>(cache)->page_bytes; }

// Without the lock: a metric read while a step holds the cache.
int64_t pv_cache_used_pages(void* cache) { return static_cast<KvCache*>(cache)->used_pages(); }

int64_t pv_seq_new(void* handle) {
  auto& cache = *static_cast<KvCache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  try {
    cache.sequences.try_emplace(cache.next_id);
  } catch (const std::bad_alloc&) {
    return palaver::kOutOfMemory;
  }
  return cache.next_id++;
}

void pv_seq_free(void* handle, int64_t seq) {
  auto& cache = *static_cast<KvCache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  cache.release(seq);
}

int64_t pv_seq_len(void* handle, int64_t seq) {
  auto& cache = *static_cast<KvCache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  auto found = cache.sequences.find(seq);
  return found == cache.sequences.end() ? palaver::kUnknownSequence : found->second.length;
}

// Make room for tokens more positions in seq, all or none.
Status pv_seq_reserve(void* handle, int64_t seq, int64_t tokens) {
  auto& cache = *static_cast<KvCache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  try {
    return cache.reserve(seq, tokens);
  } catch (const std::bad_alloc&) {
    return palaver::kOutOfMemory;
  }
}

// Forget positions past length, and give back the pages that the remaining positions do not need.
Status pv_seq_truncate(void* handle, int64_t seq, int64_t length) {
  auto& cache = *static_cast<KvCache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  return cache.truncate(seq, length);
}

// Forget positions past length, keeping the pages reserved for them.
Status pv_seq_rewind(void* handle, int64_t seq, int64_t length) {
  auto& cache = *static_cast<KvCache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  return cache.rewind(seq, length);
}

// Copy the first tokens positions of src into dst, which must be empty.
Status pv_seq_copy(void* handle, int64_t dst, int64_t src, int64_t tokens) {
  auto& cache = *static_cast<KvCache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  try {
    return cache.copy(dst, src, tokens);
  } catch (const std::bad_alloc&) {
    return palaver::kOutOfMemory;
  }
}

// Copy the first tokens positions of seq out, into bytes at out (pv_seq_export_bytes of them).
Status pv_seq_export(void* handle, int64_t seq, int64_t tokens, void* out, int64_t capacity) {
  auto& cache = *static_cast<KvCache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  if (out == nullptr || tokens < 0 || capacity != cache.exported_bytes(tokens)) return palaver::kBadArgument;
  return cache.exchange(seq, tokens, static_cast<uint8_t*>(out), nullptr);
}

// Fill the empty seq with tokens positions exported from a cache of the same model and KV type, all or none.
Status pv_seq_import(void* handle, int64_t seq, int64_t tokens, const void* in, int64_t bytes) {
  auto& cache = *static_cast<KvCache*>(handle);
  std::lock_guard<std::mutex> lock(cache.mutex);
  auto found = cache.sequences.find(seq);
  if (found == cache.sequences.end()) return palaver::kUnknownSequence;
  if (in == nullptr || tokens < 0 || bytes != cache.exported_bytes(tokens)) return palaver::kBadArgument;
  if (found->second.length != 0) return palaver::kNotEmpty;
  try {
    const Status reserved = cache.reserve(seq, tokens);
    if (reserved != palaver::kOk) return reserved;
  } catch (const std::bad_alloc&) {
    return palaver::kOutOfMemory;
  }
  const Status copied = cache.exchange(seq, tokens, nullptr, static_cast<const uint8_t*>(in));
  if (copied == palaver::kOk) found->second.length = tokens;
  return copied;
}

int64_t pv_seq_export_bytes(void* handle, int64_t tokens) {
  return tokens < 0 ? palaver::kBadArgument : static_cast<KvCache*>(handle)->exported_bytes(tokens);
}

// Run one step. Row r appends counts[r] tokens (taken in order from tokens) to sequence seqs[r], whose pages must
// already hold them (pv_seq_reserve); a sequence appears in one row at most. logits receives next-token logits,
// packed in row order: after a row's last token where want[r] is 1, after each of its tokens where it is 2.
Status pv_step(void* model_handle, void* cache_handle, int64_t rows, const int64_t* seqs, const int64_t* counts,
               const int32_t* tokens, const int8_t* want, float* logits) {
  auto& m = *static_cast<Model*>(model_handle);
  auto& cache = *static_cast<KvCache*>(cache_handle);
  if (rows <= 0 || cache.model != &m) return palaver::kBadArgument;
  for (int64_t r = 0; r < rows; ++r)
    if (want[r] < 0 || want[r] > 2) return palaver::kBadArgument;
  std::lock_guard<std::mutex> one_step(m.step_mutex);
  std::lock_guard<std::mutex> lock(cache.mutex);
  try {
    return palaver::step(m, cache, rows, seqs, counts, tokens, want, logits);
  } catch (const std::bad_alloc&) {
    return palaver::kOutOfMemory;
  }
}

Status pv_embed(void* model_handle, void* cache_handle, int64_t rows, const int64_t* counts, const int32_t* tokens,
                int64_t chunk, float* means) {
  auto& m = *static_cast<Model*>(model_handle);
  auto& cache = *static_cast<KvCache*>(cache_handle);
  if (rows <= 0 || chunk <= 0 || cache.model != &m) return palaver::kBadArgument;
  std::lock_guard<std::mutex> one_step(m.step_mutex);
  std::lock_guard<std::mutex> lock(cache.mutex);
  try {
    return palaver::embed_texts(m, cache, rows, counts, tokens, chunk, means);
  } catch (const std::bad_alloc&) {
    return palaver::kOutOfMemory;
  }
}

void pv_set_threads(int64_t threads) { palaver::ChunkPool::instance().set_threads(threads); }

int64_t pv_threads() { return palaver::ChunkPool::instance().threads(); }

void pv_pool_run(int64_t total, int64_t chunk, void (*body)(void*, int64_t, int64_t), void* context) {
  if (total <= 0) return;
  palaver::ChunkPool::instance().run(total, std::max<int64_t>(1, chunk),
                                     [&](int64_t begin, int64_t end) { body(context, begin, end); });
}

}  // extern "C"
