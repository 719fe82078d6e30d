"""Several fine-tunes against one base in one sweep per layer (``load_pair(base, [a, b, ...])``, ``tuco score
--finetuned A --finetuned B``): each fine-tune's numbers against the pair of that fine-tune alone, which the tests of
test_shared_lora.py hold to PEFT's own forward."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

import tuco_kernels as tk
from tuco_kernels.cli import main
from tuco_kernels.core.pair_set import PairSet
from tuco_kernels.errors import ModelError, OptionError
from tuco_kernels.models.shared import shared_parameters
from tuco_kernels.report.read import load_scores

from tests.fixtures.pairs import PROMPTS
from tests.fixtures.tiny import perturbed_copy
from tests.models.test_shared_lora import _base, _save_adapter

OPTIONS = dict(chat=False, layers=True, output_co=True, token_map=True)


def _same(got, expected) -> None:
    """Every number of ``got`` equals ``expected``'s bit for bit (NaN where NaN)."""
    assert got.ids == expected.ids and got.status == expected.status
    for name in ("tuco", "beta", "ptc_l1", "ftc_l1", "output_co"):
        assert np.array_equal(getattr(got, name), getattr(expected, name), equal_nan=True), name
    assert all(np.array_equal(a, b) for a, b in zip(got.token_tuco, expected.token_tuco))


def _adapters(tmp_path, tokenizer, names):
    return tmp_path / "pt", [_save_adapter(tmp_path, tokenizer, n)[1] for n in names]


def test_each_fine_tune_of_a_set_scores_as_its_own_pair(tmp_path, tokenizer):
    """Three LoRA adapters shared on one base copy and a whole fine-tuned model beside it: every row equals the
    score of that fine-tune loaded alone, bit for bit; the rows come fine-tune by fine-tune, named as given."""
    pt_dir, adapters = _adapters(tmp_path, tokenizer, ["plain", "patterns", "dora"])
    perturbed_copy(_base(tokenizer), scale=0.1, seed=3).save_pretrained(tmp_path / "full")
    finetuned = [*adapters, tmp_path / "full"]
    pair = tk.load_pair(pt_dir, finetuned)
    assert isinstance(pair, PairSet) and pair.side_names == [str(f) for f in finetuned]
    assert all(side.pretrained is pair.pretrained for side in pair.sides)   # one base model
    for side in pair.sides[:3]:   # the adapters' base weights are the base's own tensors
        assert shared_parameters(pair.pretrained, side.finetuned) == len(list(pair.pretrained.parameters()))
    assert [p.lora["mode"] if p.lora else None for p in pair.sides] == ["shared"] * 3 + [None]
    got = tk.score(pair, PROMPTS, **OPTIONS)
    assert got.finetuned == [str(f) for f in finetuned for _ in PROMPTS]
    assert pair.reuse.hits > 0
    for (name, part), source in zip(got.by_finetuned().items(), finetuned):
        assert name == str(source)
        _same(part, tk.score(tk.load_pair(pt_dir, source), PROMPTS, **OPTIONS))
    assert [r["finetuned"] for r in got.to_records()] == got.finetuned
    assert list(got.to_records()[0])[:3] == ["id", "finetuned", "text"]
    layer_major = tk.score(pair, PROMPTS, schedule="layer", **OPTIONS)   # the same batches, walked layer-major
    _same(layer_major, got)


@pytest.mark.parametrize("offload", ["cpu", "disk"])
def test_a_streamed_set_is_the_resident_set_reading_one_base(tmp_path, tokenizer, offload):
    """Streamed, one streamer brings each base layer once per layer visit for every adapter: the numbers equal the
    resident set's bit for bit, and a disk sweep reads the base's blocks once, not once per adapter."""
    pt_dir, adapters = _adapters(tmp_path, tokenizer, ["plain", "embedding", "dora", "modules_to_save"])
    expected = tk.score(tk.load_pair(pt_dir, adapters), PROMPTS, **OPTIONS)
    with tk.load_pair(pt_dir, adapters, offload=offload) as pair:
        assert len({id(side.streamer) for side in pair.sides}) == 1
        got = tk.score(pair, PROMPTS, profile=True, **OPTIONS)
        _same(got, expected)
        if offload == "disk":
            blocks = sum(p.numel() * p.element_size() for b in pair.family.layers(expected_base(pt_dir))
                         for p in b.parameters())
            assert got.run.profile.bytes_read == blocks * got.run.sweeps
            assert got.run.profile.layers == pair.n_layers * got.run.sweeps
        assert pair.reuse.hits > 0


