// Argument checks shared by the CPU and CUDA implementations of tuco::fused_update. The Python dispatch
// (tuco_kernels/ops/__init__.py) checks the same contract first; these guard direct torch.ops.tuco calls.
#pragma once

#include <optional>

#include <ATen/ATen.h>

namespace tuco {

struct UpdateShape {
  int64_t B, T, d;
  bool all_tokens;  // accumulators [B, T, d]: every position accumulates (token maps)
};

inline UpdateShape check_fused_update_args(const at::Tensor& x, const at::Tensor& out_pt, const at::Tensor& out_ft,
                                           const at::Tensor& last_idx, const at::Tensor& acc_ptc,
                                           const at::Tensor& acc_ftc, const at::Tensor& out,
                                           const std::optional<at::Tensor>& norms, at::DeviceType device) {
  TORCH_CHECK(x.dim() == 3, "tuco.fused_update: x must be [B, T, d], got ", x.sizes());
  TORCH_CHECK(out_pt.sizes() == x.sizes() && out_ft.sizes() == x.sizes() && out.sizes() == x.sizes(),
              "tuco.fused_update: x, out_pt, out_ft, out must share one shape; got ", x.sizes(), ", ",
              out_pt.sizes(), ", ", out_ft.sizes(), ", ", out.sizes());
  const auto dt = x.scalar_type();
  TORCH_CHECK(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf,
              "tuco.fused_update: dtype must be float32, bfloat16 or float16, got ", dt);
  TORCH_CHECK(out_pt.scalar_type() == dt && out_ft.scalar_type() == dt && out.scalar_type() == dt,
              "tuco.fused_update: x, out_pt, out_ft, out must share one dtype");
  const int64_t B = x.size(0), T = x.size(1), d = x.size(2);
  TORCH_CHECK(last_idx.scalar_type() == at::kLong && last_idx.dim() == 1 && last_idx.size(0) == B,
              "tuco.fused_update: last_idx must be int64 [", B, "], got ", last_idx.scalar_type(), " ",
              last_idx.sizes());
  const bool all_tokens = acc_ptc.dim() == 3;
  for (const at::Tensor* acc : {&acc_ptc, &acc_ftc}) {
    TORCH_CHECK(acc->scalar_type() == at::kFloat, "tuco.fused_update: accumulators must be float32");
    TORCH_CHECK(all_tokens ? acc->sizes() == x.sizes() : (acc->dim() == 2 && acc->size(0) == B && acc->size(1) == d),
                "tuco.fused_update: accumulators must be [B, d] or [B, T, d] (both alike), got ", acc->sizes());
  }
  if (norms.has_value()) {
    TORCH_CHECK(norms->scalar_type() == at::kFloat && norms->dim() == 2 && norms->size(0) == B && norms->size(1) == 4,
                "tuco.fused_update: norms must be float32 [", B, ", 4], got ", norms->sizes());
    TORCH_CHECK(norms->is_contiguous(), "tuco.fused_update: norms must be contiguous");
  }
  for (const at::Tensor* t : {&x, &out_pt, &out_ft, &out, &acc_ptc, &acc_ftc, &last_idx}) {
    TORCH_CHECK(t->is_contiguous(), "tuco.fused_update: all tensors must be contiguous");
    TORCH_CHECK(t->device().type() == device && t->device() == x.device(),
                "tuco.fused_update: all tensors must be on ", x.device());
  }
  if (norms.has_value()) TORCH_CHECK(norms->device() == x.device(), "tuco.fused_update: norms on the wrong device");
  return {B, T, d, all_tokens};
}

}  // namespace tuco
