// The fast mode's kernel on repacked weights (the layout int8_dots.h describes), included once per integer
// dot-product family by int8_dots.h, inside that family's namespace and target region, after the family's
// kBiasedSignedCodes and dot_half. No include guard, and no includes: it is meant to land in several namespaces.
//
// A group's 8 weight rows are the 8 lanes of every register: each block's codes are unpacked once, into 8 registers
// of 4 codes a row (for one or two input rows, as the weights stream past; for more, into a buffer every input row
// reads), and each input row's activations, 4 at a time, are broadcast against them. A block's sums are integers,
// exact, in every family; so is what the codes' fixed offset takes off (Q4_0's 8, Q5_0's 16, Q3_K's 4, Q6_K's 32,
// Q8_0's bias of 128 where the family biases it), from the activations' exact sums, and the K-quants' products of
// each 16's sum with its integer scale (and Q2_K's minimum with the activations' sum). Then, per block and lane,
// the same float steps in every family and for every input row however many share the call: the sum converted
// once, times (the row's scale * the activations' d), added to one 8-lane accumulator in block order, then the
// block's offset term (Q4_1's, Q5_1's, Q4_K's, Q5_K's and Q2_K's minimums times the activations' sum) added to it.

// A block of a group, as the dot products take it.
struct GroupBlock {
  __m256i codes[8];        // register t: every row's codes 4t .. 4t + 3, a row a lane
  __m256 scale;            // each row's d, or Q4_K's and Q5_K's d * the part's scale (exact: 11 bits by 6)
  __m256 offset;           // each row's weight of the activations' sum: m, -dmin * min, or Q2_K's -dmin
  __m256i part_scales[2];  // Q6_K, Q3_K and Q2_K: each row's integer scale of each 16
  __m256i part_mins[2];    // Q2_K: each row's integer minimum of each 16
};

// The offset taken off every code, as an integer times the activations' sum.
template <int64_t Type>
constexpr int kCodeOffset = Type == kQ4_0 ? 8
                            : Type == kQ5_0 ? 16
                            : Type == kQ6_K ? 32
                            : Type == kQ3_K ? 4
                            : Type == kQ8_0 && kBiasedSignedCodes ? 128
                                                                  : 0;

template <int64_t Type>
constexpr bool kHasOffset = Type == kQ4_1 || Type == kQ5_1 || Type == kQ4_K || Type == kQ5_K || Type == kQ2_K;

// The types whose halves of 16 have their own integer scales.
template <int64_t Type>
constexpr bool kScaledHalves = Type == kQ6_K || Type == kQ3_K || Type == kQ2_K;

