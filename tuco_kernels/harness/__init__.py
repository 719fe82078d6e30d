"""The α-steered pair in lm-evaluation-harness (an optional extra: ``pip install tuco_kernels[eval]``).

lm.py        ``LMEvalModel``: lm-eval's ``hf`` backend with the α-model's computation (resident or streamed)
loglik.py    continuation log-probabilities through the engine, requests scheduled layer-major (streamed pairs)
decode.py    generation for ``generate_until`` on a streamed pair (the steered sequence recomputed per step)

Nothing here imports lm-eval until it is used, so ``import tuco_kernels`` never needs it and never registers
anything in lm-eval's model registry.
"""

from __future__ import annotations

from ..errors import TucoError

INSTALL_HINT = "lm-eval is not installed; install the eval extra: pip install 'tuco_kernels[eval]' (or lm-eval)"


def require_lm_eval() -> None:
    """Raise a one-line :class:`TucoError` saying how to install lm-eval when it is missing."""
    try:
        import lm_eval  # noqa: F401
    except ImportError as exc:
        raise TucoError(f"{INSTALL_HINT} ({exc})") from None


def __getattr__(name: str):
    if name == "LMEvalModel":
        require_lm_eval()
        from .lm import LMEvalModel

        return LMEvalModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["LMEvalModel", "require_lm_eval", "INSTALL_HINT"]
