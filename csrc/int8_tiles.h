// The fast mode's tile kernel, included once per integer dot-product family by int8_dots.h, inside that family's
// namespace and target region, after the family's dot_codes(codes, activations): the 8 int32 sums of 4 products of
// 32 unsigned weight codes and 32 signed activations. Every family's sums are the same integers, so the float steps
// here, the same in every family, give every family the same bits. No include guard: it is meant to be included
// more than once, and it includes nothing, since it lands inside a namespace.

// The products of Rows input rows with the tile's kTileN weight rows, block by block in order: for each (row,
// weight row), one 8-lane float accumulator of each block's integer sums times its scales, and one float sum of
// the offsets' terms, both in block order whatever else shares the call.
template <int64_t Type, int Rows>
inline void tile_rows(const Int8Block* x, int64_t blocks, const uint8_t* const rows[kTileN], int64_t tile_n, float* y,
                      int64_t n_out) {
  __m256 acc[Rows][kTileN];
  float offsets[Rows][kTileN];
  for (int r = 0; r < Rows; ++r)
    for (int n = 0; n < kTileN; ++n) acc[r][n] = _mm256_setzero_ps(), offsets[r][n] = 0.0f;
  for (int64_t b = 0; b < blocks; ++b) {
    __m256i a[Rows];
    for (int r = 0; r < Rows; ++r) a[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[r * blocks + b].q));
    for (int n = 0; n < kTileN; ++n) {
      prefetch_ahead(rows[n], Type, b);
      WeightCodes codes;
      block_codes<Type>(rows[n], b, &codes);
      for (int r = 0; r < Rows; ++r) {
        const Int8Block& xb = x[r * blocks + b];
        // Q8_0's codes are signed: multiply their magnitudes by the activations given the codes' signs, as ggml does.
        const __m256i sums = kSignedCodes<Type>
                                 ? dot_codes(_mm256_sign_epi8(codes.q, codes.q), _mm256_sign_epi8(a[r], codes.q))
                                 : dot_codes(codes.q, a[r]);
        const __m256 scale = kHalfScales<Type> ? _mm256_mul_ps(codes.scales, _mm256_set1_ps(xb.d))
                                               : _mm256_set1_ps(codes.scale[0] * xb.d);
        acc[r][n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc[r][n]);
        if constexpr (kHalfScales<Type>) {
          const float first = xb.d * static_cast<float>(xb.halves[0]), second = xb.d * static_cast<float>(xb.halves[1]);
          offsets[r][n] = std::fma(codes.offset[1], second, std::fma(codes.offset[0], first, offsets[r][n]));
        } else if constexpr (!kSignedCodes<Type>) {
          offsets[r][n] = std::fma(codes.offset[0], xb.sum, offsets[r][n]);
        }
      }
    }
  }
  for (int r = 0; r < Rows; ++r)
    for (int n = 0; n < tile_n; ++n) y[r * n_out + n] = horizontal_sum(acc[r][n]) - offsets[r][n];
}

// As the exact families' tile_of_rows, on input rows quantised by quantise_rows: m rows of `blocks` Int8Blocks.
inline void tile_of_rows(const Int8Block* x, int64_t m, int64_t blocks, const uint8_t* weights, int64_t type,
                         int64_t row_bytes, int64_t n0, int64_t tile_n, float* y, int64_t n_out, int64_t y_col) {
  const uint8_t* rows[kTileN];
  for (int64_t n = 0; n < kTileN; ++n) rows[n] = weights + (n0 + std::min(n, tile_n - 1)) * row_bytes;
  avx2::with_type(type, [&](auto kind) {
    constexpr int64_t kType = decltype(kind)::value;
    if constexpr (integer_codes(kType)) {
      int64_t r = 0;
      for (; r + 4 <= m; r += 4)  // 16 accumulators; the tile's codes, made once a block, reused by 4 rows
        tile_rows<kType, 4>(x + r * blocks, blocks, rows, tile_n, y + r * n_out + y_col, n_out);
      for (; r < m; ++r) tile_rows<kType, 1>(x + r * blocks, blocks, rows, tile_n, y + r * n_out + y_col, n_out);
    }
  });
}
