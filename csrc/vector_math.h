// Element-wise float functions on 8 lanes, for attention's softmax and the MLP's gates: each lane's result depends
// only on that lane's input, so a row's values are the same bits alone and in any batch.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace palaver {

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

// SiLU (Gelu false) or GELU with torch's tanh approximation of each gate, times its up: silu(g) = g / (1 + e^-g),
// and gelu(g) = 0.5 g (1 + tanh(u)) = g / (1 + e^-2u), u = sqrt(2 / pi) (g + 0.044715 g^3).
template <bool Gelu>
inline __m256 gated8(__m256 gate, __m256 up) {
  __m256 exponent = gate;
  if constexpr (Gelu) {
    const __m256 cube = _mm256_mul_ps(_mm256_mul_ps(gate, gate), gate);
    const __m256 inner = _mm256_mul_ps(_mm256_set1_ps(0.7978845608028654f),
                                       _mm256_fmadd_ps(_mm256_set1_ps(0.044715f), cube, gate));
    exponent = _mm256_add_ps(inner, inner);
  }
  const __m256 negated = _mm256_xor_ps(exponent, _mm256_set1_ps(-0.0f));
  const __m256 quotient = _mm256_div_ps(gate, _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(negated)));
  // Past exp8's clamp the sigmoid is 0, as torch's float one is there: gate * 0 (NaN for an infinite gate, as torch's).
  const __m256 vanishes = _mm256_cmp_ps(negated, _mm256_set1_ps(88.3762626647949f), _CMP_GT_OQ);
  const __m256 activated = _mm256_blendv_ps(quotient, _mm256_mul_ps(gate, _mm256_setzero_ps()), vanishes);
  return _mm256_mul_ps(activated, up);
}

// out[i] = the activation of gate[i] times up[i] for n values; a short tail goes through the same 8 lanes, padded.
template <bool Gelu>
inline void gated(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, gated8<Gelu>(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
  if (i == n) return;
  float gates[8] = {}, ups[8] = {}, results[8];
  for (int64_t j = i; j < n; ++j) gates[j - i] = gate[j], ups[j - i] = up[j];
  _mm256_storeu_ps(results, gated8<Gelu>(_mm256_loadu_ps(gates), _mm256_loadu_ps(ups)));
  for (int64_t j = i; j < n; ++j) out[j] = results[j - i];
}

}  // namespace palaver
