"""Many processes and killed processes (tuco_kernels/dataset/coordinator.py, run.py), on CPU: torchrun with two ranks
gives tk.score's numbers bit for bit; a run killed with SIGKILL after its first shard resumes without rewriting
what was finished; a rank that dies makes the job fail within its timeout, and a relaunch completes it.

CPU matmuls round differently with another thread count, so every process here runs one thread (torchrun's own
default) and so does the reference."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import tuco_kernels as tk
from tests.fixtures.pairs import CORPUS, save_pair
from tuco_kernels.prompts.records import read_prompt_file

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
N_PROMPTS = 400
ARGS = ["--batch-tokens", "256", "--shard-tokens", "400", "--layers", "--no-progress"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    """A tiny llama pair saved as HF folders, a prompt file, and tk.score's records on one thread."""
    root = tmp_path_factory.mktemp("dist")
    save_pair(root, tokenizer)
    with open(root / "p.jsonl", "w") as f:
        for i in range(N_PROMPTS):
            text = (CORPUS[i % 8] + " " + CORPUS[(3 * i) % 8] + " " + CORPUS[(5 * i) % 8])[: 6 + (29 * i) % 230]
            f.write(json.dumps({"id": f"p{i}", "prompt": text}) + "\n")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pair = tk.load_pair(root / "pt", root / "ft")
        ref = tk.score(pair, read_prompt_file(root / "p.jsonl"), batch_tokens=256, layers=True)
    finally:
        torch.set_num_threads(threads)
    return root, pa.Table.from_pylist(ref.to_records())


def env(**extra) -> dict:
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "python")]), HF_HUB_OFFLINE="1",
             OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    e.update(extra)
    return e


def score_cmd(root: Path, out: Path, *extra) -> list[str]:
    return ["score", "--pretrained", str(root / "pt"), "--finetuned", str(root / "ft"), "--prompts",
            str(root / "p.jsonl"), "--out", f"{out}/", *ARGS, *extra]


def cli(root, out, *extra) -> list[str]:
    return [sys.executable, "-m", "tuco_kernels.cli", *score_cmd(root, out, *extra)]


def assert_same(out: Path, ref: pa.Table) -> None:
    got = pq.read_table(out / "scores.parquet")
    assert got.column_names == ref.column_names
    for name in ref.column_names:
        assert got[name].to_pylist() == ref[name].to_pylist(), name   # exact floats (no NaN in these rows)


def shard_stamps(out: Path) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in sorted((out / "shards").glob("*.parquet"))}


def wait_for_first_shard(out: Path, proc, limit: float = 120) -> None:
    t0 = time.monotonic()
    while not list((out / "shards").glob("*.parquet")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < limit, "no shard written"
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_ranks_same_numbers_as_score(setup, tmp_path):
    root, ref = setup
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "tuco_kernels.cli", *score_cmd(root, out, "--also", "csv")]
    done = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same(out, ref)
    ranks = {json.loads(pq.read_schema(p).metadata[b"tuco_shard"])["rank"] for p in (out / "shards").glob("*.parquet")}
    assert ranks == {0, 1}  # both ranks claimed shards
    assert (out / "_SUCCESS").is_file() and (out / "scores.csv").is_file()
    assert "2 processes" in done.stderr
    # the loading lines once (rank 0's), the summary over both ranks' shards, with TuCo and every file
    assert done.stderr.count("loading the pre-trained model from") == 1, done.stderr
    assert done.stderr.count("tuco: rendering:") == 1, done.stderr
    n_shards = len(list((out / "shards").glob("*.parquet")))
    assert f"{n_shards} shards over 2 processes (" in done.stderr and "TuCo mean ± sd" in done.stderr
    assert "scores.parquet, scores.parquet.meta.json, scores.csv, scores.csv.meta.json" in done.stderr


def test_killed_run_resumes_without_rewriting_finished_shards(setup, tmp_path):
    root, ref = setup
    out = tmp_path / "out"
    proc = subprocess.Popen(cli(root, out), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for_first_shard(out, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = shard_stamps(out)
    n_shards = json.loads((out / "plan.json").read_text())["n_shards"]
    assert 0 < len(before) < n_shards and not (out / "scores.parquet").exists()

    done = subprocess.run(cli(root, out), env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"({len(before)} finished by earlier runs)" in done.stderr
    after = shard_stamps(out)
    assert {k: after[k] for k in before} == before and len(after) == n_shards
    assert not list(out.rglob("*.partial"))
    assert_same(out, ref)


def test_a_dead_rank_fails_the_job_within_its_timeout_and_a_relaunch_completes(setup, tmp_path):
    """Two ranks started by hand (env://, rank 0 hosting the store, no torchrun agent to stop the others): rank 1
    is killed; rank 0 finishes the other shards, notices within --rank-timeout and exits 1 naming rank 1; a
    relaunch completes with tk.score's numbers."""
    root, ref = setup
    out = tmp_path / "out"
    port = str(free_port())
    procs = [subprocess.Popen(cli(root, out, "--rank-timeout", "4"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, env=env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, WORLD_SIZE="2",
                                             RANK=str(r), LOCAL_RANK=str(r), LOCAL_WORLD_SIZE="2"))
             for r in range(2)]
    wait_for_first_shard(out, procs[0])
    procs[1].send_signal(signal.SIGKILL)
    t_kill = time.monotonic()
    _, err = procs[0].communicate(timeout=120)
    procs[1].wait()
    assert procs[0].returncode == 1, err[-3000:]
    assert "rank 1" in err and "has not been heard from" in err and "relaunch" in err
    assert time.monotonic() - t_kill < 60
    assert not (out / "scores.parquet").exists()

    done = subprocess.run(cli(root, out), env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same(out, ref)

