"""tuco_kernels: exact, fast TuCo (Tuning Contribution; Nuti, Franzmeyer, Henriques, ICML 2025).

For a fine-tuned LLM and its pre-trained base, each layer's update on the fine-tuned residual stream
x_l splits into PTC_l = f_PT(x_l) and FTC_l = f_FT(x_l) − f_PT(x_l); at the last token
TuCo = |Σ_l FTC_l|₁ / (|Σ_l PTC_l|₁ + |Σ_l FTC_l|₁) (docs/math.md). Scaling FTC by α steers the model.

    >>> import tuco_kernels as tk
    >>> pair = tk.load_pair("path/to/base", "path/to/chat")   # or tk.load_pair(): the default gemma-3-270m pair
    >>> tk.score(pair, ["Hello!"], chat=True).tuco
"""

from ._version import __version__
from .attach import attach
from .core.chain import prove_chain
from .core.pair import ModelPair, ResidentPair
from .dataset import DatasetRun, PlanMismatch, ShardsFailed, score_dataset
from .errors import IncompatiblePairError, TucoError, UnsupportedModelError
from .generate import generate
from .models import default_pair
from . import harness
from .models.load import load_pair
from .offload.streamed import StreamedPair
from .prompts.sources import read_prompts
from .prompts.templates import PAPER_TEMPLATES, use_paper_template
from .result import RunInfo, TuCoResult
from .score import score
from .steer import steer


def __getattr__(name: str):
    """``tk.LMEvalModel`` (lm-eval, an optional extra) is imported when first used, never by ``import tuco_kernels``."""
    if name == "LMEvalModel":
        return harness.LMEvalModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["attach", "generate", "load_pair", "score", "score_dataset", "steer", "DatasetRun", "PlanMismatch",
           "ShardsFailed", "ModelPair", "ResidentPair", "StreamedPair",
           "TuCoResult", "RunInfo", "TucoError", "IncompatiblePairError", "UnsupportedModelError",
           "prove_chain", "read_prompts", "PAPER_TEMPLATES", "use_paper_template", "default_pair", "__version__"]
