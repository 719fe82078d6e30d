// tuco::fused_update on CUDA: one pass over memory per decoder layer.
//
// Per layer l, with x = x_l, out_pt = x_l + f_PT(x_l), out_ft = x_l + f_FT(x_l) (shape [B, T, d]):
//     FTC = out_ft - out_pt,   PTC = out_pt - x,   x_{l+1} = out_pt + alpha * FTC   (= out_ft when alpha == 1)
//     acc_ptc[b] += PTC[b, last_b],  acc_ftc[b] += FTC[b, last_b]                    (fp32)
// plus, on each last-token row, the L1 norms of PTC, FTC and of the two running sums.
//
// Byte count: an ordinary row reads out_pt and out_ft and writes x_{l+1}: 3 accesses per element, with
// 16-byte vector loads and stores where d and the pointers allow. x and the accumulators are read only on
// the B last-token rows (all rows in all-tokens mode). One thread block per row, so a last-token row's
// norms are reduced inside its block (warp shuffles, then shared memory) without atomics.
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

// One block per row of [B*T, d]; VEC elements per thread per step (16-byte accesses when VEC > 1).
template <typename T, int VEC>
__global__ void fused_update_kernel(const T* __restrict__ x, const T* pt, const T* ft, T* out,
                                    const int64_t* __restrict__ last, float* acc_ptc, float* acc_ftc,
                                    float* norms, Params p) {
  using E = Elem<T>;
  using P = Pack<T, VEC>;
  const int64_t row = blockIdx.x;
  const int64_t b = row / p.T;
  const bool is_last = (row - b * p.T) == last[b];  // uniform over the block
  const bool accumulate = p.all_tokens || is_last;
  const int64_t base = row * p.d;
  const int64_t acc_base = p.all_tokens ? base : b * p.d;
  float n[4] = {0.f, 0.f, 0.f, 0.f};
  for (int64_t c = int64_t(threadIdx.x) * VEC; c < p.d; c += int64_t(blockDim.x) * VEC) {
    const P pv = *reinterpret_cast<const P*>(pt + base + c);
    const P fv = *reinterpret_cast<const P*>(ft + base + c);
    P xv;
    if (accumulate) xv = *reinterpret_cast<const P*>(x + base + c);  // before the store: out may alias x
    P ov;
#pragma unroll
    for (int k = 0; k < VEC; ++k) {
      const float pf = E::load(pv.v[k]);
      const float ftc = __fsub_rn(E::load(fv.v[k]), pf);
      ov.v[k] = p.alpha_one ? fv.v[k] : E::store(__fadd_rn(pf, __fmul_rn(p.alpha, ftc)));
      if (accumulate) {
        const float ptc = __fsub_rn(pf, E::load(xv.v[k]));
        const float sp = __fadd_rn(acc_ptc[acc_base + c + k], ptc);
        const float sf = __fadd_rn(acc_ftc[acc_base + c + k], ftc);
        acc_ptc[acc_base + c + k] = sp;
        acc_ftc[acc_base + c + k] = sf;
        n[0] += fabsf(ptc);
        n[1] += fabsf(ftc);
        n[2] += fabsf(sp);
        n[3] += fabsf(sf);
      }
    }
    if (p.write_out) *reinterpret_cast<P*>(out + base + c) = ov;
  }
  if (norms != nullptr && is_last) {
    block_sum4(n);
    if (threadIdx.x == 0)
      for (int k = 0; k < 4; ++k) norms[b * 4 + k] = n[k];
  }
}

template <typename T>
void launch(const at::Tensor& x, const at::Tensor& out_pt, const at::Tensor& out_ft, const at::Tensor& last_idx,
            const at::Tensor& acc_ptc, const at::Tensor& acc_ftc, const at::Tensor& out, float* norms,
            const UpdateShape& s, const Params& p, cudaStream_t stream) {
  const T* xp = reinterpret_cast<const T*>(x.const_data_ptr());
  const T* pp = reinterpret_cast<const T*>(out_pt.const_data_ptr());
  const T* fp = reinterpret_cast<const T*>(out_ft.const_data_ptr());
  T* op = reinterpret_cast<T*>(out.mutable_data_ptr());
  constexpr int kVec = 16 / sizeof(T);
  const bool aligned = s.d % kVec == 0 &&
                       [&] {
                         for (const void* ptr : {static_cast<const void*>(xp), static_cast<const void*>(pp),
                                                 static_cast<const void*>(fp), static_cast<const void*>(op)})
                           if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) return false;
                         return true;
                       }();
  const int vec = aligned ? kVec : 1;
  const int64_t steps = (s.d + vec - 1) / vec;
  const int threads = int(std::min<int64_t>(kMaxThreads, std::max<int64_t>(32, (steps + 31) / 32 * 32)));
  const dim3 grid(static_cast<unsigned>(s.B * s.T));
  const int64_t* lp = last_idx.const_data_ptr<int64_t>();
  float* ap = acc_ptc.mutable_data_ptr<float>();
  float* af = acc_ftc.mutable_data_ptr<float>();
  if (aligned) {
    fused_update_kernel<T, kVec><<<grid, threads, 0, stream>>>(xp, pp, fp, op, lp, ap, af, norms, p);
  } else {
    fused_update_kernel<T, 1><<<grid, threads, 0, stream>>>(xp, pp, fp, op, lp, ap, af, norms, p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void fused_update_cuda(const at::Tensor& x, const at::Tensor& out_pt, const at::Tensor& out_ft, double alpha,
                       const at::Tensor& last_idx, const at::Tensor& acc_ptc, const at::Tensor& acc_ftc,
                       const at::Tensor& out, const std::optional<at::Tensor>& norms) {
  const UpdateShape s =
      check_fused_update_args(x, out_pt, out_ft, last_idx, acc_ptc, acc_ftc, out, norms, at::DeviceType::CUDA);
  if (s.B * s.T == 0 || s.d == 0) return;
  TORCH_CHECK(s.B * s.T <= INT32_MAX, "tuco.fused_update: more than 2^31-1 rows");
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
