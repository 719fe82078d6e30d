"""The third bad-input sweep (issue 22): 160+ cases, written fresh as a careless user and as an adversary would try
them, over every area of the ``tuco`` command: prompt files, options, output paths and links, sharded runs (locks,
foreign and damaged shards, damaged plans and merges, permissions), steering and numeric faults, models, adapters,
GGUF files and hub caches, reports, signals, pipes, encodings and torchrun.

Each case asserts its exit status and its one line (with status 2: the one ``tuco: error:`` line); some also check
what must hold afterwards (a user's file unchanged, merged rows equal to an uninterrupted run's, the umask's
permissions). Run as tests (``pytest tests/test_faults_third.py``), or as a survey that runs every case and counts
the outcomes by kind (tracebacks, internal errors, silent wrong results, wrong or short messages)::

    .venv/bin/python -m tests.test_faults_third [--area AREA] [--only NAME_REGEX] [--keep DIR]

The harness and the kinds of outcome are in tests/fixtures/sweep.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.sweep import (MANY, Case, Outcome, as_unprivileged, build_assets, child_env, run_case, summarize,
                                  tuco_argv, victim)

# ------------------------------------------------------------------------------------------------- builders


def score(*extra, out="{d}/o.csv", pt="{pt}", ft="{ft}", prompts="{txt}"):
    return ["score", "--pretrained", pt, "--finetuned", ft, "--prompts", prompts, "--out", out, "--no-progress",
            *extra]


def steer(*extra, pt="{pt}", ft="{ft}", prompts="{txt}", new="3"):
    return ["steer", "--pretrained", pt, "--finetuned", ft, "--prompts", prompts, "--max-new-tokens", new, *extra]


SHARDING = ("--batch-tokens", "64", "--shard-tokens", "64")


def sharded(*extra, out="{d}/run/", pt="{pt}", ft="{ft}", prompts="{many}"):
    return score(*SHARDING, *extra, out=out, pt=pt, ft=ft, prompts=prompts)


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def writes(name, data):
    return lambda ctx: ctx.write(name, data)


def does_not_load(ctx, outcome: Outcome) -> None:
    assert "loading the pre-trained model" not in outcome.stderr, "late: refused only after loading the models"


def no_file(*names):
    def check(ctx, outcome):
        for n in names:
            assert not ctx.path(n).exists(), f"{n} was written"
    return check


def unchanged(name="victim.txt"):
    def check(ctx, outcome):
        p = ctx.d.parent / f"{ctx.d.name}-{name}"
        assert p.read_text() == "the user's own notes\n", f"the user's file {p} was changed"
    return check


def all_of(*checks):
    def check(ctx, outcome):
        for c in checks:
            c(ctx, outcome)
    return check


# ------------------------------------------------------------------------------------------------ sharded runs

def reference(ctx, *extra) -> Path:
    """An uninterrupted sharded run with the same options (cached among the assets)."""
    from tuco_kernels.cli import main

    key = re.sub(r"[^A-Za-z0-9]+", "_", "-".join(extra)) or "plain"
    ref = Path(ctx.a["root"]) / f"ref-{key}"
    if not (ref / "_SUCCESS").is_file():
        shutil.rmtree(ref, ignore_errors=True)
        assert main(ctx.fill(sharded(*extra, out=str(ref) + "/"))) in (0, 3)
    return ref


def run_first(*extra, out="run"):
    """Setup: the run as it stands after a first complete launch with these options."""
    def setup(ctx):
        shutil.copytree(reference(ctx, *extra), ctx.path(out))
    return setup


def same_as_reference(*extra, out="run"):
    def check(ctx, outcome):
        import pyarrow.parquet as pq

        got = pq.read_table(ctx.path(out) / "scores.parquet").to_pylist()
        want = pq.read_table(reference(ctx, *extra) / "scores.parquet").to_pylist()
        assert got == want, "the merged rows differ from an uninterrupted run's"
    return check


def unfinish(ctx, out="run"):
    for name in ("_SUCCESS", "scores.parquet", "scores.csv", "scores.jsonl"):
        (ctx.path(out) / name).unlink(missing_ok=True)


def shard_files(ctx, out="run") -> list[Path]:
    return sorted((ctx.path(out) / "shards").glob("*.parquet"))


def foreign_shard(ctx):
    """Shard 0 replaced by the shard 0 of a run with another α; the run not yet merged."""
    run_first()(ctx)
    unfinish(ctx)
    other = reference(ctx, "--alpha", "0.5")
    shutil.copy(sorted((other / "shards").glob("*.parquet"))[0], shard_files(ctx)[0])


def foreign_prompts_shard(ctx):
    """Shard 0 replaced by the shard 0 of a run over other prompts (other ids, same options)."""
    from tuco_kernels.cli import main

    run_first()(ctx)
    unfinish(ctx)
    ctx.write("other.jsonl", jsonl(*({"id": f"x{i}", "prompt": p} for i, p in enumerate(reversed(MANY)))))
    assert main(ctx.fill(sharded(out="{d}/other/", prompts="{d}/other.jsonl"))) == 0
    shutil.copy(shard_files(ctx, "other")[0], shard_files(ctx)[0])


def damage_shard(how):
    def setup(ctx):
        run_first()(ctx)
        unfinish(ctx)
        p = shard_files(ctx)[1]
        data = p.read_bytes()
        p.write_bytes({"truncated": data[: len(data) // 2], "empty": b"", "garbage": os.urandom(len(data)),
                       "magic": b"PAR1" + b"\0" * 64 + b"PAR1"}[how])
    return setup


def swap_shards(ctx):
    run_first()(ctx)
    unfinish(ctx)
    a, b = shard_files(ctx)[:2]
    tmp = a.with_suffix(".tmp")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def duplicate_shard(ctx):
    run_first()(ctx)
    unfinish(ctx)
    a, b = shard_files(ctx)[:2]
    shutil.copy(a, b)


def finished_then(edit):
    def setup(ctx):
        run_first()(ctx)
        edit(ctx)
    return setup


def garbage_scores(ctx):
    (ctx.path("run") / "scores.parquet").write_bytes(b"not parquet at all")


def truncated_scores_csv(ctx):
    p = ctx.path("run") / "scores.csv"
    p.write_text(p.read_text()[:40])


def plan_edit(fn):
    def edit(ctx):
        p = ctx.path("run") / "plan.json"
        plan = json.loads(p.read_text())
        out = fn(plan)
        p.write_bytes(out if isinstance(out, bytes) else json.dumps(out).encode())
        unfinish(ctx)
    return edit


def lock_link(ctx):
    v = victim(ctx)
    ctx.path("run").mkdir()
    os.symlink(v, ctx.path("run") / ".lock")


def lock_link_in_finished_run(ctx):
    v = victim(ctx)
    run_first()(ctx)
    (ctx.path("run") / ".lock").unlink(missing_ok=True)
    os.symlink(v, ctx.path("run") / ".lock")


def shards_link(ctx):
    ctx.path("elsewhere").mkdir()
    ctx.path("run").mkdir()
    os.symlink(ctx.path("elsewhere"), ctx.path("run") / "shards")


def shard_file_link(ctx):
    """A finished shard replaced by a link to a user's file: never written through, and re-scored."""
    v = victim(ctx)
    run_first()(ctx)
    unfinish(ctx)
    p = shard_files(ctx)[0]
    p.unlink()
    os.symlink(v, p)


def scores_link(ctx):
    v = victim(ctx)
    run_first()(ctx)
    unfinish(ctx)
    os.symlink(v, ctx.path("run") / "scores.parquet")


def held_lock(ctx):
    """Another live process holds the run's lock."""
    import fcntl

    ctx.path("run").mkdir()
    fd = os.open(ctx.path("run") / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, b"otherhost pid 4242 since now\n")
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    HELD.append(fd)


HELD: list[int] = []


def release_held(ctx, outcome):
    import fcntl

    while HELD:
        fd = HELD.pop()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def max_shard_padded(limit):
    def check(ctx, outcome):
        import pyarrow.parquet as pq

        plan = json.loads((ctx.path("run") / "plan.json").read_text())
        assert plan["n_shards"] > 1, "one shard for the whole run"
        for s in plan["shards"]:
            assert s["padded_tokens"] <= limit or s["prompts"] == 1, f"shard {s['k']}: {s['padded_tokens']} tokens"
        assert pq.read_table(ctx.path("run") / "scores.parquet").num_rows == len(MANY)
    return check


