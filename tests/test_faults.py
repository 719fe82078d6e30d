"""Bad numbers, bad models, bad options and faults: a flagged row or a named error, never a silent wrong score, a
traceback or a lost file (issue 14)."""

import copy
import importlib
import json

import numpy as np
import pytest
import torch

import tuco_kernels as tk
from tests.fixtures.pairs import PROMPTS, make_pair_models, save_pair
from tuco_kernels import cli
from tuco_kernels.cli import prepare, scoring
from tuco_kernels.errors import DeviceMemoryError, ModelError, OptionError, TucoError


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("faults")
    save_pair(root, tokenizer)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return root


def run(*args):
    return cli.main([*map(str, args)])


def poisoned(pair, side: str, layer: int, value=float("nan")):
    """A copy of ``pair`` with one weight of one block set to ``value``."""
    pt, ft = copy.deepcopy(pair.pretrained), copy.deepcopy(pair.finetuned)
    model = pt if side == "pt" else ft
    with torch.no_grad():
        pair.family.layers(model)[layer].mlp.down_proj.weight[0, 0] = value
    return tk.load_pair(pt, ft, tokenizer=pair.tokenizer)


# ------------------------------------------------------------------------------------------ non-finite numbers


@pytest.mark.parametrize("side,block", [("pt", "pre-trained"), ("ft", "fine-tuned")])
def test_a_nan_weight_flags_every_row_naming_the_layer_and_block(llama_pair, side, block):
    result = tk.score(poisoned(llama_pair, side, 1), PROMPTS, chat=False)
    assert result.flagged == list(range(len(PROMPTS)))
    assert set(result.status) == {f"non-finite: from layer 1, the {block} block's output"}
    assert all(r["tuco"] is None and r["status"] != "ok" for r in result.to_records())
    assert np.isnan(result.summary()["tuco_mean"]) and result.summary()["flagged"] == len(PROMPTS)


def test_one_bad_prompt_is_flagged_and_never_averaged(llama_pair, tokenizer):
    bad_token = tokenizer("Hi", add_special_tokens=False)["input_ids"][0]   # only PROMPTS[3] is "Hi"
    pt, ft = copy.deepcopy(llama_pair.pretrained), copy.deepcopy(llama_pair.finetuned)
    with torch.no_grad():
        ft.get_input_embeddings().weight[bad_token] = float("inf")
    result = tk.score(tk.load_pair(pt, ft, tokenizer=tokenizer), PROMPTS, chat=False)
    clean = tk.score(llama_pair, PROMPTS[:3], chat=False)
    assert result.flagged == [3] and result.status[3] == "non-finite: the embedding output (x_0) has NaN/inf"
    assert result.summary()["tuco_mean"] == pytest.approx(clean.tuco.mean(), abs=1e-12)   # the other three only
    assert "1 flagged" in repr(result)


def test_cli_flags_rows_writes_nulls_and_exits_3(saved, tmp_path, capsys, tokenizer):
    pt, ft = make_pair_models("llama", tokenizer)
    ft = copy.deepcopy(ft)
    with torch.no_grad():
        ft.model.layers[2].self_attn.o_proj.weight[:] = float("inf")
    ft.save_pretrained(tmp_path / "ft")
    tokenizer.save_pretrained(tmp_path / "ft")
    out = tmp_path / "o.jsonl"
    assert run("score", "--pretrained", saved / "pt", "--finetuned", tmp_path / "ft", "--prompts",
               saved / "prompts.txt", "--out", out, "--no-progress", "--layers") == cli.EXIT_FLAGGED
    err = capsys.readouterr().err
    assert "4 of 4 prompts have no usable TuCo" in err and "from layer 2, the fine-tuned block's output" in err
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    rows = [json.loads(line) for line in text.splitlines()]
    assert all(r["tuco"] is None and r["status"].startswith("non-finite") for r in rows)


def test_float16_overflow_says_to_use_bfloat16(saved, tmp_path, capsys, tokenizer):
    pt, ft = make_pair_models("llama", tokenizer)
    for name, model in (("pt", pt), ("ft", ft)):
        big = copy.deepcopy(model)
        with torch.no_grad():
            for block in big.model.layers:
                block.mlp.down_proj.weight.mul_(1e6)   # still a float16 number (~2e4), its products are not
        big.half().save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    rc = run("score", "--pretrained", tmp_path / "pt", "--finetuned", tmp_path / "ft", "--prompts",
             saved / "prompts.txt", "--out", tmp_path / "o.csv", "--no-progress", "--dtype", "float16")
    err = capsys.readouterr().err
    assert rc == cli.EXIT_FLAGGED and "float16 overflows easily: try --dtype bfloat16 or float32" in err


# ------------------------------------------------------------------------------------------ device memory


