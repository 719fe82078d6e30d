"""``tuco info``: versions, the device, the compiled ops and which kernel backends can run here (and why not)."""

from __future__ import annotations

import platform

from .. import ops
from .._version import __version__


def cmd_info(_args) -> int:
    import torch
    import transformers

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    cuda = (torch.cuda.get_device_name(0) if torch.cuda.is_available() else
            f"not available (torch built {'with CUDA ' + torch.version.cuda if torch.version.cuda else 'without CUDA'})")
    lines = [("tuco_kernels", __version__), ("python", platform.python_version()), ("torch", torch.__version__),
             ("triton", triton_version), ("transformers", transformers.__version__), ("cuda", cuda),
             ("families", "any decoder-only causal LM whose chain is proven at load (docs/families.md: 147 of 189 model types)")]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lines.append(("compiled ops", ops.extension.load().how))
    lines += [(f"backend {name}", status) for name, status in ops.backend_status(device).items()]
    lines.append((f"default on {device}", ops.resolve_backend(None, device)))
    width = max(len(k) for k, _ in lines)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in lines))
    return 0
