"""Sharded, resumable scoring in one process (tuco_kernels/dataset/run.py): the same numbers as tk.score, whole
micro-batches per shard, resume without rescoring or duplicates, refusal of a changed run, failed shards retried.
The many-process and killed-process tests are in test_processes.py."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tuco_kernels as tk
from tests.fixtures.pairs import CORPUS, make_pair_models
from tests.fixtures.tiny import perturbed_copy
from tuco_kernels.cli import main
from tuco_kernels.dataset import merge
from tuco_kernels.dataset import run as run_module
from tuco_kernels.dataset.layout import Layout
from tuco_kernels.dataset.plan import make_plan
from tuco_kernels.dataset.tokens import tokenize_all
from tuco_kernels.prompts.output import write_records
from tuco_kernels.score import plan_batches

OPTS = dict(layers=True, output_co=True, batch_tokens=160)


def prompts_for(n: int = 40) -> list[dict]:
    return [{"id": f"q{i}", "prompt": (CORPUS[i % 8] + " " + CORPUS[(3 * i) % 8])[: 8 + (11 * i) % 120]}
            for i in range(n)]


@pytest.fixture(scope="module")
def pair(tokenizer):
    pt, ft = make_pair_models("llama", tokenizer)
    return tk.load_pair(pt, ft, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def reference(pair):
    return tk.score(pair, prompts_for(), **OPTS)


def same_rows(merged, result) -> None:
    """Every column of the merged Parquet equals tk.score's records, bit for bit."""
    want = pa.Table.from_pylist(result.to_records())
    assert merged.column_names == want.column_names
    for name in want.column_names:
        a, b = merged[name].to_pylist(), want[name].to_pylist()
        assert np.array_equal(np.array(a, dtype=object if name == "id" else None),
                              np.array(b, dtype=object if name == "id" else None)), name


def stamps(layout: Layout) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted(layout.shards.glob("*.parquet"))}


def test_shards_hold_whole_micro_batches_of_score(pair):
    """The shards are score()'s own micro-batches, consecutive and whole, within the token budget."""
    prompts = prompts_for()
    records, tokens = tokenize_all(pair, prompts, chat=False, system_prompt=None)
    plan = make_plan(pair, records, tokens, alpha=1.0, chat=False, system_prompt=None, batch_tokens=160,
                        layers=False, token_map=False, output_co=False, backend=None, max_gpu_memory=None,
                        sweep_tokens=None, shard_tokens=500)
    _, batches = plan_batches(pair, [tokens[i].tolist() for i in range(len(tokens))], batch_tokens=160,
                              budget=None, sweep_tokens=None, output_co=False, token_map=False)
    assert [g for s in plan.shards for g in s.batches] == [b.indices for b in batches]
    assert len(plan.shards) > 3
    for s in plan.shards:
        assert s.padded <= 500 or len(s.batches) == 1
        assert s.padded == sum(len(g) * len(tokens[g[0]]) for g in s.batches)


