"""tuco_kernels: exact, fast TuCo (Tuning Contribution; Nuti, Franzmeyer, Henriques, ICML 2025).

For a fine-tuned LLM and its pre-trained base, each layer's update on the fine-tuned residual stream
x_l splits into PTC_l = f_PT(x_l) and FTC_l = f_FT(x_l) − f_PT(x_l); at the last token
TuCo = |Σ_l FTC_l|₁ / (|Σ_l PTC_l|₁ + |Σ_l FTC_l|₁). Scaling FTC by α steers the model.

    >>> import tuco_kernels as tk
    >>> pair = tk.load_pair("path/to/base", "path/to/chat")   # or tk.load_pair(): the default gemma-3-270m pair
    >>> tk.score(pair, ["Hello!"], chat=True).tuco
"""

from . import default_pair
from .attach import attach
from .errors import IncompatiblePairError, TucoError, UnsupportedModelError
from .families import SUPPORTED as SUPPORTED_FAMILIES
from .pair import ModelPair, load_pair
from .result import TuCoResult
from .score import score
from .steer import generate, steer
from .templates import PAPER_TEMPLATES, use_paper_template

__version__ = "0.1.0"
__all__ = ["attach", "generate", "load_pair", "score", "steer", "ModelPair", "TuCoResult", "TucoError",
           "IncompatiblePairError", "UnsupportedModelError", "SUPPORTED_FAMILIES", "PAPER_TEMPLATES", "use_paper_template", "default_pair", "__version__"]
