"""The default pair: google/gemma-3-270m (pre-trained) and the project's own chat LoRA of it.

The base comes from pinned PyPI wheels (a Q4_K_M GGUF, dequantized once into an HF folder in the cache; see
:mod:`tuco_kernels.assets`). The fine-tuned partner is a LoRA adapter shipped inside this package
(``tuco_kernels/models/data/gemma-3-270m-chat-lora``: adapter, training config, data manifest, Gemma terms), trained
by ``python -m tuco_research.train_chat_lora``. Both sides start from the same dequantized tensors, so every difference
between them is the fine-tuning. Gemma is provided under and subject to the Gemma Terms of Use
(https://ai.google.dev/gemma/terms); the adapter is a Gemma derivative and carries those terms.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TucoError
from . import assets

ADAPTER_DIR = Path(__file__).resolve().parent / "data" / "gemma-3-270m-chat-lora"
CHAT_TEMPLATE = ADAPTER_DIR / "chat_template.jinja"
NAME = "gemma-3-270m + tuco chat LoRA"


def chat_tokenizer(base_dir: Path | None = None):
    """The base model's tokenizer with the Gemma chat template (``<start_of_turn>user … <start_of_turn>model``)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_dir or assets.base_model_dir())
    tokenizer.chat_template = CHAT_TEMPLATE.read_text(encoding="utf-8")
    tokenizer.display_name = f"the default pair ({NAME})"   # how a run names it (prompts.tokenize.rendering)
    return tokenizer


def paths() -> tuple[Path, Path]:
    """(pre-trained HF folder, adapter folder); fetches and converts the base on first use."""
    if not (ADAPTER_DIR / "adapter_model.safetensors").is_file():
        raise TucoError(f"{ADAPTER_DIR}: the default pair's adapter is missing; run python -m tuco_research.train_chat_lora")
    return assets.base_model_dir(), ADAPTER_DIR