PALAVER_BLOCK_STEP __m256i load_256(const uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

PALAVER_BLOCK_STEP __m256 load_halves(const uint8_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// 8 bytes from p, widened to int32 lanes.
PALAVER_BLOCK_STEP __m256i load_8_bytes(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}

// Shift each 16-bit word left by Shift bits (right where negative).
template <int Shift>
PALAVER_BLOCK_STEP __m256i shift_words(__m256i x) {
  if constexpr (Shift > 0) return _mm256_slli_epi16(x, Shift);
  else if constexpr (Shift < 0) return _mm256_srli_epi16(x, -Shift);
  else return x;
}

// Four planes of nibbles into the 8 registers: the low nibbles are codes 0 .. 15, the high ones 16 .. 31.
PALAVER_BLOCK_STEP void unpack_nibbles(const uint8_t* p, __m256i codes[8]) {
  const __m256i mask = _mm256_set1_epi8(0x0F);
  for (int u = 0; u < 4; ++u) {
    const __m256i raw = load_256(p + 32 * u);
    codes[u] = _mm256_and_si256(raw, mask);
    codes[u + 4] = _mm256_and_si256(_mm256_srli_epi16(raw, 4), mask);
  }
}

// Bits 2s, 2s + 1 of plane v to bits At, At + 1 of register v + 2s. The shifts move no bit the mask keeps across
// a byte.
template <int At, int... S>
PALAVER_BLOCK_STEP void add_pairs(const uint8_t* p, __m256i codes[8], std::integer_sequence<int, S...>) {
  const __m256i mask = _mm256_set1_epi8(static_cast<char>(3 << At));
  for (int v = 0; v < 2; ++v) {
    const __m256i plane = load_256(p + 32 * v);
    ((codes[v + 2 * S] = _mm256_or_si256(codes[v + 2 * S], _mm256_and_si256(shift_words<At - 2 * S>(plane), mask))),
     ...);
  }
}

// Bit t to bit At of register t, likewise.
template <int At, int... T>
PALAVER_BLOCK_STEP void add_bits(const uint8_t* p, __m256i codes[8], std::integer_sequence<int, T...>) {
  const __m256i bits = load_256(p), mask = _mm256_set1_epi8(static_cast<char>(1 << At));
  ((codes[T] = _mm256_or_si256(codes[T], _mm256_and_si256(shift_words<At - T>(bits), mask))), ...);
}

// Block b of a group (weights 32b .. 32b + 31 of each of its rows), unpacked.
template <int64_t Type>
PALAVER_BLOCK_STEP void unpack_block(const uint8_t* group, int64_t b, GroupBlock* out) {
  constexpr int64_t parts = unit_weights(Type) / kBlock;
  const int64_t part = b % parts;
  const uint8_t* unit = group + (b / parts) * group_unit_bytes(Type);
  const uint8_t* codes = unit + part_offset(Type, part);
  out->scale = load_halves(unit);
  if constexpr (Type == kQ8_0) {
    for (int t = 0; t < 8; ++t) {
      const __m256i signed_codes = load_256(codes + 32 * t);
      out->codes[t] = kBiasedSignedCodes ? _mm256_xor_si256(signed_codes, _mm256_set1_epi8(static_cast<char>(0x80)))
                                         : signed_codes;
    }
  } else if constexpr (has_nibbles(Type)) {
    unpack_nibbles(codes, out->codes);
  } else {
    for (int t = 0; t < 8; ++t) out->codes[t] = _mm256_setzero_si256();
  }
  if constexpr (has_pairs(Type))
    add_pairs<pairs_shift(Type)>(codes + pairs_offset(Type), out->codes, std::make_integer_sequence<int, 4>{});
  if constexpr (has_bits(Type))
    add_bits<bit_shift(Type)>(codes + bits_offset(Type), out->codes, std::make_integer_sequence<int, 8>{});
  if constexpr (Type == kQ4_1 || Type == kQ5_1) out->offset = load_halves(unit + 16);
  if constexpr (Type == kQ4_K || Type == kQ5_K) {  // both products exact, the negation too
    out->scale = _mm256_mul_ps(out->scale, _mm256_cvtepi32_ps(load_8_bytes(unit + 32 + 8 * part)));
    out->offset =
        _mm256_xor_ps(_mm256_mul_ps(load_halves(unit + 16), _mm256_cvtepi32_ps(load_8_bytes(unit + 96 + 8 * part))),
                      _mm256_set1_ps(-0.0f));
  }
  if constexpr (Type == kQ6_K || Type == kQ3_K) {
    const __m128i scales = _mm_loadu_si128(reinterpret_cast<const __m128i*>(unit + 16 + 16 * part));
    out->part_scales[0] = _mm256_cvtepi8_epi32(scales);
    out->part_scales[1] = _mm256_cvtepi8_epi32(_mm_srli_si128(scales, 8));
  }
  if constexpr (Type == kQ2_K) {
    out->offset = _mm256_xor_ps(load_halves(unit + 16), _mm256_set1_ps(-0.0f));
    for (int h = 0; h < 2; ++h) {
      const __m256i packed = load_8_bytes(unit + 32 + 16 * part + 8 * h);
      out->part_scales[h] = _mm256_and_si256(packed, _mm256_set1_epi32(0x0F));
      out->part_mins[h] = _mm256_srli_epi32(packed, 4);
    }
  }
}

// Prefetch each cache line a block's share of its group spans, far ahead of it.
template <int64_t Type>
PALAVER_BLOCK_STEP void prefetch_group_ahead(const uint8_t* group, int64_t b) {
  constexpr int64_t share = group_unit_bytes(Type) * kBlock / unit_weights(Type);
  const uint8_t* ahead = group + b * share + kPrefetchBytes;
  for (int64_t line = 0; line < share; line += 64)
    _mm_prefetch(reinterpret_cast<const char*>(ahead + line), _MM_HINT_T0);
}

// Rows input rows against a group, block by block in order; Fresh: each block unpacked here, else read from
// unpacked (a whole group's blocks, unpacked once for every input row of the call).
template <int64_t Type, int Rows, bool Fresh>
inline void group_rows(const Int8Block* x, int64_t blocks, const uint8_t* group, const GroupBlock* unpacked,
                       int64_t rows, float* y, int64_t n_out) {
  __m256 acc[Rows];
  for (int r = 0; r < Rows; ++r) acc[r] = _mm256_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    GroupBlock fresh;
    if constexpr (Fresh) {
      prefetch_group_ahead<Type>(group, b);
      unpack_block<Type>(group, b, &fresh);
    }
    const GroupBlock& w = Fresh ? fresh : unpacked[b];
    for (int r = 0; r < Rows; ++r) {
      const Int8Block& xb = x[r * blocks + b];
      __m256i total;
      if constexpr (kScaledHalves<Type>) {
        __m256i sums[2];
        for (int h = 0; h < 2; ++h) {
          sums[h] = _mm256_set1_epi32(-kCodeOffset<Type> * xb.halves[h]);
          sums[h] = dot_half<Type>(sums[h], w.codes + 4 * h, xb.q + 16 * h);
        }
        // Each half's sum times its scale, in integers: at most 2 * 16 * 32 * 127 * 128 < 2^24 (Q6_K), exact as a
        // float.
        total = _mm256_add_epi32(_mm256_mullo_epi32(sums[0], w.part_scales[0]),
                                 _mm256_mullo_epi32(sums[1], w.part_scales[1]));
      } else {
        // One scale for the block: both halves sum into one register from one offset term, the same integers as
        // two (one broadcast a row and block fewer).
        total = kCodeOffset<Type> == 0 ? _mm256_setzero_si256()
                                       : _mm256_set1_epi32(-kCodeOffset<Type> * (xb.halves[0] + xb.halves[1]));
        for (int h = 0; h < 2; ++h) total = dot_half<Type>(total, w.codes + 4 * h, xb.q + 16 * h);
      }
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(w.scale, _mm256_set1_ps(xb.d)), acc[r]);
      if constexpr (Type == kQ2_K) {  // each half's minimum times the activations' sum over it, in integers too
        const __m256i mins = _mm256_add_epi32(_mm256_mullo_epi32(w.part_mins[0], _mm256_set1_epi32(xb.halves[0])),
                                              _mm256_mullo_epi32(w.part_mins[1], _mm256_set1_epi32(xb.halves[1])));
        acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_mul_ps(w.offset, _mm256_set1_ps(xb.d)), acc[r]);
      } else if constexpr (kHasOffset<Type>) {
        acc[r] = _mm256_fmadd_ps(w.offset, _mm256_set1_ps(xb.sum), acc[r]);
      }
    }
  }
  for (int r = 0; r < Rows; ++r) {
    float lanes[kGroupRows];
    _mm256_storeu_ps(lanes, acc[r]);
    for (int64_t n = 0; n < rows; ++n) y[r * n_out + n] = lanes[n];
  }
}