def test_out_of_memory_halves_the_micro_batch_and_keeps_the_numbers(llama_pair, monkeypatch):
    score_module = importlib.import_module("tuco_kernels.score")   # tk.score is the function of that name

    expected = tk.score(llama_pair, PROMPTS * 4, layers=True, chat=False)
    real = score_module.decompose_sweep
    calls = []

    def small_device(pair, batches, *args, **kwargs):
        rows = sum(ids.shape[0] for ids, _ in batches)
        calls.append(rows)
        if rows > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(pair, batches, *args, **kwargs)

    monkeypatch.setattr(score_module, "decompose_sweep", small_device)
    got = tk.score(llama_pair, PROMPTS * 4, layers=True, chat=False)
    assert max(calls) > 2 and all(r <= 2 for r in calls[calls.index(max(calls)) + 1:][-4:])
    np.testing.assert_allclose(got.tuco, expected.tuco, atol=1e-6, rtol=0)   # batch-independent to fp32 rounding
    np.testing.assert_allclose(got.beta, expected.beta, atol=1e-5, rtol=0)


def test_out_of_memory_for_a_single_prompt_names_it(llama_pair, monkeypatch):
    score_module = importlib.import_module("tuco_kernels.score")   # tk.score is the function of that name

    def no_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr(score_module, "decompose_sweep", no_memory)
    with pytest.raises(DeviceMemoryError, match=r"prompt \d \(id \d, \d+ tokens\): out of device memory even alone"):
        tk.score(llama_pair, PROMPTS, chat=False)


# ------------------------------------------------------------------------------------------ other tools' hooks


def test_other_tools_forward_wrappers_survive_score_generate_and_attach(tokenizer):
    pt, ft = (copy.deepcopy(m) for m in make_pair_models("llama", tokenizer))
    pair = tk.load_pair(pt, ft, tokenizer=tokenizer)
    block = pair.finetuned.model.layers[1]
    calls = []

    def users_wrapper(*args, **kwargs):   # what nnsight, accelerate's hooks or a user's own patch install
        calls.append(1)
        return type(block).forward(block, *args, **kwargs)

    block.forward = users_wrapper
    tk.score(pair, PROMPTS[:2], chat=False)
    tk.generate(pair, PROMPTS[:1], alpha=1.25, max_new_tokens=2, chat=False)     # attach wraps, calls theirs, restores
    assert vars(block)["forward"] is users_wrapper
    n = len(calls)
    assert n > 0   # attach's steered forward went through the user's wrapper
    pair.finetuned(input_ids=torch.tensor([[1, 5, 7]]))
    assert len(calls) == n + 1


# ------------------------------------------------------------------------------------------ models and devices


def test_a_truncated_safetensors_file_is_named(saved, tmp_path):
    import shutil

    shutil.copytree(saved / "ft", tmp_path / "ft")
    weights = tmp_path / "ft" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ModelError, match=r"ft/model.safetensors: tensor .* does not fit its offsets"):
        tk.load_pair(saved / "pt", tmp_path / "ft")


