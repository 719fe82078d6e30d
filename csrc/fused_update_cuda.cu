// tuco::fused_update on CUDA: one pass over memory per decoder layer (the math: docs/math.md §4).
//
// Per layer l, with x = x_l, out_pt = x_l + f_PT(x_l), out_ft = x_l + f_FT(x_l) (shape [B, T, d]):
//     FTC = out_ft - out_pt,   PTC = out_pt - x,   x_{l+1} = out_pt + alpha * FTC   (= out_ft when alpha == 1)
//     acc_ptc[b] += PTC[b, last_b],  acc_ftc[b] += FTC[b, last_b]                    (fp32)
// plus, on each last-token row, the L1 norms of PTC, FTC and of the two running sums.
//
// Two kernels, split by the rows they touch (as the Triton backend): accumulate_kernel, one block per
// last-token row (every row in all-tokens mode), reads x, out_pt, out_ft there, updates the accumulators and
// reduces the row's norms inside its block (warp shuffles, then shared memory), without atomics; then
// stream_kernel writes x_{l+1} for every element: 2 loads and 1 store per element, 16-byte vector accesses
// where the size and pointers allow, a flat grid-stride loop with no per-row logic. No pointer is declared
// __restrict__: `out` may alias `x` (the engine updates the stream in place) or `out_ft`.
//
// Exactness: fp32 arithmetic with explicit round-to-nearest intrinsics (__fmul_rn, __fadd_rn, __fsub_rn are
// never contracted into FMAs), fp32 -> bf16/fp16 with round-to-nearest-even: bit-identical to the eager
// reference, which rounds alpha * FTC before the add.
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "fused_update_checks.h"

