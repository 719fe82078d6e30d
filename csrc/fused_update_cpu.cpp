// tuco::fused_update on CPU: one pass over memory per decoder layer, vectorised, OpenMP-parallel (docs/math.md §4).
//
// Per layer l, with x = x_l, out_pt = x_l + f_PT(x_l), out_ft = x_l + f_FT(x_l) (shape [B, T, d]):
//     FTC = out_ft - out_pt,   PTC = out_pt - x,   x_{l+1} = out_pt + alpha * FTC   (= out_ft when alpha == 1)
//     acc_ptc[b] += PTC[b, last_b],  acc_ftc[b] += FTC[b, last_b]                    (fp32)
// Arithmetic is fp32: every element is widened right after its load and rounded (round-to-nearest-even,
// bit-exact with torch) only at the store; alpha * FTC is rounded before the add (no FMA contraction), as
// in the eager reference, so fp32 results are bit-identical to it.
//
// Why fusing pays: x_{l+1} needs only out_pt and out_ft, so an ordinary row costs 3 memory accesses per
// element (read out_pt, read out_ft, write out) where the eager composition makes about eleven, several of
// them fp32 temporaries twice the input's width. x is read only on the B last-token rows (all rows in
// all-tokens mode), which also fold PTC/FTC into the accumulators and the L1 norms while their elements are
// in registers.
//
// The row loop is split into runs of ordinary rows (a flat element-wise kernel, compiled for AVX-512, AVX2
// and baseline x86-64 and picked at load time through GCC's target_clones; fp16 through F16C intrinsics)
// and single last-token rows.
#include <cmath>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "fused_update_checks.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define TUCO_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TUCO_CPU_CLONES
#endif
#define TUCO_INLINE inline __attribute__((always_inline))

namespace tuco {
namespace {

// ---- element types: widen to fp32 on load, round to nearest even on store (as torch does) ----
struct F32 {
  using storage = float;
  static TUCO_INLINE float load(float v) { return v; }
  static TUCO_INLINE float store(float v) { return v; }
};

struct BF16 {
  using storage = uint16_t;
  static TUCO_INLINE float load(uint16_t v) {
    const uint32_t u = uint32_t(v) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  static TUCO_INLINE uint16_t store(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    const uint16_t rounded = uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
    return f != f ? uint16_t(0x7FC0) : rounded;  // NaN -> canonical quiet NaN, like c10::BFloat16
  }
};

#if defined(__FLT16_MAX__)
struct F16 {  // the compiler's _Float16 (scalar conversions: tails and last-token rows)
  using storage = _Float16;
  static TUCO_INLINE float load(_Float16 v) { return float(v); }
  static TUCO_INLINE _Float16 store(float f) { return _Float16(f); }
};
#else
struct F16 {  // portable fallback: c10's bit-exact software conversions
  using storage = at::Half;
  static TUCO_INLINE float load(at::Half v) { return float(v); }
  static TUCO_INLINE at::Half store(float f) { return at::Half(f); }
};
#endif

// ---- the ordinary-row kernel: out = pt + alpha * (ft - pt) over n contiguous elements ----
template <class E>
TUCO_INLINE void mix_impl(const typename E::storage* pt, const typename E::storage* ft, typename E::storage* out,
                          int64_t n, float alpha) {  // no __restrict: out may alias an input (in-place is fine)
  for (int64_t i = 0; i < n; ++i) {
    const float p = E::load(pt[i]);
    const float scaled = alpha * (E::load(ft[i]) - p);
    out[i] = E::store(p + scaled);
  }
}

TUCO_CPU_CLONES void mix_f32(const float* pt, const float* ft, float* out, int64_t n, float alpha) {
  mix_impl<F32>(pt, ft, out, n, alpha);
}
TUCO_CPU_CLONES void mix_bf16(const uint16_t* pt, const uint16_t* ft, uint16_t* out, int64_t n, float alpha) {
  mix_impl<BF16>(pt, ft, out, n, alpha);
}
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// fp16 <-> fp32 through F16C: compilers do not vectorise _Float16 conversions without AVX512-FP16.
// vcvtps2ph with _MM_FROUND_TO_NEAREST_INT rounds to nearest even, as torch does.
__attribute__((target("avx2,f16c"))) void mix_f16_f16c(const F16::storage* pt_, const F16::storage* ft_,
                                                       F16::storage* out_, int64_t n, float alpha) {
  const auto* pt = reinterpret_cast<const uint16_t*>(pt_);
  const auto* ft = reinterpret_cast<const uint16_t*>(ft_);
  auto* out = reinterpret_cast<uint16_t*>(out_);
  const __m256 a = _mm256_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 p = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pt + i)));
    const __m256 f = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ft + i)));
    const __m256 y = _mm256_add_ps(p, _mm256_mul_ps(a, _mm256_sub_ps(f, p)));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvtps_ph(y, _MM_FROUND_TO_NEAREST_INT));
  }
  mix_impl<F16>(pt_ + i, ft_ + i, out_ + i, n - i, alpha);
}
#endif