def test_weights_that_do_not_match_the_config_are_refused(saved, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(saved / "ft", tmp_path / "missing")
    tensors = load_file(tmp_path / "missing" / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, tmp_path / "missing" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match=r"has no weights for 1 parameter.*model.layers.1.mlp.up_proj.weight.*random"):
        tk.load_pair(saved / "pt", tmp_path / "missing")
    shutil.copytree(saved / "ft", tmp_path / "shape")
    config = json.loads((tmp_path / "shape" / "config.json").read_text())
    config["intermediate_size"] *= 2
    (tmp_path / "shape" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"shape: config.json disagrees with the stored weights: "
                                         r".* is stored as \[\d+, \d+\] but the config makes it"):
        tk.load_pair(tmp_path / "shape", tmp_path / "shape")


@pytest.mark.parametrize("device,match", [("junk", "unknown device 'junk'"), ("mps", "MPS is not available"),
                                          ("cuda", "device 'cuda': "), ("cuda:7", "device 'cuda:7'")])
def test_devices_that_do_not_exist_here_are_named(saved, device, match):
    if device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 7:
        pytest.skip("this machine has that device")
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(OptionError, match=match):
        tk.load_pair(saved / "pt", saved / "ft", device=device)


def test_alpha_types_in_python(llama_pair):
    with pytest.raises(OptionError, match=r"alpha must be a number or one number per layer, got str '1.25'"):
        tk.score(llama_pair, PROMPTS[:1], alpha="1.25", chat=False)
    with pytest.raises(OptionError, match="alpha has 2 values but the model has 3 layers"):
        tk.score(llama_pair, PROMPTS[:1], alpha=[1.0, 1.0], chat=False)
    by_numpy = tk.score(llama_pair, PROMPTS[:1], alpha=np.float32(1.25), chat=False).tuco
    assert by_numpy == pytest.approx(tk.score(llama_pair, PROMPTS[:1], alpha=1.25, chat=False).tuco)
    assert tk.score(llama_pair, PROMPTS[:1], alpha=np.array([1.0, 1.25, 1.0]), chat=False).tuco.shape == (1,)


# ------------------------------------------------------------------------------------------ the command line


def test_output_equal_to_the_input_is_refused_and_the_input_kept(saved, tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "Hi"}\n')
    before = prompts.read_bytes()
    assert run("score", "--pretrained", saved / "pt", "--finetuned", saved / "ft", "--prompts", prompts,
               "--out", prompts, "--force") == cli.EXIT_USER
    assert "is also an input" in capsys.readouterr().err and prompts.read_bytes() == before


def test_checks_that_cost_nothing_run_before_the_models_load(saved, tmp_path, capsys, monkeypatch):
    def must_not_load(*args, **kwargs):
        raise AssertionError("load_pair was called before the cheap checks")

    monkeypatch.setattr(prepare, "load_pair", must_not_load)
    base = ["score", "--pretrained", saved / "pt", "--finetuned", saved / "ft", "--prompts", saved / "prompts.txt",
            "--no-progress"]
    (tmp_path / "exists.csv").write_text("old")
    cases = [
        (["--out", tmp_path / "o.csv", "--alpha", "1,1"], "--alpha has 2 values but the model has 3 layers"),
        (["--out", tmp_path / "exists.csv"], "exists; pass --force"),
        (["--out", tmp_path / "o.csv", "--device", "junk"], "unknown device 'junk'"),
        (["--out", tmp_path / "o.csv", "--template", "llama9"], "argument --template: invalid choice: 'llama9'"),
        (["--out", tmp_path / "o.csv", "--backend", "nope"], "argument --backend: invalid choice: 'nope'"),
        (["--out", tmp_path / "o.csv", "--batch-tokens", "0"], "argument --batch-tokens: must be at least 1"),
        (["--out", tmp_path / "o.csv", "--sweep-tokens", "-3"], "argument --sweep-tokens: must be at least 1"),
        (["--out", tmp_path / "o.csv", "--dtype", "int3"], "unknown dtype 'int3'"),
    ]
    for extra, match in cases:
        assert run(*base, *extra) == cli.EXIT_USER, extra
        err = capsys.readouterr().err
        assert match in err and err.startswith("tuco: error: ") and len(err.strip().splitlines()) == 1, err
    assert (tmp_path / "exists.csv").read_text() == "old" and not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("extra,match", [(["--max-new-tokens", "0"], "--max-new-tokens: must be at least 1"),
                                         (["--top-p", "2"], "--top-p: must be in (0, 1]"),
                                         (["--temperature", "0"], "--temperature: must be a positive number")])
def test_steer_options_are_checked(saved, capsys, extra, match):
    rc = run("steer", "--pretrained", saved / "pt", "--finetuned", saved / "ft", "--prompts", saved / "prompts.txt",
             *extra)
    assert rc == cli.EXIT_USER and match in capsys.readouterr().err


def test_a_second_run_on_the_same_output_is_refused_while_the_first_writes(saved, tmp_path, capsys):
    from tuco_kernels.prompts.output import OutputTarget

    holder = OutputTarget(tmp_path / "o.csv").claim()   # as a first run would hold it
    try:
        assert run("score", "--pretrained", saved / "pt", "--finetuned", saved / "ft", "--prompts",
                   saved / "prompts.txt", "--out", tmp_path / "o.csv", "--no-progress") == cli.EXIT_USER
        assert "another tuco run (pid" in capsys.readouterr().err
    finally:
        holder.release()


def test_an_internal_error_is_one_line_and_a_saved_traceback(saved, tmp_path, capsys, monkeypatch):
    def bug(*args, **kwargs):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(scoring, "score", bug)
    rc = run("score", "--pretrained", saved / "pt", "--finetuned", saved / "ft", "--prompts", saved / "prompts.txt",
             "--out", tmp_path / "o.csv", "--no-progress")
    err = capsys.readouterr().err
    assert rc == cli.EXIT_INTERNAL and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("tuco: internal error")   # one line, the last
    assert "tuco: internal error (ZeroDivisionError: planted); this is a bug" in err
    crash = err.split("traceback saved in ")[1].strip()
    assert "ZeroDivisionError: planted" in open(crash).read()
    assert not (tmp_path / "o.csv").exists() and not list(tmp_path.glob(".o.csv*"))


def test_python_api_errors_are_tuco_errors(saved, tmp_path):
    with pytest.raises(TucoError, match="not a model directory, a .gguf file or a Hugging Face hub id"):
        tk.load_pair(tmp_path / "nope", saved / "ft")
    with pytest.raises(OptionError, match="give both"):
        tk.load_pair(saved / "pt", None)
