"""The run: :func:`score_dataset` tokenizes and plans on every rank; rank 0 locks the directory, checks or writes
plan.json and lists the shards left; every rank claims shards through the coordinator until none is left, scoring
and writing each (one that raises is recorded and the run goes on); rank 0 merges. :class:`DatasetRun` says how it
went."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from ..errors import TucoError, positive_int
from ..files import write_json
from ..core.budget import check_peak, parse_size
from ..prompts.tokenize import pad_id_of, rendering, use_chat
from ..result import run_metadata
from ..score import DEFAULT_BATCH_TOKENS, SCHEDULES
from .coordinator import Coordinator, RankLost, RunAborted, connect
from .layout import DirectoryLock, Layout, now
from .merge import EXTRA_FORMATS, merge_shards
from .plan import DatasetPlan, check_plan, compare_fingerprints, device_name, make_plan, read_plan
from .progress import Progress
from .scoring import score_shard, write_shard
from .tokens import tokenize_all
from .verify import merged_problem, output_sizes, set_aside, shard_problem

DEFAULT_SHARD_TOKENS = 262144      # padded tokens per shard: one layer-major sweep's worth (core/budget.py)


class ShardsFailed(TucoError):
    """Some shards raised; the others are written and a rerun retries only the missing ones."""


@dataclass
class DatasetRun:
    """How a :func:`score_dataset` call went (rank 0's view of the whole job; other ranks: their own part)."""

    out_dir: Path
    n_prompts: int
    n_shards: int
    resumed: int             # shards finished by earlier runs
    scored: list[int]        # shards this process scored
    failed: list[int]        # shards without a file at the end (errors/<k>.json says why)
    seconds: float
    tokens_per_s: float      # this run, all ranks
    rank: int = 0
    world_size: int = 1
    shards_this_run: int = 0   # shards scored by this run's ranks together
    formats: tuple = ()        # merged besides scores.parquet
    fine_tunes: list | None = None   # a pair set's fine-tunes (each prompt one row per fine-tune), else None

    @property
    def complete(self) -> bool:
        return not self.failed

    @property
    def path(self) -> Path:
        return Path(self.out_dir) / "scores.parquet"

    @property
    def files(self) -> list[Path]:
        """The merged files the run wrote (``scores.parquet``, ``scores.<fmt>``, and each one's ``.meta.json``)."""
        merged = [self.path, *(Path(self.out_dir) / f"scores.{fmt}" for fmt in self.formats)]
        return [p for f in merged for p in (f, f.with_name(f.name + ".meta.json")) if p.is_file()]

    def tuco_stats(self, finetuned: str | None = None) -> dict:
        """TuCo over the merged rows whose status is ok (of the fine-tune ``finetuned`` only, for a pair set's): n,
        mean, sd (the sample's, as TuCoResult.summary), min, max; n = 0 when none is."""
        table = pq.read_table(self.path, columns=["tuco", "status"] + (["finetuned"] if finetuned else []))
        ok = pc.equal(table.column("status"), "ok")
        if finetuned is not None:
            ok = pc.and_(ok, pc.equal(table.column("finetuned"), finetuned))
        values = np.asarray(pc.filter(table.column("tuco"), ok).to_numpy(zero_copy_only=False), dtype=np.float64)
        if not len(values):
            return {"n": 0}
        return {"n": len(values), "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                "min": float(values.min()), "max": float(values.max())}

    def read(self):
        """The merged rows as a pandas DataFrame."""
        return pq.read_table(self.path).to_pandas()

    def flagged(self) -> int:
        """Rows of the merged output whose numbers are not usable (``status`` other than "ok")."""
        if not self.path.is_file():
            return 0
        status = pq.read_table(self.path, columns=["status"]).column("status")
        return len(status) - pc.sum(pc.equal(status, "ok")).as_py()


def score_dataset(pair, prompts, out_dir, *, alpha=1.0, chat: bool | None = None, system_prompt: str | None = None,
                  batch_tokens: int = DEFAULT_BATCH_TOKENS, layers: bool = False, token_map: bool = False,
                  output_co: bool = False, backend: str | None = None, schedule: str | None = None,
                  max_gpu_memory=None, sweep_tokens: int | None = None, shard_tokens: int = DEFAULT_SHARD_TOKENS,
                  formats=(), progress: bool = False, coordinator: Coordinator | None = None,
                  rank_timeout: float | None = None, truncate: str | None = None,
                  metadata: dict | None = None) -> DatasetRun:
    """Score ``prompts`` into the directory ``out_dir`` in resumable shards (see :mod:`tuco_kernels.dataset`).

    The arguments shared with :func:`~tuco_kernels.score` mean the same and give the same numbers, row for row.

    Args:
        shard_tokens: padded tokens per shard (whole micro-batches; below ``batch_tokens`` it caps the micro-batches
            too, and says so; a single prompt longer than it is a shard alone).
            Fewer, larger shards mean fewer files and, with offload, whole layer-major sweeps; smaller ones lose
            less to a crash and balance ranks better at the end of a run.
        formats: also merge into ``scores.csv`` / ``scores.jsonl`` (``scores.parquet`` is always written).
        progress: report prompts, tokens/s and the ETA on stderr (rank 0).
        coordinator: the ranks' coordinator (:func:`tuco_kernels.dataset.coordinator.connect`); default: connect to the
            torchrun job this process belongs to, or work alone.
        rank_timeout: seconds without a heartbeat after which a rank counts as dead (when connecting here).
        metadata: what the merged files record of the run (:func:`~tuco_kernels.result.run_metadata`: the models,
            dtype, device, options, versions, date; the command line's own); default: this call's. The rendering and
            the plan's fingerprint are added. It goes where ``tuco score`` puts a file run's: the Parquet file's
            ``tuco`` key and a ``<file>.meta.json`` beside each merged file.

    Returns a :class:`DatasetRun`. Raises :class:`PlanMismatch` when ``out_dir`` holds another run's shards and
    :class:`ShardsFailed` when shards failed (after every other shard is done).
    """
    schedule = schedule or ("prompt" if pair.resident else "layer")
    if schedule not in SCHEDULES:
        raise TucoError(f"unknown schedule {schedule!r}; use 'prompt' or 'layer'")
    chat = use_chat(pair.tokenizer, chat)   # the one rendering rule (prompts/tokenize.py), fixed in the fingerprint
    formats = tuple(dict.fromkeys(f.lower().lstrip(".") for f in formats))
    bad = [f for f in formats if f not in EXTRA_FORMATS + ("parquet",)]
    if bad:
        raise TucoError(f"unknown merged format {bad[0]!r}; use csv or jsonl (parquet is always written)")
    formats = tuple(f for f in formats if f != "parquet")
    budget = parse_size(max_gpu_memory)
    if budget is not None and pair.device.type != "cuda":
        raise TucoError(f"max_gpu_memory is a budget for a CUDA device, but the pair is on {pair.device}")
    own = coordinator is None
    coord = coordinator if coordinator is not None else connect(
        **({"timeout": rank_timeout} if rank_timeout is not None else {}))
    lock = None
    try:
        shard_tokens = positive_int("shard_tokens", shard_tokens)
        batch_tokens = positive_int("batch_tokens", batch_tokens)
        if shard_tokens < batch_tokens:   # a shard is whole micro-batches: cap them, or shards would overshoot
            if coord.rank == 0:
                _say(f"shards of {shard_tokens} tokens (--shard-tokens, shard_tokens) are smaller than a micro-batch "
                     f"of {batch_tokens} (--batch-tokens, batch_tokens): micro-batches are capped at {shard_tokens} "
                     f"tokens so that shards keep to it")
            batch_tokens = shard_tokens
        records, tokens = tokenize_all(pair, prompts, chat=chat, system_prompt=system_prompt, truncate=truncate)
        _check_ids(records)
        plan = make_plan(pair, records, tokens, alpha=alpha, chat=chat, system_prompt=system_prompt,
                         batch_tokens=batch_tokens, layers=layers, token_map=token_map, output_co=output_co,
                         backend=backend, max_gpu_memory=max_gpu_memory, sweep_tokens=sweep_tokens,
                         shard_tokens=shard_tokens)
        layout = Layout(out_dir, len(plan.shards))
        metadata = dict(metadata) if metadata is not None else run_metadata(pair, options=dict(
            alpha=alpha, chat=chat, system_prompt=system_prompt, batch_tokens=batch_tokens, layers=layers,
            token_map=token_map, output_co=output_co, backend=backend, schedule=schedule,
            max_gpu_memory=max_gpu_memory, sweep_tokens=sweep_tokens, shard_tokens=shard_tokens,
            formats=list(formats), truncate=truncate))
        metadata["rendering"] = metadata.get("rendering") or rendering(pair.tokenizer, chat, system_prompt)
        metadata["fingerprint_sha256"] = plan.fingerprint_sha
        if coord.rank == 0:
            lock = _prepare_directory(layout, plan, coord, [r.id for r in records])
        state = coord.wait_json("plan", from_rank=0, what="rank 0's plan")
        if coord.rank != 0:
            compare_fingerprints(state["fingerprint"], plan.fingerprint, f"rank 0's plan (this is rank {coord.rank})")
            if not layout.plan.is_file():
                raise TucoError(f"rank {coord.rank} does not see {layout.plan}, which rank 0 wrote: the output "
                                f"directory must be on a filesystem every node shares")
        return _run(pair, coord, layout, plan, state, records, tokens, alphas=plan.fingerprint["alpha"],
                    layers=layers, token_map=token_map, output_co=output_co, schedule=schedule, backend=backend,
                    budget=budget, formats=formats, progress=progress, metadata=metadata)
    except (ShardsFailed, RankLost, RunAborted):
        raise  # every rank knows already
    except TucoError as exc:
        coord.abort(str(exc), 2)
        raise
    except BaseException as exc:
        coord.abort(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if lock is not None:
            lock.release()
        if own:
            coord.close()


def _check_ids(records) -> None:
    try:
        pa.array([r.id for r in records])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TucoError(f"prompt ids must all be of one type to be written as Parquet ({exc}); give every "
                        f"prompt an id of the same kind, or none") from None


def _prepare_directory(layout: Layout, plan: DatasetPlan, coord: Coordinator, ids: list) -> DirectoryLock:
    """Rank 0: lock, check or write plan.json (again, when damaged), clear what a killed run left half-written,
    check every finished shard (:mod:`.verify`: a damaged or foreign one is set aside and scored again, with a line
    naming it) and list what is left."""
    layout.make()
    lock = DirectoryLock(layout.root)
    try:
        _, damage = read_plan(layout)
        if damage is not None:
            _say(f"{layout.plan} is damaged ({damage}); writing it again (each finished shard is checked against "
                 f"this run's fingerprint before it counts)")
        existing = check_plan(layout.root, plan.fingerprint)
        if existing is None:
            write_json(layout.plan, plan.to_json())
        layout.remove_partials()
        pending = []
        for s in plan.shards:
            path = layout.shard(s.k)
            problem = (shard_problem(path, s, plan.fingerprint_sha, ids, plan.n_sides) if os.path.lexists(path)
                       else "missing")
            if problem is None:
                continue
            pending.append(s.k)
            if problem != "missing":
                moved = set_aside(path)
                _say(f"shard {s.k} ({path}): {problem}; scoring it again (the file is kept as {moved.name})")
        if pending:
            layout.success.unlink(missing_ok=True)
        coord.set_json("plan", {"fingerprint": plan.fingerprint, "pending": pending})
    except BaseException:
        lock.release()
        raise
    return lock


def _say(line: str) -> None:
    print(f"tuco: {line}", file=sys.stderr, flush=True)


def _run(pair, coord: Coordinator, layout: Layout, plan: DatasetPlan, state: dict, records, tokens, *, alphas,
         layers, token_map, output_co, schedule, backend, budget, formats, progress, metadata=None) -> DatasetRun:
    t0 = time.perf_counter()
    pending = state["pending"]
    pending_set = set(pending)
    done_prompts = sum(s.prompts for s in plan.shards if s.k not in pending_set)
    done_tokens = sum(s.tokens for s in plan.shards if s.k not in pending_set)
    bar = Progress(plan.n_prompts, plan.n_tokens, done_prompts, done_tokens, enabled=progress and coord.rank == 0)
    pad_id = pad_id_of(pair.tokenizer)

    def tick():
        if bar.enabled:
            bar.update(done_prompts + coord.add("scored_prompts", 0), done_tokens + coord.add("scored_tokens", 0))

    def on_batch(n_prompts, n_tokens):
        coord.add("scored_prompts", n_prompts)
        coord.add("scored_tokens", n_tokens)
        tick()

    def on_layer(_l):
        if budget is not None:
            check_peak(pair.device, budget, plan.sweep_plan)

    scored, failed_here = [], []
    if budget is not None:
        torch.cuda.reset_peak_memory_stats(pair.device)
    while True:
        coord.check_abort()
        i = coord.add("next", 1) - 1
        if i >= len(pending):
            break
        shard = plan.shards[pending[i]]
        started, ts = now(), time.perf_counter()
        try:
            table = score_shard(pair, shard, records, tokens, alphas=alphas, layers=layers, token_map=token_map,
                                output_co=output_co, schedule=schedule, sweep_plan=plan.sweep_plan, backend=backend,
                                pad_id=pad_id, on_batch=on_batch, on_layer=on_layer)
            meta = {"k": shard.k, "rank": coord.rank, "host": socket.gethostname(), "device": device_name(pair.device),
                    "started": started, "seconds": round(time.perf_counter() - ts, 3),
                    "fingerprint_sha256": plan.fingerprint_sha}
            write_shard(layout, shard.k, table, meta)
            layout.error(shard.k).unlink(missing_ok=True)
            scored.append(shard.k)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # recorded; the other shards go on
            failed_here.append(shard.k)
            try:
                write_json(layout.error(shard.k), {
                    "k": shard.k, "rank": coord.rank, "host": socket.gethostname(), "started": started,
                    "failed": now(), "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
                    "shard": shard.summary()})
            except OSError as write_error:  # a full disk fails the record too; the log line below remains
                print(f"tuco: could not write {layout.error(shard.k)}: {write_error}", file=sys.stderr)
            print(f"tuco: shard {shard.k} failed on rank {coord.rank}: {type(exc).__name__}: {exc} "
                  f"(recorded in {layout.error(shard.k)}); going on with the others", file=sys.stderr)
    coord.set(f"finished/{coord.rank}", json.dumps({"scored": scored, "failed": failed_here}))
    coord.wait_all({r: f"finished/{r}" for r in range(coord.world_size)} if coord.rank == 0 else {},
                   what="the other ranks' last shards", tick=tick if coord.rank == 0 else None)

    if coord.rank == 0:
        final = _finish(layout, plan, formats, {
            "world_size": coord.world_size, "shards_scored": len(pending),
            "tokens_scored": coord.add("scored_tokens", 0), "scoring_seconds": round(time.perf_counter() - t0, 3)},
            [r.id for r in records], metadata)
        coord.set_json("final", final)
        bar.close()
        # with rank 0 hosting the store (no torchrun agent), stay until every rank has read the outcome
        coord.wait_all({r: f"bye/{r}" for r in range(1, coord.world_size)}, what="the other ranks to read the outcome")
    else:
        final = coord.wait_json("final", from_rank=0, what="rank 0's merge")
    scored_tokens = coord.add("scored_tokens", 0)
    if coord.rank != 0:
        coord.set(f"bye/{coord.rank}", "1")
    seconds = time.perf_counter() - t0
    run = DatasetRun(layout.root, plan.n_prompts, len(plan.shards), len(plan.shards) - len(pending), scored,
                     final["failed"], seconds, scored_tokens / seconds if seconds > 0 else 0.0, coord.rank,
                     coord.world_size, len(pending) - len(final["failed"]), tuple(formats),
                     pair.side_names)
    if final["failed"]:
        ks = final["failed"]
        raise ShardsFailed(f"{len(ks)} of {len(plan.shards)} shards failed ({', '.join(map(str, ks[:10]))}"
                           f"{', …' if len(ks) > 10 else ''}); their errors are in {layout.errors}/. The other "
                           f"shards are written: rerun the same command to retry only the failed ones")
    return run


def _finish(layout: Layout, plan: DatasetPlan, formats, this_run: dict, ids: list, metadata=None) -> dict:
    """Rank 0, every rank done: the failed shards, or the merge and _SUCCESS (with ``this_run``: how the last
    run went, from its first claim to its last shard). Merged outputs that a finished run left damaged (their
    sizes differ from what _SUCCESS recorded) are merged again, with a line saying so."""
    failed = [s.k for s in plan.shards if not layout.shard(s.k).is_file()]
    if failed:
        return {"failed": failed}
    problem = merged_problem(layout, formats, plan.fingerprint_sha, plan.n_rows)
    if problem is not None:
        if problem:
            _say(f"{problem}; merging the shards again")
        t0 = time.perf_counter()
        merge_shards(layout, len(plan.shards), plan.n_rows, formats, plan_shards=plan.shards, ids=ids,
                     fingerprint_sha=plan.fingerprint_sha, metadata=metadata, n_sides=plan.n_sides)
        write_json(layout.success, {"finished": now(), "n_prompts": plan.n_prompts, "n_shards": len(plan.shards),
                                     "fingerprint_sha256": plan.fingerprint_sha, "formats": ["parquet", *formats],
                                     "sizes": output_sizes(layout, formats),
                                     "merge_seconds": round(time.perf_counter() - t0, 3), "last_run": this_run})
    return {"failed": []}