void mix_f16(const F16::storage* pt, const F16::storage* ft, F16::storage* out, int64_t n, float alpha) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool has_f16c = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  if (has_f16c) return mix_f16_f16c(pt, ft, out, n, alpha);
#endif
  mix_impl<F16>(pt, ft, out, n, alpha);
}

TUCO_INLINE void mix(const float* pt, const float* ft, float* out, int64_t n, float alpha) {
  mix_f32(pt, ft, out, n, alpha);
}
TUCO_INLINE void mix(const uint16_t* pt, const uint16_t* ft, uint16_t* out, int64_t n, float alpha) {
  mix_bf16(pt, ft, out, n, alpha);
}
TUCO_INLINE void mix(const F16::storage* pt, const F16::storage* ft, F16::storage* out, int64_t n, float alpha) {
  mix_f16(pt, ft, out, n, alpha);
}

struct Args {
  float alpha;
  bool alpha_one;  // x_{l+1} is a bit-exact copy of out_ft
  bool write_out;  // false when out aliases out_ft and alpha == 1: nothing to write
};

// x_{l+1} for n contiguous elements of ordinary rows.
template <class S>
void update_plain(const S* pt, const S* ft, S* out, int64_t n, const Args& a) {
  if (!a.write_out || n == 0) return;
  if (a.alpha_one) {
    std::memcpy(static_cast<void*>(out), ft, size_t(n) * sizeof(S));
  } else {
    mix(pt, ft, out, n, a.alpha);
  }
}

// One row that accumulates (a last-token row, or any row in all-tokens mode): x_{l+1}, acc += PTC/FTC, and
// when norm4 is given |PTC|_1, |FTC|_1, |acc_ptc|_1, |acc_ftc|_1 of this row (summed in double).
template <class E>
void update_accumulating_row(const typename E::storage* x, const typename E::storage* pt,
                             const typename E::storage* ft, typename E::storage* out, float* acc_p, float* acc_f,
                             int64_t d, const Args& a, float* norm4) {
  double n_ptc = 0, n_ftc = 0, n_acc_p = 0, n_acc_f = 0;
  for (int64_t i = 0; i < d; ++i) {
    const float xv = E::load(x[i]), p = E::load(pt[i]), f = E::load(ft[i]);
    const float ptc = p - xv, ftc = f - p;
    if (a.write_out) {
      if (a.alpha_one) {
        out[i] = ft[i];
      } else {
        const float scaled = a.alpha * ftc;
        out[i] = E::store(p + scaled);
      }
    }
    const float sp = acc_p[i] + ptc, sf = acc_f[i] + ftc;
    acc_p[i] = sp;
    acc_f[i] = sf;
    if (norm4 != nullptr) {
      n_ptc += std::fabs(ptc);
      n_ftc += std::fabs(ftc);
      n_acc_p += std::fabs(sp);
      n_acc_f += std::fabs(sf);
    }
  }
  if (norm4 != nullptr) {
    norm4[0] = float(n_ptc);
    norm4[1] = float(n_ftc);
    norm4[2] = float(n_acc_p);
    norm4[3] = float(n_acc_f);
  }
}

