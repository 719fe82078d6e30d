"""tuco_kernels: exact, fast TuCo (Tuning Contribution; Nuti, Franzmeyer, Henriques, ICML 2025).

For a fine-tuned LLM and its pre-trained base, each layer's update on the fine-tuned residual stream
x_l splits into PTC_l = f_PT(x_l) and FTC_l = f_FT(x_l) − f_PT(x_l); at the last token
TuCo = |Σ_l FTC_l|₁ / (|Σ_l PTC_l|₁ + |Σ_l FTC_l|₁) (docs/math.md). Scaling FTC by α steers the model.

    >>> import tuco_kernels as tk
    >>> pair = tk.load_pair("path/to/base", "path/to/chat")   # or tk.load_pair(): the default gemma-3-270m pair
    >>> tk.score(pair, ["Hello!"], chat=True).tuco
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

from ._version import __version__

#: every public name and the module that defines it: imported on first use, so that ``import tuco_kernels`` (and
#: ``tuco --version``) does not import torch
_EXPORTS = {
    "attach": ".attach", "prove_chain": ".core.chain", "ModelPair": ".core.pair", "ResidentPair": ".core.pair",
    "PairSet": ".core.pair_set",
    "DatasetRun": ".dataset", "PlanMismatch": ".dataset", "RankLost": ".dataset", "RunAborted": ".dataset",
    "ShardsFailed": ".dataset", "score_dataset": ".dataset",
    "DeviceMemoryError": ".errors", "IncompatiblePairError": ".errors", "ModelError": ".errors",
    "OptionError": ".errors", "OutputError": ".errors", "PromptError": ".errors", "TucoError": ".errors",
    "UnsupportedModelError": ".errors",
    "generate": ".generate", "default_pair": ".models", "load_pair": ".models.load",
    "StreamedPair": ".offload.streamed_pair",
    "read_prompts": ".prompts.sources", "PAPER_TEMPLATES": ".prompts.templates",
    "TemplateMismatchWarning": ".prompts.templates", "use_paper_template": ".prompts.templates",
    "RunInfo": ".result", "TuCoResult": ".result", "score": ".score", "next_token_logprobs": ".logprobs",
    "LMEvalModel": ".harness",   # lm-eval, an optional extra, is imported only when this is used
}
_SUBPACKAGES = {"harness", "ops", "core", "models", "offload", "prompts", "dataset", "report", "cli"}

if TYPE_CHECKING:   # what static tools and editors see
    from .attach import attach
    from .core.chain import prove_chain
    from .core.pair import ModelPair, ResidentPair
    from .core.pair_set import PairSet
    from .dataset import DatasetRun, PlanMismatch, RankLost, RunAborted, ShardsFailed, score_dataset
    from .errors import (DeviceMemoryError, IncompatiblePairError, ModelError, OptionError, OutputError,
                         PromptError, TucoError, UnsupportedModelError)
    from .generate import generate
    from .harness import LMEvalModel
    from .logprobs import next_token_logprobs
    from .models import default_pair
    from .models.load import load_pair
    from .offload.streamed_pair import StreamedPair
    from .prompts.sources import read_prompts
    from .prompts.templates import PAPER_TEMPLATES, TemplateMismatchWarning, use_paper_template
    from .result import RunInfo, TuCoResult
    from .score import score


def __getattr__(name: str):
    """A public name, imported from its module on first use. ``tk.steer``, the old name of
    :func:`next_token_logprobs` (``tuco steer`` generates text; this returns log-probabilities), still works for a
    release, with a DeprecationWarning."""
    if name == "steer":
        import warnings

        warnings.warn("tk.steer is now tk.next_token_logprobs (tk.generate generates, as `tuco steer` does); the old "
                      "name goes in the next release", DeprecationWarning, stacklevel=2)
        return __getattr__("next_token_logprobs")
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted({*globals(), *_EXPORTS, *_SUBPACKAGES})


class _Package(types.ModuleType):
    """Importing the submodule ``tuco_kernels.score`` (``.generate``, ``.attach``) sets the package attribute of
    that name to the module; ``tk.score`` stays the function, as an eager ``from .score import score`` left it."""

    def __setattr__(self, name, value):
        if (name in _EXPORTS and isinstance(value, types.ModuleType)
                and value.__name__ == f"{self.__name__}.{name}"):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__all__ = ["attach", "generate", "load_pair", "score", "score_dataset", "next_token_logprobs", "DatasetRun",
           "ModelPair", "ResidentPair", "PairSet", "StreamedPair", "TuCoResult", "RunInfo", "prove_chain",
           "read_prompts",
           "PAPER_TEMPLATES", "use_paper_template", "default_pair", "__version__",
           # every exception the package raises on purpose (all TucoError, a ValueError) and its one warning
           "TucoError", "OptionError", "PromptError", "OutputError", "ModelError", "IncompatiblePairError",
           "UnsupportedModelError", "DeviceMemoryError", "PlanMismatch", "ShardsFailed", "RankLost", "RunAborted",
           "TemplateMismatchWarning"]