// Each group of the `rows` weight rows in turn (the last one short where rows is not a multiple of kGroupRows).
// Three row kernels in all, to keep the build short: 1 and 2 input rows as the weights stream past, 3 as 2 and 1,
// more 4 at a time from the unpacked buffer, the last 4 overlapping the others where m is not a multiple of 4
// (their rows computed again, to the same bits).
template <int64_t Type>
inline void groups_of_rows_of(const Int8Block* x, int64_t m, int64_t blocks, const uint8_t* groups, int64_t rows,
                              float* y, int64_t n_out) {
  thread_local std::vector<GroupBlock> unpacked;  // this thread's, allocated only to grow
  if (m > 3 && unpacked.size() < static_cast<size_t>(blocks)) unpacked.resize(static_cast<size_t>(blocks));
  for (int64_t n0 = 0; n0 < rows; n0 += kGroupRows) {
    const uint8_t* group = groups + n0 / kGroupRows * group_bytes(Type, blocks * kBlock);
    const int64_t group_n = std::min(kGroupRows, rows - n0);
    float* out = y + n0;
    if (m <= 3) {
      if (m >= 2) group_rows<Type, 2, true>(x, blocks, group, nullptr, group_n, out, n_out);
      if (m != 2)
        group_rows<Type, 1, true>(x + (m - 1) * blocks, blocks, group, nullptr, group_n, out + (m - 1) * n_out, n_out);
      continue;
    }
    for (int64_t b = 0; b < blocks; ++b) unpack_block<Type>(group, b, &unpacked[b]);
    // The next group comes from memory while this one's rows are computed from the unpacked buffer: without this,
    // its reads waited on memory at the start of its unpacking, the arithmetic idle.
    if (n0 + kGroupRows < rows) {
      const uint8_t* next = group + group_bytes(Type, blocks * kBlock);
      for (int64_t line = 0; line < group_bytes(Type, blocks * kBlock); line += 64)
        _mm_prefetch(reinterpret_cast<const char*>(next + line), _MM_HINT_T1);
    }
    for (int64_t r = 0; r < m; r += 4) {
      const int64_t first = std::min(r, m - 4);
      group_rows<Type, 4, false>(x + first * blocks, blocks, group, unpacked.data(), group_n, out + first * n_out,
                                 n_out);
    }
  }
}

// As int8_dots.h's Int8GroupsOfRows.
inline void groups_of_rows(const Int8Block* x, int64_t m, int64_t blocks, const uint8_t* groups, int64_t type,
                           int64_t rows, float* y, int64_t n_out) {
  avx2::with_type(type, [&](auto kind) {
    if constexpr (repacked_type(decltype(kind)::value))
      groups_of_rows_of<decltype(kind)::value>(x, m, blocks, groups, rows, y, n_out);
  });
}