template <class E>
void run(const at::Tensor& x, const at::Tensor& out_pt, const at::Tensor& out_ft, const int64_t* last,
         const at::Tensor& acc_ptc, const at::Tensor& acc_ftc, const at::Tensor& out, float* norms,
         const UpdateShape& s, const Args& a) {
  using S = typename E::storage;
  const S* xp = reinterpret_cast<const S*>(x.const_data_ptr());
  const S* pp = reinterpret_cast<const S*>(out_pt.const_data_ptr());
  const S* fp = reinterpret_cast<const S*>(out_ft.const_data_ptr());
  S* op = reinterpret_cast<S*>(out.mutable_data_ptr());
  float* ap = acc_ptc.mutable_data_ptr<float>();
  float* af = acc_ftc.mutable_data_ptr<float>();
  const int64_t T = s.T, d = s.d, rows = s.B * s.T;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(d, 1));  // ~32K elements per task

  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    int64_t r = begin;
    while (r < end) {
      const int64_t b = r / T;
      const int64_t this_last = b * T + last[b];
      if (s.all_tokens) {  // every row accumulates into its own acc row; norms at the last one
        float* n4 = (norms != nullptr && r == this_last) ? norms + 4 * b : nullptr;
        update_accumulating_row<E>(xp + r * d, pp + r * d, fp + r * d, op + r * d, ap + r * d, af + r * d, d, a, n4);
        ++r;
        continue;
      }
      int64_t next_last = this_last >= r ? this_last : (b + 1 < s.B ? (b + 1) * T + last[b + 1] : end);
      const int64_t stop = std::min(next_last, end);
      update_plain(pp + r * d, fp + r * d, op + r * d, (stop - r) * d, a);
      if (stop < end) {  // stop is a last-token row
        const int64_t lb = stop / T;
        update_accumulating_row<E>(xp + stop * d, pp + stop * d, fp + stop * d, op + stop * d, ap + lb * d,
                                   af + lb * d, d, a, norms != nullptr ? norms + 4 * lb : nullptr);
      }
      r = stop + 1;
    }
  });
}

void fused_update_cpu(const at::Tensor& x, const at::Tensor& out_pt, const at::Tensor& out_ft, double alpha,
                      const at::Tensor& last_idx, const at::Tensor& acc_ptc, const at::Tensor& acc_ftc,
                      const at::Tensor& out, const std::optional<at::Tensor>& norms) {
  const UpdateShape s =
      check_fused_update_args(x, out_pt, out_ft, last_idx, acc_ptc, acc_ftc, out, norms, at::DeviceType::CPU);
  const int64_t* last = last_idx.const_data_ptr<int64_t>();
  for (int64_t b = 0; b < s.B; ++b) {
    TORCH_CHECK(last[b] >= 0 && last[b] < s.T, "tuco.fused_update: last_idx[", b, "] = ", last[b],
                " is outside [0, ", s.T, ")");
  }
  const Args a{float(alpha), alpha == 1.0, !(alpha == 1.0 && out.data_ptr() == out_ft.data_ptr())};
  float* n = norms.has_value() ? norms->mutable_data_ptr<float>() : nullptr;
  switch (x.scalar_type()) {
    case at::kFloat: run<F32>(x, out_pt, out_ft, last, acc_ptc, acc_ftc, out, n, s, a); break;
    case at::kBFloat16: run<BF16>(x, out_pt, out_ft, last, acc_ptc, acc_ftc, out, n, s, a); break;
    case at::kHalf: run<F16>(x, out_pt, out_ft, last, acc_ptc, acc_ftc, out, n, s, a); break;
    default: TORCH_CHECK(false, "tuco.fused_update: unsupported dtype ", x.scalar_type());
  }
}

}  // namespace
}  // namespace tuco

TORCH_LIBRARY_IMPL(tuco, CPU, m) { m.impl("fused_update", &tuco::fused_update_cpu); }
