"""Hub ids (``org/name[@revision]``) resolved offline from a real Hugging Face cache that the test lays out.

The cache is huggingface_hub's own structure (``models--org--name/{blobs,refs/main,snapshots/<commit>}``, snapshot
files as relative symlinks into blobs/), and the resolver is huggingface_hub's ``snapshot_download`` with
``HF_HUB_OFFLINE=1`` (set by conftest): nothing here mocks the resolution.
"""

import json

import pytest
from huggingface_hub import constants

import tuco_kernels as tk
from tuco_kernels.cli import main
from tuco_kernels.errors import TucoError
from tuco_kernels.models.hub import HubModel, is_hub_id
from tuco_kernels.result import run_metadata

from tests.fixtures.hub_cache import cache_folder
from tests.fixtures.pairs import PROMPTS, save_pair

COMMITS = {"pt": "1" * 40, "ft": "2" * 40}


@pytest.fixture(scope="module")
def saved_pair(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("hub-src")
    save_pair(root, tokenizer)
    return root


@pytest.fixture
def hub_cache(tmp_path, saved_pair, monkeypatch):
    cache = tmp_path / "hub"
    for side in ("pt", "ft"):
        cache_folder(cache, f"tiny-org/llama-{side}", COMMITS[side], saved_pair / side)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    assert constants.HF_HUB_OFFLINE, "conftest sets HF_HUB_OFFLINE=1 before huggingface_hub is imported"
    return cache


def test_hub_ids_score_like_the_local_paths_and_record_the_revision(hub_cache, saved_pair):
    pair = tk.load_pair("tiny-org/llama-pt", "tiny-org/llama-ft")
    local = tk.load_pair(saved_pair / "pt", saved_pair / "ft")
    assert tk.score(pair, PROMPTS, chat=False).tuco.tolist() == tk.score(local, PROMPTS, chat=False).tuco.tolist()
    assert pair.sources["pretrained"] == HubModel("tiny-org/llama-pt", COMMITS["pt"],
                                                  str(hub_cache / "models--tiny-org--llama-pt" / "snapshots"
                                                      / COMMITS["pt"]))
    models = run_metadata(pair)["models"]
    assert models["finetuned"]["id"] == "tiny-org/llama-ft" and models["finetuned"]["revision"] == COMMITS["ft"]


def test_pinned_revision(hub_cache):
    pair = tk.load_pair(f"tiny-org/llama-pt@{COMMITS['pt']}", "tiny-org/llama-ft")
    assert pair.sources["pretrained"].revision == COMMITS["pt"]
    other = "3" * 40
    with pytest.raises(TucoError, match=f"tiny-org/llama-pt@{other}: not a local path; as a Hugging Face hub id, "
                                        f"it is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"):
        tk.load_pair(f"tiny-org/llama-pt@{other}", "tiny-org/llama-ft")


def test_unknown_id_is_named(hub_cache):
    with pytest.raises(TucoError, match="nobody/nothing: not a local path; as a Hugging Face hub id"):
        tk.load_pair("nobody/nothing", "tiny-org/llama-ft")


def test_cli_takes_hub_ids(hub_cache, tmp_path, capsys):
    prompts, out = tmp_path / "p.txt", tmp_path / "o.jsonl"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    rc = main(["score", "--pretrained", "tiny-org/llama-pt", "--finetuned", "tiny-org/llama-ft", "--raw-text",
               "--prompts", str(prompts), "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    meta = json.loads((tmp_path / "o.jsonl.meta.json").read_text())
    assert meta["models"]["pretrained"]["revision"] == COMMITS["pt"]
    assert main(["score", "--pretrained", "nobody/nothing", "--finetuned", "tiny-org/llama-ft",
                 "--prompts", str(prompts), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert not (tmp_path / "x.jsonl").exists()
    err = capsys.readouterr().err
    assert "tuco: error: nobody/nothing: not a local path" in err and "Traceback" not in err


def test_what_counts_as_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("google/gemma-3-270m") and is_hub_id("org/name@v1.0") and is_hub_id("org/name@refs/pr/1")
    (tmp_path / "org" / "local").mkdir(parents=True)
    assert not is_hub_id("org/local")          # an existing path is a path
    assert not is_hub_id("./org/name") and not is_hub_id("/abs/path") and not is_hub_id("a/b/c")
