// The op schemas of the `tuco` library. Implementations register per device elsewhere:
// fused_update_cpu.cpp (CPU) and fused_update_cuda.cu (CUDA). The Triton op is registered from Python
// (tuco_kernels/ops/fused_update_triton.py) into the same namespace.
#include <string>

#include <torch/library.h>

#ifndef TUCO_CSRC_HASH
#define TUCO_CSRC_HASH unknown
#endif
#define TUCO_STRINGIFY_(x) #x
#define TUCO_STRINGIFY(x) TUCO_STRINGIFY_(x)

namespace tuco {

// The sources this binary was compiled from (so a stale build is never used silently) and whether it
// holds the CUDA implementation: "csrc=<hash> cuda=<0|1>".
std::string build_info() {
#ifdef TUCO_WITH_CUDA
  const char* cuda = " cuda=1";
#else
  const char* cuda = " cuda=0";
#endif
  return std::string("csrc=") + TUCO_STRINGIFY(TUCO_CSRC_HASH) + cuda;
}

}  // namespace tuco

TORCH_LIBRARY(tuco, m) {
  // x_{l+1} -> out; acc_ptc/acc_ftc (fp32) updated in place; norms (fp32 [B, 4]) written when given.
  // Math and contract: tuco_kernels/ops/reference.py.
  m.def(
      "fused_update(Tensor x, Tensor out_pt, Tensor out_ft, float alpha, Tensor last_idx, "
      "Tensor(a!) acc_ptc, Tensor(b!) acc_ftc, Tensor(c!) out, Tensor(d!)? norms) -> ()");
  m.def("build_info() -> str", &tuco::build_info);
}