def modes(expected, *names):
    def check(ctx, outcome):
        for n in names:
            for p in (sorted(ctx.d.glob(n)) or [ctx.path(n)]):
                got = stat.S_IMODE(p.stat().st_mode)
                assert got == expected, f"{p.name}: mode {got:o}, the umask gives {expected:o}"
    return check


def status_flagged(name, column="status", where=r"non-finite"):
    def check(ctx, outcome):
        import pandas as pd

        p = ctx.path(name)
        df = pd.read_parquet(p) if p.suffix == ".parquet" else (pd.read_json(p, lines=True) if p.suffix == ".jsonl"
                                                                  else pd.read_csv(p))
        assert column in df.columns, f"{name} has no {column} column"
        assert df[column].astype(str).str.contains(where).any(), f"no row of {name} is flagged: {df[column].tolist()}"
    return check


def read_only(*names):
    def setup(ctx):
        for n in names:
            p = ctx.path(n)
            p.mkdir(parents=True, exist_ok=True)
            for q in [p, *p.rglob("*")]:
                q.chmod(stat.S_IMODE(q.stat().st_mode) & ~0o222)
    return setup


def readonly_finished_run(ctx):
    run_first()(ctx)
    read_only("run")(ctx)


def make_writable(ctx, outcome):
    for q in [ctx.d, *ctx.d.rglob("*")]:
        if q.is_dir() and not q.is_symlink():
            q.chmod(0o755)


def unprivileged(argv):
    """A real ``tuco`` process that file permissions bind, as they bind any user."""
    return lambda ctx: as_unprivileged(tuco_argv(*ctx.fill(argv)))


# ------------------------------------------------------------------------------------------------ processes

def _pump(stream, lines: list[str]):
    for line in iter(stream.readline, ""):
        lines.append(line)


def signalled(argv, sig, after: str, delay: float = 0.5, then=None):
    """``tuco ARGV`` as a process, sent ``sig`` once a stderr line matches ``after`` (and ``delay`` seconds)."""
    def run(ctx) -> Outcome:
        proc = subprocess.Popen(tuco_argv(*ctx.fill(argv)), cwd=ctx.d, env=child_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        err: list[str] = []
        pump = threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True)
        pump.start()
        deadline = time.monotonic() + 300
        while not any(re.search(after, ln) for ln in err) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(sig)
        out = proc.stdout.read()
        code = proc.wait(timeout=300)
        pump.join(timeout=10)
        if then is not None:
            then(ctx)
        return Outcome(code, out, "".join(err))
    return run


def resume_completes(ctx):
    from tuco_kernels.cli import main

    assert main(ctx.fill(sharded(out="{d}/run/", prompts="{d}/big.jsonl"))) == 0


def resumed_like_fresh(ctx, outcome):
    import pyarrow.parquet as pq

    from tuco_kernels.cli import main

    assert main(ctx.fill(sharded(out="{d}/fresh/", prompts="{d}/big.jsonl"))) == 0
    got, want = (pq.read_table(ctx.path(n) / "scores.parquet").to_pylist() for n in ("run", "fresh"))
    assert got == want, "the resumed run's rows differ from an uninterrupted run's"