namespace tuco {
namespace {

template <typename T>
struct Elem;
template <>
struct Elem<float> {
  __device__ static float load(float v) { return v; }
  __device__ static float store(float v) { return v; }
};
template <>
struct Elem<__nv_bfloat16> {
  __device__ static float load(__nv_bfloat16 v) { return __bfloat162float(v); }
  __device__ static __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};
template <>
struct Elem<__half> {
  __device__ static float load(__half v) { return __half2float(v); }
  __device__ static __half store(float v) { return __float2half_rn(v); }
};

template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

struct Params {
  float alpha;
  int64_t T;
  int64_t d;
  bool alpha_one;
  bool write_out;
  bool all_tokens;
};

constexpr int kMaxThreads = 512;

__device__ inline float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum n[0..3] over the block; thread 0 gets the totals.
__device__ inline void block_sum4(float n[4]) {
  __shared__ float partial[kMaxThreads / 32][4];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
  for (int k = 0; k < 4; ++k) n[k] = warp_sum(n[k]);
  if (lane == 0)
    for (int k = 0; k < 4; ++k) partial[warp][k] = n[k];
  __syncthreads();
  if (warp == 0) {
    for (int k = 0; k < 4; ++k) n[k] = lane < warps ? partial[lane][k] : 0.f;
    for (int k = 0; k < 4; ++k) n[k] = warp_sum(n[k]);
  }
}

// ---- the accumulate kernel: one block per accumulated row (B last-token rows, or all rows) ----
// Reads x, out_pt, out_ft on that row, adds PTC and FTC into the fp32 accumulators and, on a last-token row,
// reduces the four L1 norms inside the block. It runs before the stream kernel, on the same stream: `out` may be
// `x` itself, and x must be read before it is overwritten.
template <typename T>
__global__ void accumulate_kernel(const T* x, const T* pt, const T* ft, const int64_t* __restrict__ last,
                                  float* acc_ptc, float* acc_ftc, float* norms, Params p) {
  using E = Elem<T>;
  const int64_t r = blockIdx.x;
  int64_t b, row;
  bool is_last;
  if (p.all_tokens) {
    b = r / p.T;
    row = r;
    is_last = (r - b * p.T) == last[b];  // uniform over the block
  } else {
    b = r;
    row = b * p.T + last[b];
    is_last = true;
  }
  const int64_t base = row * p.d;
  const int64_t acc_base = p.all_tokens ? base : b * p.d;
  float n[4] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t c = threadIdx.x; c < p.d; c += blockDim.x) {
    const float pf = E::load(pt[base + c]);
    const float ptc = __fsub_rn(pf, E::load(x[base + c]));
    const float ftc = __fsub_rn(E::load(ft[base + c]), pf);
    const float sp = __fadd_rn(acc_ptc[acc_base + c], ptc);
    const float sf = __fadd_rn(acc_ftc[acc_base + c], ftc);
    acc_ptc[acc_base + c] = sp;
    acc_ftc[acc_base + c] = sf;
    n[0] += fabsf(ptc);
    n[1] += fabsf(ftc);
    n[2] += fabsf(sp);
    n[3] += fabsf(sf);
  }
  if (norms != nullptr && is_last) {
    block_sum4(n);
    if (threadIdx.x == 0)
      for (int k = 0; k < 4; ++k) norms[b * 4 + k] = n[k];
  }
}

// ---- the stream kernel: out = out_pt + alpha * (out_ft - out_pt) over all B*T*d elements ----
// A flat grid-stride loop with no per-row logic: VEC elements per access (16 bytes when aligned), UNROLL
// independent accesses per thread in flight before the first use. 2 loads and 1 store per element.
constexpr int kStreamThreads = 256;
constexpr int kUnroll = 4;

template <typename T, int VEC>
__global__ void __launch_bounds__(kStreamThreads) stream_kernel(const T* pt, const T* ft, T* out, int64_t n_packs,
                                                                 float alpha, bool alpha_one) {
  using E = Elem<T>;
  using P = Pack<T, VEC>;
  const P* pp = reinterpret_cast<const P*>(pt);
  const P* fp = reinterpret_cast<const P*>(ft);
  P* op = reinterpret_cast<P*>(out);
  const int64_t stride = int64_t(gridDim.x) * kStreamThreads * kUnroll;
  for (int64_t start = int64_t(blockIdx.x) * kStreamThreads * kUnroll + threadIdx.x; start < n_packs;
       start += stride) {
    P pv[kUnroll], fv[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = start + int64_t(u) * kStreamThreads;
      if (i < n_packs) {
        fv[u] = fp[i];
        if (!alpha_one) pv[u] = pp[i];
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t i = start + int64_t(u) * kStreamThreads;
      if (i >= n_packs) break;
      if (alpha_one) {
        op[i] = fv[u];
        continue;
      }
      P ov;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float pf = E::load(pv[u].v[k]);
        ov.v[k] = E::store(__fadd_rn(pf, __fmul_rn(alpha, __fsub_rn(E::load(fv[u].v[k]), pf))));
      }
      op[i] = ov;
    }
  }
}

int stream_blocks(int64_t n_packs) {
  static int sms_of[64] = {0};  // multiprocessors per device, read once per device
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  int& sms = sms_of[device & 63];
  if (sms == 0) C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t needed = (n_packs + int64_t(kStreamThreads) * kUnroll - 1) / (int64_t(kStreamThreads) * kUnroll);
  return int(std::max<int64_t>(1, std::min<int64_t>(needed, int64_t(sms) * 8)));  // 8 resident blocks per SM
}

template <typename T>
void launch(const at::Tensor& x, const at::Tensor& out_pt, const at::Tensor& out_ft, const at::Tensor& last_idx,
            const at::Tensor& acc_ptc, const at::Tensor& acc_ftc, const at::Tensor& out, float* norms,
            const UpdateShape& s, const Params& p, cudaStream_t stream) {
  const T* xp = reinterpret_cast<const T*>(x.const_data_ptr());
  const T* pp = reinterpret_cast<const T*>(out_pt.const_data_ptr());
  const T* fp = reinterpret_cast<const T*>(out_ft.const_data_ptr());
  T* op = reinterpret_cast<T*>(out.mutable_data_ptr());
  const int64_t rows = s.all_tokens ? s.B * s.T : s.B;
  const int acc_threads = int(std::min<int64_t>(kMaxThreads, std::max<int64_t>(32, (s.d + 31) / 32 * 32)));
  accumulate_kernel<T><<<dim3(static_cast<unsigned>(rows)), acc_threads, 0, stream>>>(
      xp, pp, fp, last_idx.const_data_ptr<int64_t>(), acc_ptc.mutable_data_ptr<float>(),
      acc_ftc.mutable_data_ptr<float>(), norms, p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (!p.write_out) return;
  const int64_t n = s.B * s.T * s.d;
  constexpr int kVec = 16 / sizeof(T);
  bool aligned = n % kVec == 0;
  for (const void* ptr : {static_cast<const void*>(pp), static_cast<const void*>(fp), static_cast<const void*>(op)})
    aligned = aligned && reinterpret_cast<uintptr_t>(ptr) % 16 == 0;
  if (aligned) {
    stream_kernel<T, kVec><<<stream_blocks(n / kVec), kStreamThreads, 0, stream>>>(pp, fp, op, n / kVec, p.alpha,
                                                                                    p.alpha_one);
  } else {
    stream_kernel<T, 1><<<stream_blocks(n), kStreamThreads, 0, stream>>>(pp, fp, op, n, p.alpha, p.alpha_one);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void fused_update_cuda(const at::Tensor& x, const at::Tensor& out_pt, const at::Tensor& out_ft, double alpha,
                       const at::Tensor& last_idx, const at::Tensor& acc_ptc, const at::Tensor& acc_ftc,
                       const at::Tensor& out, const std::optional<at::Tensor>& norms) {
  const UpdateShape s =
      check_fused_update_args(x, out_pt, out_ft, last_idx, acc_ptc, acc_ftc, out, norms, at::DeviceType::CUDA);
  if (s.B * s.T == 0 || s.d == 0) return;
  TORCH_CHECK((s.all_tokens ? s.B * s.T : s.B) <= INT32_MAX, "tuco.fused_update: more than 2^31-1 rows");
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool alpha_one = alpha == 1.0;
  const Params p{float(alpha), s.T, s.d, alpha_one, !(alpha_one && out.data_ptr() == out_ft.data_ptr()),
                 s.all_tokens};
  float* n = norms.has_value() ? norms->mutable_data_ptr<float>() : nullptr;
  switch (x.scalar_type()) {
    case at::kFloat: launch<float>(x, out_pt, out_ft, last_idx, acc_ptc, acc_ftc, out, n, s, p, stream); break;
    case at::kBFloat16:
      launch<__nv_bfloat16>(x, out_pt, out_ft, last_idx, acc_ptc, acc_ftc, out, n, s, p, stream);
      break;
    case at::kHalf: launch<__half>(x, out_pt, out_ft, last_idx, acc_ptc, acc_ftc, out, n, s, p, stream); break;
    default: TORCH_CHECK(false, "tuco.fused_update: unsupported dtype ", x.scalar_type());
  }
}

}  // namespace
}  // namespace tuco

TORCH_LIBRARY_IMPL(tuco, CUDA, m) { m.impl("fused_update", &tuco::fused_update_cuda); }