def test_same_numbers_as_score_and_resume_skips_finished_shards(pair, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(merge, "MERGE_CHUNK", 7)  # .csv / .jsonl written in pieces
    run = tk.score_dataset(pair, prompts_for(), out, shard_tokens=400, formats=["csv", "jsonl"], **OPTS)
    assert run.complete and run.scored == list(range(run.n_shards)) and run.n_shards > 3
    same_rows(pq.read_table(out / "scores.parquet"), reference)
    write_records(reference.to_records(), tmp_path / "ref.csv")
    write_records(reference.to_records(), tmp_path / "ref.jsonl")
    for fmt in ("csv", "jsonl"):  # the files `tuco score --out x.<fmt>` writes, byte for byte
        assert (out / f"scores.{fmt}").read_bytes() == (tmp_path / f"ref.{fmt}").read_bytes()
    assert json.loads((out / "_SUCCESS").read_text())["n_prompts"] == 40
    plan = json.loads((out / "plan.json").read_text())
    assert plan["n_shards"] == run.n_shards and plan["fingerprint"]["layers"] is True

    # lose two shards and the merged output; everything else must be left alone
    layout = Layout(out, run.n_shards)
    for k in (1, 3):
        layout.shard(k).unlink()
    (out / "scores.parquet").unlink()
    before = stamps(layout)
    again = tk.score_dataset(pair, prompts_for(), out, shard_tokens=400, schedule="layer", **OPTS)
    assert again.scored == [1, 3] and again.resumed == run.n_shards - 2
    after = stamps(layout)
    assert {k: v for k, v in after.items() if k in before} == before  # not rewritten: same inode and mtime
    same_rows(pq.read_table(out / "scores.parquet"), reference)

    # complete: a rerun scores nothing and rewrites nothing
    mtime = (out / "scores.parquet").stat().st_mtime_ns
    third = tk.score_dataset(pair, prompts_for(), out, shard_tokens=400, **OPTS)
    assert third.scored == [] and (out / "scores.parquet").stat().st_mtime_ns == mtime and stamps(layout) == after


def test_interrupted_run_resumes_to_the_same_output(pair, reference, tmp_path, monkeypatch):
    """A run stopped while writing its third shard (a half-written temporary file left behind, as after a
    SIGKILL) resumes: the partial file is cleared, finished shards are kept, the output is the same."""
    out = tmp_path / "out"
    real = run_module.write_shard
    calls = []

    def dying(layout, k, table, meta):
        calls.append(k)
        if len(calls) == 3:
            (layout.shards / f".{layout.shard(k).name}.abc.partial").write_bytes(b"PAR1 half")
            raise KeyboardInterrupt
        return real(layout, k, table, meta)

    monkeypatch.setattr(run_module, "write_shard", dying)
    with pytest.raises(KeyboardInterrupt):
        tk.score_dataset(pair, prompts_for(), out, shard_tokens=400, **OPTS)
    monkeypatch.setattr(run_module, "write_shard", real)
    layout = Layout(out, 99)
    before = stamps(layout)
    assert len(before) == 2 and not (out / "scores.parquet").exists() and not (out / "_SUCCESS").exists()
    run = tk.score_dataset(pair, prompts_for(), out, shard_tokens=400, **OPTS)
    assert run.resumed == 2 and run.scored[0] == 2  # the shard being written when it died is scored again
    assert {k: v for k, v in stamps(layout).items() if k in before} == before
    assert not list(out.rglob("*.partial"))
    same_rows(pq.read_table(out / "scores.parquet"), reference)


def test_failed_shard_is_recorded_the_others_finish_and_a_rerun_retries_it(pair, reference, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real = run_module.score_shard

    def flaky(pair_, shard, *a, **kw):
        if shard.k == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(pair_, shard, *a, **kw)

    monkeypatch.setattr(run_module, "score_shard", flaky)
    with pytest.raises(tk.ShardsFailed, match="1 of .* shards failed"):
        tk.score_dataset(pair, prompts_for(), out, shard_tokens=400, **OPTS)
    layout = Layout(out, 99)
    record = json.loads(layout.error(1).read_text())
    assert "simulated" in record["error"] and "Traceback" in record["traceback"]
    n = json.loads((out / "plan.json").read_text())["n_shards"]
    assert len(stamps(layout)) == n - 1 and not (out / "scores.parquet").exists()

    monkeypatch.setattr(run_module, "score_shard", real)
    run = tk.score_dataset(pair, prompts_for(), out, shard_tokens=400, **OPTS)
    assert run.scored == [1] and not layout.error(1).exists()
    same_rows(pq.read_table(out / "scores.parquet"), reference)


@pytest.mark.parametrize("change, field", [
    (dict(alpha=1.25), "alpha"), (dict(layers=False), "layers"), (dict(batch_tokens=96), "batch_tokens"),
    (dict(shard_tokens=300), "shard_tokens"), (dict(chat=False), "chat"), ("prompt", "inputs"), ("model", "finetuned"),
])
def test_a_changed_run_is_refused_naming_the_field(pair, tokenizer, tmp_path, change, field):
    out = tmp_path / "out"
    tk.score_dataset(pair, prompts_for(8), out, shard_tokens=400, **OPTS)
    kwargs = dict(OPTS, shard_tokens=400)
    prompts, other = prompts_for(8), pair
    if change == "prompt":
        prompts[3]["prompt"] += " changed"
    elif change == "model":
        pt, ft = make_pair_models("llama", tokenizer)
        other = tk.load_pair(pt, perturbed_copy(pt, scale=0.1, seed=7), tokenizer=tokenizer)
    else:
        kwargs.update(change)
    with pytest.raises(tk.PlanMismatch, match=rf"other {field}\b"):
        tk.score_dataset(other, prompts, out, **kwargs)
    # what does not change numbers is not part of the fingerprint
    tk.score_dataset(pair, prompts_for(8), out, schedule="layer", progress=True, **dict(OPTS, shard_tokens=400))


def test_command_line_directory_out(pair, tokenizer, tmp_path, capsys):
    for name, model in (("pt", pair.pretrained), ("ft", pair.finetuned)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts_for(12)))
    base = ["score", "--pretrained", str(tmp_path / "pt"), "--finetuned", str(tmp_path / "ft"), "--prompts",
            str(tmp_path / "p.jsonl"), "--no-progress", "--batch-tokens", "160", "--layers"]
    assert main(base + ["--out", str(tmp_path / "file.jsonl")]) == 0
    file_summary = capsys.readouterr().err
    assert main(base + ["--out", f"{tmp_path / 'dir'}/", "--shard-tokens", "300", "--also", "jsonl"]) == 0
    assert (tmp_path / "dir" / "scores.jsonl").read_bytes() == (tmp_path / "file.jsonl").read_bytes()
    n_shards = len(list((tmp_path / "dir" / "shards").glob("*.parquet")))
    assert n_shards > 1
    # the summary: every shard of the run counted, TuCo as the file run prints it, every file written named
    dir_summary = capsys.readouterr().err
    mean = re.search(r"TuCo mean ± sd\s+(\S+ ± \S+)", file_summary).group(1)
    assert re.search(rf"TuCo mean ± sd\s+{re.escape(mean)}", dir_summary), dir_summary
    assert f"this run        {n_shards} shards over 1 process," in dir_summary
    assert (f"{tmp_path / 'dir'}{os.sep}: scores.parquet, scores.parquet.meta.json, scores.jsonl, "
            f"scores.jsonl.meta.json") in dir_summary
    # an existing directory is the sharded mode too; the changed option is named; status 2 before any scoring
    assert main(base[:-1] + ["--out", str(tmp_path / "dir"), "--shard-tokens", "300"]) == 2
    assert "other layers" in capsys.readouterr().err
    assert main(base + ["--out", str(tmp_path / "x.csv"), "--shard-tokens", "300"]) == 2
    assert "--shard-tokens and --also go with a directory --out" in capsys.readouterr().err


def test_resume_with_streamed_weights_is_the_same_run(pair, tokenizer, reference, tmp_path):
    """Where the weights live changes no number: a run started resident from the model folders resumes with the
    layers streamed from disk (layer-major), and the rows are still tk.score's."""
    for name, model in (("pt", pair.pretrained), ("ft", pair.finetuned)):
        model.save_pretrained(tmp_path / name)
    out = tmp_path / "out"
    resident = tk.load_pair(tmp_path / "pt", tmp_path / "ft", tokenizer=tokenizer)
    run = tk.score_dataset(resident, prompts_for(), out, shard_tokens=400, **OPTS)
    layout = Layout(out, run.n_shards)
    for k in (0, run.n_shards - 1):
        layout.shard(k).unlink()
    with tk.load_pair(tmp_path / "pt", tmp_path / "ft", tokenizer=tokenizer, offload="disk") as streamed:
        again = tk.score_dataset(streamed, prompts_for(), out, shard_tokens=400, **OPTS)
    assert again.scored == [0, run.n_shards - 1]
    same_rows(pq.read_table(out / "scores.parquet"), reference)