def torchrun(argv, kill_rank: int | None = None, after: str = r"prompts from", delay: float = 1.0):
    """``torchrun --nproc-per-node 2 -m tuco_kernels.cli ARGV``; with ``kill_rank``, that rank is killed with SIGKILL
    once a stderr line matches ``after``."""
    def run(ctx) -> Outcome:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "tuco_kernels.cli", *ctx.fill(argv)]
        env = child_env({"OMP_NUM_THREADS": "1"})
        proc = subprocess.Popen(cmd, cwd=ctx.d, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        err: list[str] = []
        pump = threading.Thread(target=_pump, args=(proc.stderr, err), daemon=True)
        pump.start()
        if kill_rank is not None:
            deadline = time.monotonic() + 300
            while not any(re.search(after, ln) for ln in err) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(delay)
            for pid in _children(proc.pid):
                try:
                    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                except OSError:
                    continue
                if f"RANK={kill_rank}".encode() in environ and b"LOCAL_RANK=" + str(kill_rank).encode() in environ:
                    os.kill(pid, signal.SIGKILL)
        out = proc.stdout.read()
        code = proc.wait(timeout=600)
        pump.join(timeout=10)
        return Outcome(code, out, _without_torchrun_report("".join(err)))
    return run


def _children(pid: int) -> list[int]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                found.append(int(p.name))
                found += _children(int(p.name))
    return found


def _without_torchrun_report(stderr: str) -> str:
    """torchrun's own failure report (a traceback of its launcher ending in ChildFailedError) is torchrun's, not
    tuco's; everything else stays."""
    if "ChildFailedError" not in stderr:
        return stderr
    head, sep, tail = stderr.partition("Traceback (most recent call last)")
    kept = [ln for ln in tail.splitlines() if ln.startswith("tuco:") or re.match(r"\[rank\d+\]:? ?tuco:", ln)]
    return head + "\n".join(kept) + ("\n" if kept else "")


def one_line(pattern):
    def check(ctx, outcome):
        hits = [ln for ln in outcome.stderr.splitlines() if re.search(pattern, ln)]
        assert len(hits) == 1, f"{len(hits)} lines say it: {hits}"
    return check


def piped(argv, consumer="head -c 20"):
    """``tuco ARGV | CONSUMER`` in bash; the exit status is tuco's."""
    def run(ctx):
        line = " ".join(_q(a) for a in tuco_argv(*ctx.fill(argv)))
        return ["bash", "-c", f"{line} | {consumer} >/dev/null; exit ${{PIPESTATUS[0]}}"]
    return run


def _q(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


# ------------------------------------------------------------------------------------------------ the API

def api_pair(ctx, pt="pt", ft="ft"):
    import tuco_kernels as tk

    return tk.load_pair(ctx.a[pt], ctx.a[ft])


def api_tensor_ids(ctx):
    import torch

    import tuco_kernels as tk

    pair = api_pair(ctx)
    ids = pair.tokenizer("Hello there")["input_ids"]
    res = tk.score(pair, [{"input_ids": torch.tensor(ids)}, {"input_ids": __import__("numpy").array(ids)}])
    ref = tk.score(pair, [{"input_ids": ids}])
    assert res.tuco.tolist() == [ref.tuco[0]] * 2


def api_generate_nan(ctx):
    import tuco_kernels as tk

    outs = tk.generate(api_pair(ctx, ft="nanft"), ["Hello there"], max_new_tokens=3)
    assert outs[0].get("status", "ok") != "ok", f"a NaN model's completion is not flagged: {outs[0]}"


def api_output_co_nan(ctx):
    import tuco_kernels as tk

    res = tk.score(api_pair(ctx, pt="nanemb_pt"), ["Hello there"], output_co=True)
    assert not res.ok[0], f"OutputCo {res.output_co[0]} with status {res.status[0]!r}"


def api_shard_tokens(ctx):
    import tuco_kernels as tk

    run = tk.score_dataset(api_pair(ctx), MANY, ctx.d / "run", shard_tokens=64)
    plan = json.loads((ctx.d / "run" / "plan.json").read_text())
    assert run.n_shards > 1 and all(s["padded_tokens"] <= 64 or s["prompts"] == 1 for s in plan["shards"])


def api_read_surrogate(ctx):
    import tuco_kernels as tk

    ctx.write("s.jsonl", '{"prompt": "a\\udc80b"}\n')
    tk.read_prompts(ctx.d / "s.jsonl")


def api_foreign_lora(ctx):
    import tuco_kernels as tk

    tk.load_pair(ctx.a["pt"], ctx.a["lora_other"])


def api_messages_role(ctx):
    import tuco_kernels as tk

    tk.score(api_pair(ctx), [[{"role": "robot", "content": "hi"}]])


def api_dataset_foreign(ctx):
    import tuco_kernels as tk

    foreign_shard(ctx)
    pair = api_pair(ctx)
    tk.score_dataset(pair, tk.read_prompts(ctx.a["many"]), ctx.d / "run", batch_tokens=64, shard_tokens=64)
    same_as_reference()(ctx, None)


# ------------------------------------------------------------------------------------------------ the cases

LONG = "The river rose after three days of rain and the old bridge was closed. " * 3
NESTED = '{"prompt": "x", "meta": ' + "[" * 100_000 + "]" * 100_000 + "}"

CASES: list[Case] = [
    # ---------------------------------------------------------------- prompt files
    Case("jsonl-lone-surrogate", "prompts", score(prompts="s.jsonl"), 2, r"s\.jsonl:1: .*surrogate",
         writes("s.jsonl", '{"prompt": "bad \\ud800 half"}\n'), loads=False),
    Case("jsonl-lone-surrogate-in-messages", "prompts", score(prompts="s.jsonl"), 2, r"s\.jsonl:2: .*surrogate",
         writes("s.jsonl", jsonl({"prompt": "fine"}, '{"messages": [{"role": "user", "content": "\\udfff"}]}')),
         loads=False),
    Case("jsonl-lone-surrogate-in-id", "prompts", score(prompts="s.jsonl"), 2, r"s\.jsonl:1: .*surrogate",
         writes("s.jsonl", '{"id": "a\\ud801", "prompt": "fine"}\n'), loads=False),
    Case("jsonl-deeply-nested", "prompts", score(prompts="n.jsonl"), 2, r"n\.jsonl:1: .*nested",
         writes("n.jsonl", NESTED + "\n"), loads=False),
    Case("jsonl-array-line", "prompts", score(prompts="a.jsonl"), 2, r"a\.jsonl:1: .*JSON object",
         writes("a.jsonl", '["just", "a", "list"]\n'), loads=False),
    Case("jsonl-trailing-comma", "prompts", score(prompts="t.jsonl"), 2, r"t\.jsonl:2: invalid JSON",
         writes("t.jsonl", jsonl({"prompt": "ok"}, '{"prompt": "x",}')), loads=False),
    Case("jsonl-prompt-number", "prompts", score(prompts="n.jsonl"), 2, r"n\.jsonl:1: prompt must be a string",
         writes("n.jsonl", jsonl({"prompt": 42})), loads=False),
    Case("jsonl-empty-prompt", "prompts", score(prompts="e.jsonl"), 2, r"e\.jsonl:1: empty prompt",
         writes("e.jsonl", jsonl({"prompt": "   "})), loads=False),
    Case("jsonl-two-kinds", "prompts", score(prompts="k.jsonl"), 2, r"k\.jsonl:1: expected exactly one",
         writes("k.jsonl", jsonl({"prompt": "a", "messages": [{"role": "user", "content": "b"}]})), loads=False),
    Case("jsonl-no-prompt-key", "prompts", score(prompts="k.jsonl"), 2, r"k\.jsonl:1: expected exactly one",
         writes("k.jsonl", jsonl({"question": "a"})), loads=False),
    Case("jsonl-messages-empty", "prompts", score(prompts="m.jsonl"), 2, r"m\.jsonl:1: 'messages' must be",
         writes("m.jsonl", jsonl({"messages": []})), loads=False),
    Case("jsonl-messages-unknown-role", "prompts", score(prompts="m.jsonl"), 2,
         r"m\.jsonl:1: message 0 .*role 'usr'", writes("m.jsonl", jsonl({"messages": [{"role": "usr", "content": "hi"}]})),
         loads=False),
    Case("jsonl-messages-empty-content", "prompts", score(prompts="m.jsonl"), 2,
         r"m\.jsonl:1: message 1 .*empty", writes("m.jsonl", jsonl({"messages": [
             {"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]})), loads=False),
    Case("jsonl-messages-content-list", "prompts", score(prompts="m.jsonl"), 2, r"m\.jsonl:1: message 0",
         writes("m.jsonl", jsonl({"messages": [{"role": "user", "content": ["hi"]}]})), loads=False),
    Case("jsonl-messages-not-list", "prompts", score(prompts="m.jsonl"), 2, r"m\.jsonl:1: 'messages' must be",
         writes("m.jsonl", jsonl({"messages": "hi"})), loads=False),
    Case("jsonl-id-float", "prompts", score(prompts="i.jsonl"), 2, r"i\.jsonl:1: id must be a string or an integer",
         writes("i.jsonl", jsonl({"id": 1.5, "prompt": "a"})), loads=False),
    Case("jsonl-id-null", "prompts", score(prompts="i.jsonl"), 2, r"i\.jsonl:1: id must be",
         writes("i.jsonl", jsonl({"id": None, "prompt": "a"})), loads=False),
    Case("jsonl-id-bool", "prompts", score(prompts="i.jsonl"), 2, r"i\.jsonl:1: id must be",
         writes("i.jsonl", jsonl({"id": True, "prompt": "a"})), loads=False),
    Case("jsonl-id-nan-string", "prompts", score(prompts="i.jsonl"), 2, r"i\.jsonl:1: id 'NaN' reads as a missing",
         writes("i.jsonl", jsonl({"id": "NaN", "prompt": "a"})), loads=False),
    Case("jsonl-id-huge", "prompts", score(prompts="i.jsonl"), 2, r"i\.jsonl:1: id \d+ does not fit",
         writes("i.jsonl", '{"id": 123456789012345678901234567890, "prompt": "a"}\n'), loads=False),
    Case("jsonl-duplicate-id", "prompts", score(prompts="i.jsonl"), 2, r"i\.jsonl:2: duplicate id 'a'",
         writes("i.jsonl", jsonl({"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"})), loads=False),
    Case("jsonl-duplicate-id-mixed-types", "prompts", score(prompts="i.jsonl"), 2, r"i\.jsonl:2: duplicate id '1'",
         writes("i.jsonl", jsonl({"id": 1, "prompt": "x"}, {"id": "1", "prompt": "y"})), loads=False),
    Case("jsonl-input-ids-bool", "prompts", score(prompts="t.jsonl"), 2, r"t\.jsonl:1: 'input_ids' must be",
         writes("t.jsonl", jsonl({"input_ids": [1, True, 3]})), loads=False),
    Case("jsonl-input-ids-empty", "prompts", score(prompts="t.jsonl"), 2, r"t\.jsonl:1: 'input_ids' must be",
         writes("t.jsonl", jsonl({"input_ids": []})), loads=False),
    Case("jsonl-input-ids-negative", "prompts", score(prompts="t.jsonl"), 2,
         r"t\.jsonl:1: token id -5 is outside the model's vocabulary", writes("t.jsonl", jsonl({"input_ids": [1, -5]}))),
    Case("jsonl-input-ids-beyond-vocab", "prompts", score(prompts="t.jsonl"), 2,
         r"t\.jsonl:1: token id 999999 is outside", writes("t.jsonl", jsonl({"input_ids": [1, 999999]}))),
    Case("jsonl-empty-file", "prompts", score(prompts="e.jsonl"), 2, r"e\.jsonl: no prompts", writes("e.jsonl", ""),
         loads=False),
    Case("jsonl-blank-lines-only", "prompts", score(prompts="e.jsonl"), 2, r"e\.jsonl: no prompts",
         writes("e.jsonl", "\n  \n\t\n"), loads=False),
    Case("jsonl-latin1", "prompts", score(prompts="l.jsonl"), 2, r"l\.jsonl: not UTF-8",
         writes("l.jsonl", '{"prompt": "caf\xe9"}\n'.encode("latin-1")), loads=False),
    Case("jsonl-utf16", "prompts", score(prompts="u.jsonl"), 2, r"u\.jsonl: not UTF-8",
         writes("u.jsonl", '{"prompt": "hi"}\n'.encode("utf-16")), loads=False),
    Case("jsonl-nul-and-u2028-in-prompt", "prompts", score(prompts="z.jsonl"), 0, r"written to",
         writes("z.jsonl", jsonl({"prompt": "a\u0000b\u2028c"}))),
    Case("jsonl-crlf", "prompts", score(prompts="c.jsonl"), 0, r"written to",
         writes("c.jsonl", '{"prompt": "one"}\r\n{"prompt": "two"}\r\n')),
    Case("jsonl-huge-line-number", "prompts", score(prompts="h.jsonl"), 2, r"h\.jsonl:2001: empty prompt",
         writes("h.jsonl", jsonl(*([{"prompt": "fine"}] * 2000), {"prompt": ""})), loads=False),
    Case("csv-empty-file", "prompts", score(prompts="e.csv"), 2, r"e\.csv: .*(empty|no header)",
         writes("e.csv", ""), loads=False),
    Case("csv-no-prompt-column", "prompts", score(prompts="c.csv"), 2, r"c\.csv:1: CSV header must have a 'prompt'",
         writes("c.csv", "text,id\nhello,1\n"), loads=False),
    Case("csv-unclosed-quote", "prompts", score(prompts="c.csv"), 2, r"c\.csv:2: malformed CSV",
         writes("c.csv", 'prompt\n"never closed\n'), loads=False),
    Case("csv-extra-field", "prompts", score(prompts="c.csv"), 2, r"c\.csv:3: more fields",
         writes("c.csv", "prompt\nfine\na,b\n"), loads=False),
    Case("csv-blank-prompt", "prompts", score(prompts="c.csv"), 2, r"c\.csv:2: empty prompt",
         writes("c.csv", "prompt,id\n,7\n"), loads=False),
    Case("csv-header-only", "prompts", score(prompts="c.csv"), 2, r"c\.csv: no prompts",
         writes("c.csv", "prompt,id\n"), loads=False),
    Case("csv-duplicate-ids", "prompts", score(prompts="c.csv"), 2, r"c\.csv:3: duplicate id",
         writes("c.csv", "id,prompt\nx,a\nx,b\n"), loads=False),
    Case("csv-bom-and-multiline-cell", "prompts", score(prompts="c.csv"), 0, r"written to",
         writes("c.csv", "\ufeffprompt\n\"two\nlines\"\nplain\n")),
    Case("txt-whitespace-only", "prompts", score(prompts="w.txt"), 2, r"w\.txt: no prompts",
         writes("w.txt", "   \n\n \t \n"), loads=False),
    Case("prompts-is-directory", "prompts", score(prompts="{d}"), 2, r"is a directory, not a prompt file",
         loads=False),
    Case("prompts-missing", "prompts", score(prompts="nope.jsonl"), 2, r"nope\.jsonl: prompt file not found",
         loads=False),
    Case("prompts-unknown-type", "prompts", score(prompts="p.tsv"), 2, r"p\.tsv: unknown prompt file type",
         writes("p.tsv", "prompt\thi\n"), loads=False),
    Case("prompts-link-loop", "prompts", score(prompts="loop.txt"), 2, r"loop\.txt: ",
         lambda ctx: os.symlink("loop.txt", ctx.path("loop.txt")), loads=False),
    Case("prompts-fifo-is-not-a-file", "prompts", score(prompts="fifo.txt"), 2, r"fifo\.txt: .*not a (regular )?file",
         lambda ctx: os.mkfifo(ctx.path("fifo.txt")), loads=False),
    Case("prompt-too-long-for-positions", "prompts", score(pt="{g2pt}", ft="{g2ft}", prompts="l.txt"), 2,
         r"l\.txt:1 \(id 0\): \d+ tokens, but the model has 256 positions", writes("l.txt", LONG * 20 + "\n")),

    # ---------------------------------------------------------------- options
    Case("alpha-nan", "options", score("--alpha", "nan"), 2, r"argument --alpha: must be finite", loads=False),
    Case("alpha-inf", "options", score("--alpha", "inf"), 2, r"argument --alpha: must be finite", loads=False),
    Case("alpha-word", "options", score("--alpha", "high"), 2, r"argument --alpha: not a number", loads=False),
    Case("alpha-per-layer-wrong-count", "options", score("--alpha", "1,2"), 2,
         r"--alpha has 2 values but the model has 3 layers", check=does_not_load, loads=False),
    Case("alpha-negative-per-layer", "options", score("--alpha", "-1,1,1"), 0, r"written to"),
    Case("alpha-negative-scalar", "options", score("--alpha", "-0.5"), 0, r"written to"),
    Case("max-gpu-memory-negative", "options", score("--max-gpu-memory", "-1GiB"), 2,
         r"--max-gpu-memory.*-1GiB", loads=False),
    Case("max-gpu-memory-word", "options", score("--max-gpu-memory", "lots"), 2, r"--max-gpu-memory.*lots",
         check=does_not_load, loads=False),
    Case("max-gpu-memory-on-cpu", "options", score("--max-gpu-memory", "8GiB", "--device", "cpu"), 2,
         r"max.gpu.memory.*CUDA device", check=does_not_load, loads=False),
    Case("batch-tokens-zero", "options", score("--batch-tokens", "0"), 2, r"--batch-tokens: must be at least 1",
         loads=False),
    Case("batch-tokens-fraction", "options", score("--batch-tokens", "1.5"), 2, r"--batch-tokens: not a whole number",
         loads=False),
    Case("batch-tokens-one", "options", score("--batch-tokens", "1"), 0, r"written to"),
    Case("sweep-tokens-zero", "options", score("--sweep-tokens", "0"), 2, r"--sweep-tokens: must be at least 1",
         loads=False),
    Case("dtype-unknown", "options", score("--dtype", "float8"), 2, r"unknown dtype 'float8'", loads=False),
    Case("device-cuda-beyond-the-gpus", "options", score("--device", "cuda:7"), 2, r"device 'cuda:7': ", loads=False),
    Case("device-unknown", "options", score("--device", "tpu"), 2, r"unknown device 'tpu'|device 'tpu'", loads=False),
    Case("template-unknown", "options", score("--template", "llama9"), 2, r"--template: invalid choice",
         loads=False),
    Case("template-with-raw-text", "options", score("--template", "llama2", "--raw-text"), 2,
         r"--template llama2 and --raw-text contradict", loads=False),
    Case("chat-and-raw-text", "options", score("--chat", "--raw-text"), 2, r"--chat and --raw-text contradict",
         loads=False),
    Case("system-prompt-raw-text", "options", score("--system-prompt", "be brief", "--raw-text"), 2,
         r"system prompt .*needs chat rendering"),
    Case("truncate-middle", "options", score("--truncate", "middle"), 2, r"--truncate: invalid choice", loads=False),
    Case("backend-unknown", "options", score("--backend", "magic"), 2, r"--backend: invalid choice", loads=False),
    Case("offload-gpu", "options", score("--offload", "gpu"), 2, r"--offload: invalid choice", loads=False),
    Case("shard-tokens-with-file-out", "options", score("--shard-tokens", "100"), 2,
         r"--shard-tokens and --also go with a directory --out", loads=False),
    Case("also-unknown-format", "options", sharded("--also", "xml"), 2, r"--also: unknown format 'xml'", loads=False),
    Case("rank-timeout-zero", "options", sharded("--rank-timeout", "0"), 2, r"--rank-timeout: must be a positive",
         loads=False),
    Case("pretrained-alone", "options", ["score", "--pretrained", "{pt}", "--prompts", "{txt}", "--out", "o.csv"], 2,
         r"give both --pretrained and --finetuned", loads=False),
    Case("unknown-option", "options", score("--colour"), 2, r"unrecognized arguments: --colour",
         loads=False),
    Case("missing-prompts-option", "options", ["score", "--out", "o.csv"], 2, r"the following arguments are required",
         loads=False),
    Case("steer-max-new-tokens-zero", "options", steer(new="0"), 2, r"--max-new-tokens: must be at least 1",
         loads=False),
    Case("steer-top-p-above-one", "options", steer("--top-p", "1.5"), 2, r"--top-p: must be in \(0, 1\]",
         loads=False),
    Case("steer-temperature-zero", "options", steer("--temperature", "0"), 2, r"--temperature: must be a positive",
         loads=False),
    Case("steer-samples-zero", "options", steer("--samples", "0"), 2, r"--samples: must be at least 1", loads=False),
    Case("steer-seed-word", "options", steer("--seed", "lucky"), 2, r"--seed: invalid int value", loads=False),
    Case("steer-alpha-wrong-count", "options", steer("--alpha", "1,1"), 2,
         r"--alpha has 2 values but the model has 3 layers", loads=False),
    Case("steer-alpha-nan", "options", steer("--alpha", "1", "nan"), 2, r"--alpha: must be finite", loads=False),
    Case("steer-shard-tokens", "options", steer("--shard-tokens", "4"), 2, r"unrecognized arguments: --shard-tokens",
         loads=False),

    # ---------------------------------------------------------------- output files
    Case("out-unknown-suffix", "output", score(out="o.txt"), 2, r"o\.txt: unknown output type", loads=False),
    Case("out-exists", "output", score(out="o.csv"), 2, r"o\.csv: exists; pass --force", writes("o.csv", "x\n"),
         check=lambda ctx, o: None if ctx.path("o.csv").read_text() == "x\n" else (_ for _ in ()).throw(
             AssertionError("the existing output was replaced")), loads=False),
    Case("out-is-the-input", "output", score("--force", out="p.csv", prompts="p.csv"), 2, r"p\.csv: is also an input",
         writes("p.csv", "prompt\nhello\n"), loads=False),
    Case("out-missing-folder", "output", score(out="nowhere/o.csv"), 2, r"directory nowhere does not exist",
         loads=False),
    Case("out-in-proc", "output", score(out="/proc/tuco-x.jsonl"), 2, r"/proc/tuco-x\.jsonl: the folder /proc is not writable",
         loads=False),
    Case("out-named-like-a-file-is-a-directory", "output", score(out="x.jsonl"), 2,
         r"x\.jsonl: is a directory", lambda ctx: ctx.path("x.jsonl").mkdir(), check=no_file("x.jsonl/plan.json"),
         loads=False),
    Case("out-file-under-a-file", "output", score(out="f.txt/o.csv"), 2, r"f\.txt", writes("f.txt", "x"),
         loads=False),
    Case("out-lock-is-a-link", "output", score(out="o.csv"), 2, r"\.o\.csv\.lock.*(link|not a regular file)",
         lambda ctx: os.symlink(victim(ctx), ctx.path(".o.csv.lock")), check=unchanged(), loads=False),
    Case("out-is-a-link-to-a-user-file", "output", score("--force", out="o.csv"), 0, r"written to",
         lambda ctx: os.symlink(victim(ctx), ctx.path("o.csv")), check=unchanged()),
    Case("out-sidecar-is-a-link", "output", score(out="o.csv"), 0, r"written to",
         lambda ctx: os.symlink(victim(ctx), ctx.path("o.csv.meta.json")), check=unchanged()),
    Case("out-follows-umask-027", "output", score(out="o.parquet"), 0, r"written to", umask=0o027,
         check=modes(0o640, "o.parquet", "o.parquet.meta.json")),
    Case("out-read-only-folder", "output", unprivileged(score(out="ro/o.csv")), 2, r"ro is not writable",
         read_only("ro"), check=all_of(does_not_load, make_writable), how="proc", loads=False),
    Case("out-empty-string", "output", score(out=""), 2, r"", loads=False),
    Case("steer-out-exists", "output", steer("--out", "s.jsonl"), 2, r"s\.jsonl: exists",
         writes("s.jsonl", "{}\n"), loads=False),
    Case("steer-out-unknown-suffix", "output", steer("--out", "s.md"), 2, r"s\.md: unknown output type", loads=False),
    Case("steer-out-parquet", "output", steer("--out", "s.parquet"), 0, r"completions written to"),
    Case("steer-out-lock-link", "output", steer("--out", "s.csv"), 2, r"\.s\.csv\.lock.*(link|not a regular file)",
         lambda ctx: os.symlink(victim(ctx), ctx.path(".s.csv.lock")), check=unchanged(), loads=False),

    # ---------------------------------------------------------------- sharded runs: the directory
    Case("lock-is-a-link", "dataset", sharded(), 2, r"\.lock.*(link|not a regular file)", lock_link,
         check=all_of(unchanged(), does_not_load), loads=False),
    Case("lock-is-a-link-finished-run", "dataset", sharded(), 2, r"\.lock.*(link|not a regular file)",
         lock_link_in_finished_run, check=unchanged(), loads=False),
    Case("lock-is-a-directory", "dataset", sharded(), 2, r"\.lock.*not a regular file",
         lambda ctx: (ctx.path("run/.lock")).mkdir(parents=True), loads=False),
    Case("lock-stale-file", "dataset", sharded(), 0, r"written to",
         lambda ctx: ctx.write("run/.lock", "deadhost pid 1 since long ago\n"), check=same_as_reference()),
    Case("lock-held-by-another-run", "dataset", sharded(), 2, r"another run is writing this directory "
         r"\(otherhost pid 4242", held_lock, check=release_held),
    Case("shards-is-a-file", "dataset", sharded(), 2, r"run/shards: .*not a directory",
         lambda ctx: ctx.write("run/shards", "x"), check=does_not_load, loads=False),
    Case("errors-is-a-file", "dataset", sharded(), 2, r"run/errors: .*not a directory",
         lambda ctx: ctx.write("run/errors", "x"), check=does_not_load, loads=False),
    Case("shards-is-a-link", "dataset", sharded(), 2, r"run/shards: .*link", shards_link,
         check=no_file("elsewhere/000000.parquet"), loads=False),
    Case("out-dir-is-a-file", "dataset", sharded(out="run/"), 2, r"run/?: exists and is not a directory",
         writes("run", "x"), loads=False),
    Case("out-dir-of-user-files", "dataset", sharded(), 2, r"holds other files \(notes\.txt\)",
         writes("run/notes.txt", "mine"), loads=False),
    Case("out-read-only-empty-dir", "dataset", unprivileged(sharded(out="ro/")), 2, r"ro.* is not writable",
         read_only("ro"), check=all_of(does_not_load, make_writable), how="proc", loads=False),
    Case("out-read-only-parent", "dataset", unprivileged(sharded(out="ro/run/")), 2, r"ro.* is not writable",
         read_only("ro"), check=all_of(does_not_load, make_writable), how="proc", loads=False),
    Case("out-read-only-finished-run", "dataset", unprivileged(sharded(out="run/")), 2, r"run.* is not writable",
         readonly_finished_run, check=all_of(does_not_load, make_writable), how="proc", loads=False),
    Case("out-trailing-slash-on-a-suffix", "dataset", sharded(out="r.parquet/"), 0, r"written to"),
    Case("sharded-umask-022", "dataset", sharded(), 0, r"written to", umask=0o022,
         check=modes(0o644, "run/plan.json", "run/shards/*.parquet", "run/scores.parquet", "run/_SUCCESS")),
    Case("sharded-umask-077", "dataset", sharded("--also", "csv"), 0, r"written to", umask=0o077,
         check=modes(0o600, "run/plan.json", "run/scores.csv")),
    Case("shard-tokens-below-a-micro-batch", "dataset",
         score("--shard-tokens", "64", out="{d}/run/", prompts="{many}"), 0, r"written to", check=max_shard_padded(64)),
    Case("shard-tokens-one", "dataset", score("--shard-tokens", "1", out="{d}/run/", prompts="{many}"), 0,
         r"written to", check=max_shard_padded(1)),
    Case("stale-partials-removed", "dataset", sharded(), 0, r"written to",
         lambda ctx: (run_first()(ctx), unfinish(ctx), ctx.write("run/shards/.000000.parquet.abc.partial", "half")),
         check=all_of(no_file("run/shards/.000000.parquet.abc.partial"), same_as_reference())),

    # ---------------------------------------------------------------- sharded runs: foreign and damaged files
    Case("foreign-shard-other-alpha", "dataset", sharded(), 0, r"shard 0 .*another run", foreign_shard,
         check=same_as_reference()),
    Case("foreign-shard-other-prompts", "dataset", sharded(), 0, r"shard 0 .*(another run|other prompts|ids)",
         foreign_prompts_shard, check=same_as_reference()),
    Case("shard-truncated", "dataset", sharded(), 0, r"shard 1 .*damaged", damage_shard("truncated"),
         check=same_as_reference()),
    Case("shard-empty", "dataset", sharded(), 0, r"shard 1 .*damaged", damage_shard("empty"),
         check=same_as_reference()),
    Case("shard-garbage", "dataset", sharded(), 0, r"shard 1 .*damaged", damage_shard("garbage"),
         check=same_as_reference()),
    Case("shard-magic-only", "dataset", sharded(), 0, r"shard 1 .*damaged", damage_shard("magic"),
         check=same_as_reference()),
    Case("shards-swapped", "dataset", sharded(), 0, r"shard 0 .*holds shard 1", swap_shards,
         check=same_as_reference()),
    Case("shard-duplicated", "dataset", sharded(), 0, r"shard 1 .*holds shard 0", duplicate_shard,
         check=same_as_reference()),
    Case("shard-is-a-link", "dataset", sharded(), 0, r"shard 0 ", shard_file_link,
         check=all_of(unchanged(), same_as_reference())),
    Case("scores-is-a-link", "dataset", sharded(), 0, r"written to", scores_link,
         check=all_of(unchanged(), same_as_reference())),
    Case("shard-missing", "dataset", sharded(), 0, r"written to",
         lambda ctx: (run_first()(ctx), unfinish(ctx), shard_files(ctx)[2].unlink()), check=same_as_reference()),
    Case("success-but-shard-missing", "dataset", sharded(), 0, r"written to",
         lambda ctx: (run_first()(ctx), shard_files(ctx)[0].unlink()), check=same_as_reference()),
    Case("stray-shard-ignored", "dataset", sharded(), 0, r"written to",
         lambda ctx: (run_first()(ctx), unfinish(ctx), shutil.copy(shard_files(ctx)[0], ctx.path("run/shards/999999.parquet"))),
         check=same_as_reference()),
    Case("scores-garbage-beside-success", "dataset", sharded(), 0, r"scores\.parquet.*(damaged|again)",
         finished_then(garbage_scores), check=same_as_reference()),
    Case("scores-missing-beside-success", "dataset", sharded(), 0, r"written to",
         finished_then(lambda ctx: (ctx.path("run/scores.parquet")).unlink()), check=same_as_reference()),
    Case("scores-csv-truncated-beside-success", "dataset", sharded("--also", "csv"), 0,
         r"scores\.csv.*(damaged|again)", lambda ctx: (run_first("--also", "csv")(ctx), truncated_scores_csv(ctx)),
         check=lambda ctx, o: _assert((ctx.path("run") / "scores.csv").read_bytes()
                                      == (reference(ctx, "--also", "csv") / "scores.csv").read_bytes(),
                                      "scores.csv is still truncated")),
    Case("success-garbage", "dataset", sharded(), 0, r"written to",
         finished_then(lambda ctx: ctx.write("run/_SUCCESS", b"\xff\xfe garbage")), check=same_as_reference()),
    Case("plan-garbage", "dataset", sharded(), 0, r"plan\.json.*(damaged|unreadable).*again",
         finished_then(lambda ctx: (ctx.write("run/plan.json", "{{{"), unfinish(ctx))), check=same_as_reference()),
    Case("plan-fingerprint-null", "dataset", sharded(), 0, r"plan\.json.*(damaged|unreadable)",
         finished_then(plan_edit(lambda p: {**p, "fingerprint": None})), check=same_as_reference()),
    Case("plan-not-utf8", "dataset", sharded(), 0, r"plan\.json.*(damaged|unreadable)",
         finished_then(plan_edit(lambda p: b"\xff\xfe\x00garbage")), check=same_as_reference()),
    Case("plan-empty", "dataset", sharded(), 0, r"plan\.json.*(damaged|unreadable)",
         finished_then(plan_edit(lambda p: b"")), check=same_as_reference()),
    Case("plan-format-from-the-future", "dataset", sharded(), 2, r"plan\.json: plan format 99",
         finished_then(plan_edit(lambda p: {**p, "format": 99}))),
    Case("plan-other-alpha", "dataset", sharded(), 2, r"other alpha", run_first("--alpha", "0.5")),
    Case("rerun-with-layers", "dataset", sharded("--layers"), 2, r"other layers", run_first(), check=does_not_load),
    Case("rerun-with-other-prompts", "dataset", sharded(prompts="{jsonl}"), 2, r"other .*(n_prompts|inputs)",
         run_first()),
    Case("rerun-with-other-shard-tokens", "dataset", score("--batch-tokens", "64", "--shard-tokens", "128",
                                                            out="{d}/run/", prompts="{many}"), 2,
         r"other shard_tokens", run_first(), check=does_not_load),
    Case("rerun-finished-does-nothing", "dataset", sharded(), 0, r"this run\s+0 shards over 1 process", run_first(),
         check=same_as_reference()),
    Case("sharded-nan-model", "dataset", sharded(ft="{nanft}"), 3, r"prompts have no usable TuCo"),
    Case("sharded-also-both", "dataset", sharded("--also", "csv,jsonl"), 0, r"written to",
         check=lambda ctx, o: _assert(all((ctx.path("run") / n).is_file() for n in ("scores.csv", "scores.jsonl")),
                                      "a merged format is missing")),

    # ---------------------------------------------------------------- steering
    Case("steer-nan-model", "steering", steer("--out", "s.jsonl", ft="{nanft}"), 3, r"no usable|non-finite",
         check=status_flagged("s.jsonl")),
    Case("steer-nan-model-sample", "steering", steer("--sample", "--out", "s.csv", ft="{nanft}"), 3,
         r"no usable|non-finite", check=status_flagged("s.csv")),
    Case("steer-huge-alpha-fp16", "steering", steer("--dtype", "float16", "--alpha", "1e30", "--out", "s.jsonl"), 3,
         r"non-finite: from layer \d", check=status_flagged("s.jsonl")),
    Case("steer-huge-alpha-fp16-sample", "steering", steer("--dtype", "float16", "--alpha", "1e30", "--sample"), 3,
         r"non-finite"),
    Case("steer-huge-alpha-fp16-no-cache", "steering", steer("--dtype", "float16", "--alpha", "1e30", "--no-cache"),
         3, r"non-finite"),
    Case("steer-fp16-overflow", "steering", steer("--dtype", "float16", ft="{bigft}"), 3,
         r"bfloat16|float32"),
    Case("steer-mixed-alphas-flag-only-the-bad", "steering", steer("--dtype", "float16", "--alpha", "1", "1e30",
                                                                     "--out", "s.jsonl"), 3,
         r"no usable|non-finite", check=lambda ctx, o: _statuses(ctx.path("s.jsonl"), ok=3, bad=3)),
    Case("steer-past-positions", "steering", steer(pt="{g2pt}", ft="{g2ft}", new="1000"), 2,
         r"max_new_tokens 1000 .*exceed the model's 256 positions"),
    Case("steer-ok", "steering", steer("--alpha", "0.5", "1", "--out", "s.jsonl"), 0, r"6 completions written"),
    Case("steer-samples", "steering", steer("--sample", "--samples", "2", "--seed", "3", "--out", "s.csv"), 0,
         r"6 completions written"),
    Case("steer-into-head", "steering", piped(steer(prompts="{d}/many.txt")), 141, r"",
         writes("many.txt", "\n".join(MANY * 3) + "\n"), how="proc",
         check=lambda ctx, o: _no_error_text(o)),
    Case("steer-ascii-stdout", "steering", lambda ctx: tuco_argv(*ctx.fill(steer())), 0, r"",
         env={"PYTHONIOENCODING": "ascii"}, how="proc",
         check=lambda ctx, o: _assert("alpha" in o.stdout.lower() or "\\u03b1" in o.stdout, o.stdout[:200])),
    Case("steer-closed-stdout-file", "steering", piped(steer(), consumer="true"), 141, r"", how="proc",
         check=lambda ctx, o: _no_error_text(o)),

    # ---------------------------------------------------------------- numeric faults
    Case("nan-in-finetuned-block", "numeric", score(ft="{nanft}"), 3, r"non-finite: from layer 1, the fine-tuned"),
    Case("nan-in-pretrained-block", "numeric", score(pt="{nanpt}"), 3, r"non-finite: from layer 0, the pre-trained"),
    Case("inf-in-finetuned-block", "numeric", score(ft="{infft}"), 3, r"non-finite: from layer 2"),
    Case("nan-in-embedding", "numeric", score(ft="{nanemb_ft}"), 3, r"non-finite: the embedding"),
    Case("nan-model-no-batch-dependence-line", "numeric", score(ft="{nanft}"), 3, r"no usable TuCo",
         check=lambda ctx, o: _assert("depend on the other prompts" not in o.stderr, "misleading batch line")),
    Case("output-co-nan-pretrained-forward", "numeric", score("--output-co", pt="{nanemb_pt}", out="o.jsonl"), 3,
         r"OutputCo", check=status_flagged("o.jsonl", where="OutputCo")),
    Case("fp16-overflow", "numeric", score("--dtype", "float16", ft="{bigft}"), 3, r"try --dtype bfloat16"),
    Case("huge-alpha-fp16-score", "numeric", score("--dtype", "float16", "--alpha", "1e30"), 3, r"no usable TuCo"),
    Case("nan-rows-null-in-csv", "numeric", score(ft="{nanft}", out="o.csv"), 3, r"no usable",
         check=lambda ctx, o: _assert("nan" not in ctx.path("o.csv").read_text().lower().replace("non-finite", ""),
                                      "a bare NaN in the CSV")),
    Case("api-output-co-nan", "numeric", api_output_co_nan, 0, r"", how="api"),
    Case("api-generate-nan", "numeric", api_generate_nan, 0, r"", how="api"),

    # ---------------------------------------------------------------- models, adapters, GGUF, hub
    Case("model-path-missing", "models", score(pt="{d}/none"), 2, r"none: not a model directory", loads=False),
    Case("model-dir-without-config", "models", score(pt="{d}/m"), 2, r"m: no config\.json",
         lambda ctx: ctx.path("m").mkdir(), loads=False),
    Case("model-config-garbage", "models", score(ft="{d}/m"), 2, r"m: cannot read the model config",
         writes("m/config.json", "{not json"), loads=False),
    Case("model-type-unknown", "models", score(ft="{d}/m"), 2, r"m: cannot read the model config",
         writes("m/config.json", '{"model_type": "nonesuch"}'), loads=False),
    Case("model-without-weights", "models", score(pt="{d}/m"), 2, r"m: no model weights",
         lambda ctx: _config_only(ctx, "m")),
    Case("model-pickle-weights", "models", score(pt="{d}/m"), 2, r"pytorch_model\.bin: pickle weights",
         lambda ctx: (_config_only(ctx, "m"), ctx.write("m/pytorch_model.bin", b"\x80\x04K."))),
    Case("model-safetensors-truncated", "models", score(ft="{d}/m"), 2, r"model\.safetensors",
         lambda ctx: (shutil.copytree(ctx.a["ft"], ctx.path("m")),
                      _truncate(ctx.path("m/model.safetensors")))),
    Case("model-config-disagrees-with-weights", "models", score(ft="{d}/m"), 2, r"m: .*(disagree|shape)",
         lambda ctx: (shutil.copytree(ctx.a["ft"], ctx.path("m")), _edit_json(ctx.path("m/config.json"),
                                                                              intermediate_size=96))),
    Case("pair-layers-differ", "models", score(ft="{four}"), 2, r"incompatible pair: .*layers", loads=False),
    Case("pair-is-encoder-decoder", "models", score(ft="{d}/t5"), 2, r"t5|encoder",
         writes("t5/config.json", json.dumps({"model_type": "t5", "d_model": 32, "num_layers": 2,
                                              "vocab_size": 320}))),
    Case("model-path-is-config-file", "models", score(pt="{pt}/config.json"), 2, r"config\.json: not a model",
         loads=False),
    Case("lora-for-another-base", "models", score(ft="{lora_other}"), 2,
         r"lora_other.*(q_proj|v_proj|down_proj).*\[.*\].*\[.*\]"),
    Case("lora-config-invalid-json", "models", score(ft="{d}/ad"), 2, r"adapter_config\.json.*(JSON|json)",
         lambda ctx: (shutil.copytree(ctx.a["lora"], ctx.path("ad")), ctx.write("ad/adapter_config.json", "{oops"))),
    Case("lora-config-not-lora", "models", score(ft="{d}/ad"), 2, r"adapter_config\.json.*peft_type",
         lambda ctx: (shutil.copytree(ctx.a["lora"], ctx.path("ad")),
                      _edit_json(ctx.path("ad/adapter_config.json"), peft_type="NONSENSE"))),
    Case("lora-without-weights", "models", score(ft="{d}/ad"), 2, r"ad: no adapter weights",
         lambda ctx: (shutil.copytree(ctx.a["lora"], ctx.path("ad")), ctx.path("ad/adapter_model.safetensors").unlink())),
    Case("lora-ok", "models", score(ft="{lora}"), 0, r"written to"),
    Case("lora-for-another-base-streamed", "models", score("--offload", "disk", ft="{lora_other}"), 2,
         r"lora_other.*\[.*\].*\[.*\]"),
    Case("gguf-empty", "models", score(pt="{d}/e.gguf"), 2, r"e\.gguf: (?!.*mmap).*empty", writes("e.gguf", b"")),
    Case("gguf-magic-only", "models", score(pt="{d}/m.gguf"), 2, r"m\.gguf: (?!.*mmap)", writes("m.gguf", b"GGUF")),
    Case("gguf-truncated", "models", score(pt="{d}/t.gguf"), 2, r"t\.gguf: (?!.*(mmap|numpy))",
         lambda ctx: ctx.write("t.gguf", Path(ctx.a["gguf"]).read_bytes()[:4096])),
    Case("gguf-not-gguf", "models", score(pt="{d}/n.gguf"), 2, r"n\.gguf: .*not a GGUF",
         writes("n.gguf", b"PK\x03\x04 a zip file really" * 10)),
    Case("gguf-missing", "models", score(pt="{d}/x.gguf"), 2, r"x\.gguf: GGUF file not found", loads=False),
    Case("tokenizer-dir-without-files", "models", score("--tokenizer", "{d}/t"), 2, r"t: the tokenizer given",
         lambda ctx: ctx.path("t").mkdir()),
    Case("tokenizer-json-garbage", "models", score(ft="{d}/m"), 2, r"m: cannot load the tokenizer",
         lambda ctx: (shutil.copytree(ctx.a["ft"], ctx.path("m")), ctx.write("m/tokenizer.json", "{bad"))),
    Case("hub-id-not-cached", "models", score(pt="nobody/nothing"), 2, r"nobody/nothing: not a local path",
         env={"HF_HUB_CACHE": "{hub}"}, loads=False),
    Case("hub-ok", "models", score(pt="tiny-org/pt", ft="tiny-org/ft"), 0, r"written to",
         env={"HF_HUB_CACHE": "{hub}"}),
    Case("hub-dangling-blob", "models", score(pt="tiny-org/pt", ft="tiny-org/ft"), 2,
         r"tiny-org/pt: .*(incomplete|missing|dangling)", lambda ctx: _hub_copy(ctx, "dangling"),
         env={"HF_HUB_CACHE": "{d}/hub"}, loads=False),
    Case("hub-empty-ref", "models", score(pt="tiny-org/pt", ft="tiny-org/ft"), 2,
         r"tiny-org/pt: .*refs/main", lambda ctx: _hub_copy(ctx, "empty-ref"),
         env={"HF_HUB_CACHE": "{d}/hub"}, loads=False),
    Case("hub-ref-to-missing-snapshot", "models", score(pt="tiny-org/pt", ft="tiny-org/ft"), 2,
         r"tiny-org/pt: ", lambda ctx: _hub_copy(ctx, "bad-ref"), env={"HF_HUB_CACHE": "{d}/hub"}, loads=False),
    Case("api-foreign-lora", "models", api_foreign_lora, 2, r"lora_other.*\[.*\].*\[.*\]", how="api"),

    # ---------------------------------------------------------------- reports
    Case("report-missing-file", "report", ["report", "none.csv", "--out", "r.html"], 2, r"none\.csv: no such file",
         loads=False),
    Case("report-garbage-parquet", "report", ["report", "g.parquet", "--out", "r.html"], 2, r"g\.parquet: cannot read",
         writes("g.parquet", b"PAR1garbagePAR1"), loads=False),
    Case("report-no-tuco-column", "report", ["report", "s.csv", "--out", "r.html"], 2, r"s\.csv: no 'tuco' column",
         writes("s.csv", "id,score\n1,0.5\n"), loads=False),
    Case("report-empty-csv", "report", ["report", "s.csv", "--out", "r.html"], 2, r"s\.csv: ",
         writes("s.csv", ""), loads=False),
    Case("report-auc-unknown-group", "report", ["report", "{d}/a.csv", "{d}/b.csv", "--auc", "a,zzz", "--out", "r.html"],
         2, r"zzz", lambda ctx: _scores(ctx, "a.csv", "b.csv"), loads=False),
    Case("report-group-missing-column", "report", ["report", "{d}/a.csv", "--group", "src", "--out", "r.html"], 2,
         r"no column 'src'", lambda ctx: _scores(ctx, "a.csv"), loads=False),
    Case("report-names-count", "report", ["report", "{d}/a.csv", "--names", "x,y", "--out", "r.html"], 2,
         r"--names gives 2 name", lambda ctx: _scores(ctx, "a.csv"), loads=False),
    Case("report-jsonl-bad-line", "report", ["report", "s.jsonl", "--out", "r.html"], 2, r"s\.jsonl, line 2",
         writes("s.jsonl", '{"id": 1, "tuco": 0.5}\n{oops\n'), loads=False),
    Case("report-top-zero", "report", ["report", "{d}/a.csv", "--top", "0", "--out", "r.html"], 2,
         r"--top 0: must be at least 1", lambda ctx: _scores(ctx, "a.csv"), loads=False),
    Case("report-out-not-html", "report", ["report", "{d}/a.csv", "--out", "r.csv"], 2, r"r\.csv: the report is HTML",
         lambda ctx: _scores(ctx, "a.csv"), loads=False),
    Case("report-out-missing-folder", "report", ["report", "{d}/a.csv", "--out", "no/r.html"], 2,
         r"directory no does not exist", lambda ctx: _scores(ctx, "a.csv"), loads=False),
    Case("report-out-read-only", "report", unprivileged(["report", "{d}/a.csv", "--out", "{d}/ro/r.html"]), 2,
         r"ro is not writable", lambda ctx: (_scores(ctx, "a.csv"), read_only("ro")(ctx)), how="proc",
         check=make_writable, loads=False),
    Case("report-out-link-to-user-file", "report", ["report", "{d}/a.csv", "--out", "r.html"], 0, r"written to",
         lambda ctx: (_scores(ctx, "a.csv"), os.symlink(victim(ctx), ctx.path("r.html"))), check=unchanged(),
         loads=False),
    Case("report-follows-umask", "report", ["report", "{d}/a.csv", "--out", "r.html"], 0, r"written to",
         lambda ctx: _scores(ctx, "a.csv"), umask=0o077, check=modes(0o600, "r.html"), loads=False),
    Case("report-flagged-rows", "report", ["report", "{d}/a.csv", "--out", "r.html"], 0, r"flagged",
         lambda ctx: _scores(ctx, "a.csv", flagged=True), loads=False),
    Case("report-bootstrap-word", "report", ["report", "{d}/a.csv", "--bootstrap", "many", "--out", "r.html"], 2,
         r"--bootstrap: invalid int", lambda ctx: _scores(ctx, "a.csv"), loads=False),

    # ---------------------------------------------------------------- the Python API
    Case("api-tensor-and-numpy-input-ids", "api", api_tensor_ids, 0, r"", how="api"),
    Case("api-read-prompts-surrogate", "api", api_read_surrogate, 2, r"s\.jsonl:1: .*surrogate", how="api",
         loads=False),
    Case("api-unknown-role", "api", api_messages_role, 2, r"prompt 0: message 0 .*role 'robot'", how="api"),
    Case("api-shard-tokens-below-batch", "api", api_shard_tokens, 0, r"", how="api"),
    Case("api-dataset-foreign-shard", "api", api_dataset_foreign, 0, r"", how="api"),

    # ---------------------------------------------------------------- signals, environment, torchrun
    Case("sigterm-file-run", "environment", signalled(score(prompts="{d}/big.txt"), signal.SIGTERM, r"rendering:"),
         143, r"tuco: terminated", writes("big.txt", "\n".join(MANY * 1000) + "\n"), how="custom",
         check=no_file("o.csv")),
    Case("sigint-file-run", "environment", signalled(score(prompts="{d}/big.txt"), signal.SIGINT, r"rendering:"),
         130, r"tuco: interrupted", writes("big.txt", "\n".join(MANY * 1000) + "\n"), how="custom",
         check=no_file("o.csv")),
    Case("sigterm-sharded-run-resumes", "environment",
         signalled(sharded(prompts="{d}/big.jsonl"), signal.SIGTERM, r"prompts from", delay=0.5,
                   then=resume_completes), 143, r"tuco: terminated.*rerun",
         # enough prompts (640) that the signal lands while scoring (48 were all done before it on an idle machine)
         writes("big.jsonl", jsonl(*({"id": i, "prompt": p} for i, p in enumerate(MANY * 80)))), how="custom",
         check=resumed_like_fresh),
    Case("sigterm-steer", "environment", signalled(steer(prompts="{d}/big.txt", new="8"), signal.SIGTERM,
                                                   r"rendering:"), 143, r"tuco: terminated",
         writes("big.txt", "\n".join(MANY * 200) + "\n"), how="custom"),   # 1600 prompts: still steering at the signal
    Case("torchrun-file-out", "environment", torchrun(score(out="{d}/o.csv")), 1, r"torchrun.*directory",
         how="custom", check=all_of(one_line(r"tuco: error:"), no_file("o.csv"))),
    Case("torchrun-one-rank-gone", "environment", torchrun(sharded(prompts="{d}/big.jsonl"), kill_rank=1,
                                                         after=r"prompts from", delay=0.3), 1,
         r"rank 1.*(died|killed|lost|signal)|torchrun.*(another rank|ended)",
         writes("big.jsonl", jsonl(*({"id": i, "prompt": p} for i, p in enumerate(MANY * 100)))), how="custom",
         check=lambda ctx, o: _assert(len([ln for ln in o.stderr.splitlines() if "tuco:" in ln and
                                           re.search(r"killed|SIGTERM|lost|died|terminated", ln)]) == 1,
                                      o.stderr[-2000:])),
    Case("tmpdir-missing-still-refuses-cleanly", "environment", score(prompts="none.txt"), 2, r"none\.txt",
         env={"TMPDIR": "/nonexistent-tmp"}, loads=False),
    Case("home-unwritable-hf-cache", "environment", lambda ctx: tuco_argv(*ctx.fill(score())), 0, r"written to",
         env={"HF_HOME": "/proc/nope"}, how="proc"),
]


# ------------------------------------------------------------------------------------------------ small helpers

def _assert(cond, what):
    assert cond, what


def _no_error_text(o: Outcome):
    assert "error" not in o.stderr.lower() and "Traceback" not in o.stderr, o.stderr[-500:]


def _statuses(path: Path, ok: int, bad: int):
    rows = [json.loads(ln) for ln in path.read_text().splitlines()]
    got_ok = sum(r.get("status", "ok") == "ok" for r in rows)
    assert (got_ok, len(rows) - got_ok) == (ok, bad), f"{got_ok} ok and {len(rows) - got_ok} flagged rows"


def _config_only(ctx, name):
    ctx.path(name).mkdir()
    shutil.copy(Path(ctx.a["pt"]) / "config.json", ctx.path(name) / "config.json")


def _truncate(p: Path):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])


def _edit_json(p: Path, **fields):
    d = json.loads(p.read_text())
    d.update(fields)
    p.write_text(json.dumps(d))


def _scores(ctx, *names, flagged=False):
    for n in names:
        rows = ["id,text,tuco,preco,n_tokens,status"]
        for i in range(12):
            t = 0.1 + 0.05 * i + (0.02 if n.startswith("b") else 0)
            rows.append(f"{i},prompt {i},{t},{1 - t},{5 + i},ok")
        if flagged:
            rows.append("99,bad,,,7,non-finite: from layer 1")
        ctx.write(n, "\n".join(rows) + "\n")


def _hub_copy(ctx, how):
    shutil.copytree(ctx.a["hub"], ctx.path("hub"), symlinks=True)
    repo = ctx.path("hub") / "models--tiny-org--pt"
    if how == "dangling":
        target = os.readlink(repo / "snapshots" / ("1" * 40) / "config.json")
        (repo / "snapshots" / ("1" * 40) / target).resolve().unlink()
    elif how == "empty-ref":
        (repo / "refs" / "main").write_text("")
    elif how == "bad-ref":
        (repo / "refs" / "main").write_text("9" * 40)


# ------------------------------------------------------------------------------------------------ pytest

@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_assets(tmp_path_factory.mktemp("sweep-assets"))


def _marks(case: Case):
    slow = case.loads or case.how in ("proc", "custom")
    return [pytest.mark.slow] if slow else []


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=_marks(c)) for c in CASES])
def test_case(case, assets, tmp_path):
    kind, detail, outcome = run_case(case, assets, tmp_path / case.name)
    assert kind == "ok", f"{case.name}: {kind}: {detail}\n--- stderr ---\n{outcome.stderr[-3000:]}"


def test_the_sweep_is_large_and_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    assert len(CASES) >= 150
    assert {c.area for c in CASES} >= {"prompts", "options", "output", "dataset", "steering", "numeric", "models",
                                       "report", "api", "environment"}


# ------------------------------------------------------------------------------------------------ survey

def survey(argv=None) -> int:
    import argparse
    import tempfile

    p = argparse.ArgumentParser(description="run the sweep's cases and count outcomes by kind")
    p.add_argument("--area")
    p.add_argument("--only", help="regular expression on case names")
    p.add_argument("--keep", help="work in this folder (kept afterwards)")
    p.add_argument("--json", help="write every case's outcome here")
    args = p.parse_args(argv)
    root = Path(args.keep or tempfile.mkdtemp(prefix="tuco-sweep-"))
    assets = build_assets(root / "assets")
    chosen = [c for c in CASES if (not args.area or c.area == args.area) and (not args.only or re.search(args.only,
                                                                                                      c.name))]
    results = []
    for case in chosen:
        t0 = time.perf_counter()
        kind, detail, _ = run_case(case, assets, root / "cases" / case.name)
        results.append((case.name, kind, detail))
        print(f"{kind:>9}  {case.area:<11} {case.name:<45} {time.perf_counter() - t0:5.1f}s  {detail[:160]}",
              flush=True)
    counts = summarize(results)
    print(json.dumps(counts))
    if args.json:
        Path(args.json).write_text(json.dumps({"counts": counts, "cases": results}, indent=1))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if counts["ok"] == counts["cases"] else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    sys.exit(survey())