def expected_base(pt_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(pt_dir)


def test_what_a_set_cannot_be_is_named(tmp_path, tokenizer):
    pt_dir, adapters = _adapters(tmp_path, tokenizer, ["plain", "dora"])
    perturbed_copy(_base(tokenizer), scale=0.1, seed=3).save_pretrained(tmp_path / "full")
    with pytest.raises(OptionError, match=r"the fine-tune '.*plain' is given twice \(fine-tunes 0 and 2\)"):
        tk.load_pair(pt_dir, [adapters[0], adapters[1], adapters[0]])
    with pytest.raises(OptionError, match="the list of fine-tuned models is empty"):
        tk.load_pair(pt_dir, [])
    with pytest.raises(OptionError, match="against one pre-trained model: give it"):
        tk.load_pair(None, adapters)
    with pytest.raises(OptionError, match=r"offload='disk' with several fine-tunes .* but .*full is a whole "
                                          r"fine-tuned model"):
        tk.load_pair(pt_dir, [adapters[0], tmp_path / "full"], offload="disk")
    with pytest.raises(OptionError, match=r"but .*plain is merged \(--lora merged\)"):
        tk.load_pair(pt_dir, adapters, offload="cpu", lora="merged")
    (adapters[1] / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    with pytest.raises(ModelError, match=r"dora: its tokenizer differs from .*plain's \(adapter chat_template.jinja\)"):
        tk.load_pair(pt_dir, adapters)
    pair = tk.load_pair(pt_dir, adapters, tokenizer=tokenizer)   # one tokenizer given: the set loads
    for what, call in (("next_token_logprobs", lambda: tk.next_token_logprobs(pair, PROMPTS)),
                       ("generate", lambda: tk.generate(pair, PROMPTS, max_new_tokens=1))):
        with pytest.raises(OptionError, match=rf"{what} runs one fine-tune, but this pair set holds 2 .*pair.sides"):
            call()
    assert torch.equal(tk.next_token_logprobs(pair.sides[1], PROMPTS, chat=False),
                       tk.next_token_logprobs(tk.load_pair(pt_dir, adapters[1], tokenizer=tokenizer), PROMPTS,
                                              chat=False))


def test_cli_scores_several_fine_tunes_into_one_file_and_the_report_groups_them(tmp_path, tokenizer, capsys):
    pt_dir, adapters = _adapters(tmp_path, tokenizer, ["plain", "rslora"])
    prompts = tmp_path / "p.csv"
    pd.DataFrame({"prompt": PROMPTS, "source": ["a", "b"] * (len(PROMPTS) // 2) + ["a"] * (len(PROMPTS) % 2)}
                 ).to_csv(prompts, index=False)
    out = tmp_path / "s.parquet"
    argv = ["score", "--pretrained", str(pt_dir), "--prompts", str(prompts), "--out", str(out), "--raw-text",
            "--no-progress", "--layers"]
    for a in adapters:
        argv += ["--finetuned", str(a)]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert f"{len(PROMPTS)} prompts × 2 fine-tunes" in err and f"[{adapters[1]}]" in err
    table = pd.read_parquet(out)
    assert table["finetuned"].tolist() == [str(a) for a in adapters for _ in PROMPTS]
    assert table.columns.tolist()[:4] == ["id", "finetuned", "text", "source"]
    expected = tk.score(tk.load_pair(pt_dir, adapters), PROMPTS, chat=False)
    assert table["tuco"].tolist() == expected.tuco.tolist()
    meta = json.loads((tmp_path / "s.parquet.meta.json").read_text())
    assert meta["models"]["finetuned"] == [str(a) for a in adapters]
    assert [m["mode"] for m in meta["lora"]] == ["shared", "shared"]
    scores = load_scores([out])
    assert scores.group_by == "finetuned" and scores.groups == [str(a) for a in adapters]
    assert load_scores([out], group="source").groups == ["a", "b"]
    report = tmp_path / "r.html"
    assert main(["report", str(out), "--out", str(report)]) == 0
    assert str(adapters[1]) in report.read_text()

    import importlib.util

    commands = [["steer", "--max-new-tokens", "1"]]
    if importlib.util.find_spec("lm_eval") is not None:   # tuco eval names a missing lm-eval first (test-oldest)
        commands.append(["eval", "--tasks", "x", "--out", str(tmp_path / "e.json")])
    for command in commands:
        refused = [command[0], "--pretrained", str(pt_dir), "--finetuned", str(adapters[0]), "--finetuned",
                   str(adapters[1]), "--prompts", str(prompts), *command[1:]]
        if command[0] == "eval":
            refused.remove("--prompts"), refused.remove(str(prompts))
        assert main(refused) == 2
        assert f"tuco {command[0]} takes one --finetuned, got 2" in capsys.readouterr().err


def test_a_sharded_run_of_a_set_is_the_file_run_and_resumes(tmp_path, tokenizer, capsys):
    """--out DIR/ with several fine-tunes: each shard holds its prompts' rows of every fine-tune; the merge is the
    file run's rows (fine-tune by fine-tune), a rerun after losing a shard scores only that one again, and a run
    with other fine-tunes (or a shard of one) is refused by the fingerprint."""
    from tuco_kernels.dataset import PlanMismatch, score_dataset
    from tuco_kernels.dataset.layout import Layout

    pt_dir, adapters = _adapters(tmp_path, tokenizer, ["plain", "dora", "rslora"])
    pair = tk.load_pair(pt_dir, adapters)
    expected = tk.score(pair, PROMPTS, chat=False, layers=True, batch_tokens=64).to_pandas()
    out = tmp_path / "run"
    run = score_dataset(pair, PROMPTS, out, chat=False, layers=True, batch_tokens=64, shard_tokens=64,
                        formats=["csv"])
    assert run.n_shards > 2 and run.fine_tunes == [str(a) for a in adapters]
    merged = run.read()
    assert merged["finetuned"].tolist() == expected["finetuned"].tolist()
    assert merged["tuco"].tolist() == expected["tuco"].tolist()
    assert np.array_equal(np.stack(merged["beta"]), np.stack(expected["beta"]))
    assert run.tuco_stats(str(adapters[1]))["mean"] == pytest.approx(expected["tuco"][len(PROMPTS):2 * len(PROMPTS)]
                                                                      .mean())
    layout = Layout(out)
    layout.shard(1).unlink()
    again = score_dataset(pair, PROMPTS, out, chat=False, layers=True, batch_tokens=64, shard_tokens=64)
    assert again.scored == [1] and again.read()["tuco"].tolist() == expected["tuco"].tolist()
    with pytest.raises(PlanMismatch, match="other finetuned/fine_tunes"):
        score_dataset(tk.load_pair(pt_dir, adapters[:2]), PROMPTS, out, chat=False, layers=True, batch_tokens=64,
                      shard_tokens=64)
    single = tmp_path / "single"
    score_dataset(tk.load_pair(pt_dir, adapters[0]), PROMPTS, single, chat=False, layers=True, batch_tokens=64,
                  shard_tokens=64)
    layout.shard(0).write_bytes(Layout(single).shard(0).read_bytes())   # a one-fine-tune run's shard 0
    score_dataset(pair, PROMPTS, out, chat=False, layers=True, batch_tokens=64, shard_tokens=64)
    err = capsys.readouterr().err
    assert "shard 0" in err and "from another run" in err
    assert layout.shard(0).with_name(layout.shard(0).name + ".rejected").exists()


def test_a_sets_memory_plan_keeps_every_fine_tunes_stream(tmp_path, tokenizer):
    """A sweep holds each fine-tune's stream of every prompt: the per-token state of the plan is the pair's times
    the fine-tunes (the weights counted once)."""
    from tuco_kernels.core.budget import plan_for

    pt_dir, adapters = _adapters(tmp_path, tokenizer, ["plain", "dora", "rslora"])
    one, three = tk.load_pair(pt_dir, adapters[0]), tk.load_pair(pt_dir, adapters)
    plans = [plan_for(p, [40] * 8, batch_tokens=64, budget=2**24, own_pt=False, token_map=False) for p in (one, three)]
    assert plans[1].fp.state == pytest.approx(3 * plans[0].fp.state) and plans[1].fp.work == plans[0].fp.work
    assert three.device_bytes() < 2 * one.device_bytes()   # the base once, three adapters
