"""``score_dataset``: TuCo for a large prompt set, in shards that survive a crash, on one or many processes.

The output directory OUT holds::

    plan.json              the inputs' fingerprint, the options that change numbers, the shards
    shards/<k>.parquet     one finished shard (written to a temporary name and renamed: whole or absent)
    errors/<k>.json        why shard k failed (removed when a later run scores it)
    scores.parquet         every row in input order, merged when every shard is done (+ .csv / .jsonl)
    _SUCCESS               written last

How a run goes: the prompts are tokenized once and cut into the micro-batches :func:`~tuco_kernels.score` uses
(:func:`~tuco_kernels.score.plan_batches`: length-sorted, the same token budget), and consecutive whole batches
are packed into shards of at most ``shard_tokens`` padded tokens. So every prompt is scored in the batch it
would have been in with ``tk.score`` on the same prompts, and its numbers are bit-identical whatever the
number of processes or restarts. Rank 0 checks the fingerprint against an existing ``plan.json`` (a rerun that
changed anything that changes numbers stops with :class:`PlanMismatch`, naming the field) and lists the shards
without a file; each rank then claims the next one through the rendezvous store (:mod:`tuco_kernels.distributed`)
until none is left, and rank 0 merges. A shard that raises gets an error record and the run goes on; the run
then ends with :class:`ShardsFailed`, and a rerun scores only what is missing.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import math
import os
import socket
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from ._version import __version__
from .core.engine import layer_alphas
from .distributed import Coordinator, RankLost, RunAborted, connect
from .errors import TucoError
from .fingerprint import pair_identity
from .offload.budget import check_peak, parse_size, plan_for
from .ops import resolve_backend
from .prompts.batching import batch_groups, pad_batch
from .prompts.output import write_records
from .prompts.records import normalize_prompts
from .prompts.tokenize import fit_context, max_positions, pad_id_of, tokenize, use_chat
from .result import TuCoResult
from .score import DEFAULT_BATCH_TOKENS, SCHEDULES, assemble, group_batches, score_groups

DEFAULT_SHARD_TOKENS = 262144      # padded tokens per shard: one layer-major sweep's worth (offload/budget.py)
PLAN_FORMAT = 1
ROW = "_row"                        # the prompt's position in the input, kept in shards for the merge
EXTRA_FORMATS = ("csv", "jsonl")
TOKENIZE_CHUNK = 8192
MERGE_CHUNK = 50_000


class PlanMismatch(TucoError):
    """The output directory was made by a run with other inputs, models or options."""


class ShardsFailed(TucoError):
    """Some shards raised; the others are written and a rerun retries only the missing ones."""


# ------------------------------------------------------------------------------------------- token ids


class TokenTable:
    """Token ids of every prompt in one flat array (``tokens[i]`` is prompt i's ids), not a list per prompt."""

    def __init__(self, flat: np.ndarray, offsets: np.ndarray):
        self.flat, self.offsets = flat, offsets

    @classmethod
    def from_lists(cls, lists) -> TokenTable:
        lengths = np.fromiter((len(t) for t in lists), dtype=np.int64, count=len(lists))
        offsets = np.zeros(len(lists) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((t for ids in lists for t in ids), dtype=np.int64, count=int(offsets[-1]))
        return cls(flat, offsets)

    @classmethod
    def concat(cls, tables: list[TokenTable]) -> TokenTable:
        flat = np.concatenate([t.flat for t in tables]) if tables else np.zeros(0, np.int64)
        lengths = np.concatenate([np.diff(t.offsets) for t in tables]) if tables else np.zeros(0, np.int64)
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(flat, offsets)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.flat[self.offsets[i]:self.offsets[i + 1]]

    def digest(self, ids: list) -> str:
        """sha256 of every prompt's id and token ids, in input order."""
        h = hashlib.sha256()
        h.update(json.dumps(ids, default=str).encode())
        h.update(self.lengths.astype("<i8").tobytes())
        h.update(self.flat.astype("<i8").tobytes())
        return h.hexdigest()


def tokenize_all(pair, prompts, *, chat: bool, system_prompt: str | None, truncate: str | None = None):
    """(records, :class:`TokenTable`): every prompt checked and tokenized once, in chunks (lengths checked against
    the model's positions as :func:`tuco_kernels.score` checks them)."""
    records = normalize_prompts(prompts)
    limit = max_positions(pair.finetuned.config)
    parts = []
    for start in range(0, len(records), TOKENIZE_CHUNK):
        chunk = records[start:start + TOKENIZE_CHUNK]
        lists = tokenize(chunk, pair.tokenizer, chat=chat, system_prompt=system_prompt, vocab_size=pair.vocab_size)
        parts.append(TokenTable.from_lists(fit_context(chunk, lists, limit, truncate)))
    return records, TokenTable.concat(parts)


# --------------------------------------------------------------------------------------------- the plan


@dataclass
class Shard:
    """Whole micro-batches (prompt indices, longest first) scored and written together."""

    k: int
    batches: list[list[int]]
    prompts: int
    tokens: int     # real tokens
    padded: int     # rows × padded length, summed over the batches

    def summary(self) -> dict:
        return {"k": self.k, "batches": len(self.batches), "prompts": self.prompts, "tokens": self.tokens,
                "padded_tokens": self.padded}


def pack_shards(groups: list[list[int]], lengths: np.ndarray, shard_tokens: int) -> list[Shard]:
    """Consecutive whole batches, ≤ ``shard_tokens`` padded tokens a shard (a bigger batch goes alone), as even
    as whole batches allow: near-equal parts of the total rather than full shards and a small last one, so that
    ranks finish together."""
    if shard_tokens < 1:
        raise TucoError(f"shard_tokens must be positive, got {shard_tokens}")
    sizes = [len(g) * int(lengths[g[0]]) for g in groups]
    # shards end within half a batch of their aim, and never above shard_tokens: aim that much below it
    n = max(1, math.ceil(sum(sizes) / max(1.0, shard_tokens - max(sizes, default=0) / 2)))
    left, target = sum(sizes), sum(sizes) / n     # each new shard aims at an equal part of what is left
    shards: list[Shard] = []
    for g, padded in zip(groups, sizes):
        real = int(lengths[g].sum())
        if shards and shards[-1].padded + padded <= shard_tokens and shards[-1].padded + padded / 2 <= target:
            s = shards[-1]
            s.batches.append(g)
            s.prompts += len(g)
            s.tokens += real
            s.padded += padded
        else:
            if shards:
                left -= shards[-1].padded
                target = left / max(1, n - len(shards))
            shards.append(Shard(len(shards), [g], len(g), real, padded))
    return shards


@dataclass
class DatasetPlan:
    """What every rank computes from the same inputs: micro-batches, shards and the fingerprint."""

    fingerprint: dict
    sweep_plan: object
    shards: list[Shard]
    n_prompts: int
    n_tokens: int
    info: dict = field(default_factory=dict)   # recorded in plan.json, never compared

    @property
    def fingerprint_sha(self) -> str:
        return hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict:
        return {"format": PLAN_FORMAT, "fingerprint": self.fingerprint, "fingerprint_sha256": self.fingerprint_sha,
                "n_prompts": self.n_prompts, "n_tokens": self.n_tokens, "n_shards": len(self.shards),
                "padded_tokens": sum(s.padded for s in self.shards), "info": self.info,
                "shards": [s.summary() for s in self.shards]}


#: the fingerprint's fields, in the order a mismatch is reported; each changes the numbers or the shards
FINGERPRINT_FIELDS = ("pretrained", "finetuned", "dtype", "device", "backend", "attn_implementation", "alpha",
                      "layers", "token_map", "output_co", "chat", "system_prompt", "chat_template", "batch_tokens",
                      "shard_tokens", "n_prompts", "inputs")


def make_plan(pair, records, tokens: TokenTable, *, alpha, chat, system_prompt, batch_tokens, layers, token_map,
              output_co, backend, max_gpu_memory, sweep_tokens, shard_tokens) -> DatasetPlan:
    """Micro-batches exactly as :func:`~tuco_kernels.score.plan_batches` makes them (the same memory plan and
    grouping), packed into shards; the fingerprint of everything that changes the numbers or the shards."""
    budget = parse_size(max_gpu_memory)
    lengths = tokens.lengths
    batch_plan = plan_for(pair, lengths.tolist(), batch_tokens=batch_tokens, budget=budget, own_pt=output_co,
                          token_map=token_map)
    groups = batch_groups(lengths.tolist(), batch_plan.batch_tokens, alone=not pair.family.pads_invariant)
    total_padded = sum(len(g) * int(lengths[g[0]]) for g in groups)
    sweep_plan = batch_plan.sweeps(total_padded, sweep_tokens)
    shards = pack_shards(groups, lengths, shard_tokens)
    ids = [r.id for r in records]
    identity = pair_identity(pair)
    config = pair.finetuned.config
    template = getattr(pair.tokenizer, "chat_template", None) if chat or any(r.messages for r in records) else None
    fp = {
        "pretrained": identity["pretrained"]["sha256"],
        "finetuned": identity["finetuned"]["sha256"],
        "dtype": str(pair.dtype).removeprefix("torch."),
        "device": _device_name(pair.device),   # CPU: the thread count changes matmul rounding; GPU: the model
        "backend": resolve_backend(backend, pair.device.type),  # the per-layer norms' summation order
        "attn_implementation": getattr(config, "_attn_implementation", None) or "sdpa",
        "alpha": [float(a) for a in layer_alphas(alpha, pair.n_layers)],
        "layers": bool(layers), "token_map": bool(token_map), "output_co": bool(output_co),
        "chat": bool(chat), "system_prompt": system_prompt,
        "chat_template": hashlib.sha256(template.encode()).hexdigest() if isinstance(template, str) else None,
        "batch_tokens": int(batch_plan.batch_tokens), "shard_tokens": int(shard_tokens),
        "n_prompts": len(records), "inputs": tokens.digest(ids),
    }
    info = {"models": identity, "tuco_kernels": __version__,
            "torch": torch.__version__, "created": _now(), "micro_batches": len(groups),
            "sweep_tokens": sweep_plan.sweep_tokens}
    return DatasetPlan(fp, sweep_plan, shards, len(records), int(lengths.sum()), info)


def compare_fingerprints(old: dict, new: dict, where: str) -> None:
    """Raise :class:`PlanMismatch` naming every field of ``new`` that differs from ``old``."""
    changed = [k for k in FINGERPRINT_FIELDS if k in new and old.get(k) != new[k]]
    changed += [k for k in new if k not in FINGERPRINT_FIELDS and old.get(k) != new[k]]
    if not changed:
        return

    def show(v):
        text = json.dumps(v) if not isinstance(v, str) else v
        return text if len(text) <= 40 else text[:16] + "…"

    what = "; ".join(f"{k}: {show(old.get(k))} → {show(new[k])}" for k in changed)
    raise PlanMismatch(f"{where} was made by a run with other {'/'.join(changed)} ({what}). Its finished shards "
                       f"cannot be mixed with this run's: rerun with the same inputs and options, or use another "
                       f"output directory (or delete this one to start over)")


# ------------------------------------------------------------------------------------------- the files


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n != 1 else ''})"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> Path:
    """``write(binary file)`` into a temporary file beside ``path``, fsync, rename over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _write_json(path: Path, value) -> Path:
    return atomic_write(path, lambda f: f.write((json.dumps(value, indent=1, default=str) + "\n").encode()))


class Layout:
    """The files of an output directory (see the module docstring)."""

    def __init__(self, out_dir, n_shards: int | None = None):
        self.root = Path(out_dir)
        self.shards = self.root / "shards"
        self.errors = self.root / "errors"
        self.plan = self.root / "plan.json"
        self.success = self.root / "_SUCCESS"
        self.width = max(6, len(str(max((n_shards or 1) - 1, 0))))

    def shard(self, k: int) -> Path:
        return self.shards / f"{k:0{self.width}d}.parquet"

    def error(self, k: int) -> Path:
        return self.errors / f"{k:0{self.width}d}.json"

    def scores(self, fmt: str = "parquet") -> Path:
        return self.root / f"scores.{fmt}"

    def make(self) -> None:
        for d in (self.root, self.shards, self.errors):
            d.mkdir(parents=True, exist_ok=True)

    def remove_partials(self) -> int:
        """Temporary files a killed writer left behind (only while no writer runs: rank 0, holding the lock)."""
        stale = [p for d in (self.root, self.shards, self.errors) if d.is_dir() for p in d.glob(".*.partial")]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)


def check_plan(out_dir, fingerprint: dict) -> dict | None:
    """The existing ``plan.json`` of ``out_dir`` (None if there is none) after checking ``fingerprint`` (all of
    it, or the fields known before the models load) against it."""
    layout = Layout(out_dir)
    if not layout.plan.is_file():
        return None
    try:
        plan = json.loads(layout.plan.read_text())
        old = plan["fingerprint"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise PlanMismatch(f"{layout.plan}: unreadable ({exc!r}); delete the directory to start over") from None
    if plan.get("format") != PLAN_FORMAT:
        raise PlanMismatch(f"{layout.plan}: plan format {plan.get('format')}, this version writes {PLAN_FORMAT}")
    compare_fingerprints(old, fingerprint, str(layout.plan))
    return plan


class DirectoryLock:
    """An exclusive ``flock`` on OUT/.lock for the run's rank 0: two jobs on one directory would race."""

    def __init__(self, root: Path):
        self.path = root / ".lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 200, 0).decode(errors="replace").strip()
            os.close(self.fd)
            raise TucoError(f"{root}: another run is writing this directory ({holder or 'unknown'}); wait for it "
                            f"or use another --out") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{socket.gethostname()} pid {os.getpid()} since {_now()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# ---------------------------------------------------------------------------------------- shard rows


def shard_table(result: TuCoResult, rows: list[int]) -> pa.Table:
    """A shard's rows: exactly the records ``tuco score`` writes (:meth:`TuCoResult.to_records`), plus the
    prompts' input positions (``_row``) for the merge. Every shard row is made here."""
    table = pa.Table.from_pylist(result.to_records())
    return table.append_column(ROW, pa.array(rows, type=pa.int64()))


def score_shard(pair, shard: Shard, records, tokens: TokenTable, *, alphas, layers, token_map, output_co,
                schedule, sweep_plan, backend, pad_id, on_batch=None, on_layer=None) -> pa.Table:
    """Score one shard's micro-batches (the steps of :func:`~tuco_kernels.score.score`) into its table."""
    batches = [pad_batch(tokens, g, pad_id) for g in shard.batches]
    groups = group_batches(batches, schedule, sweep_plan)
    rows = [i for g in shard.batches for i in g]
    local = {i: j for j, i in enumerate(rows)}
    parts = []
    for part in score_groups(pair, groups, alphas=alphas, layers=layers, token_map=token_map, output_co=output_co,
                             spill=sweep_plan.spill, backend=backend, on_layer=on_layer):
        if on_batch is not None:
            on_batch(len(part.indices), int(sum(len(tokens[i]) for i in part.indices)))
        parts.append(replace(part, indices=[local[i] for i in part.indices]))
    result = assemble([records[i] for i in rows], [tokens[i] for i in rows], alphas, parts, layers=layers,
                      token_map=token_map, output_co=output_co, tokenizer=pair.tokenizer)
    return shard_table(result, rows)


def write_shard(layout: Layout, k: int, table: pa.Table, meta: dict) -> Path:
    table = table.replace_schema_metadata({b"tuco_shard": json.dumps(meta).encode()})
    return atomic_write(layout.shard(k), lambda f: pq.write_table(table, f))


def merge_shards(layout: Layout, n_shards: int, n_rows: int, formats=()) -> Path:
    """Every shard's rows in input order into ``scores.parquet`` (+ ``scores.<fmt>`` for ``formats``)."""
    tables = [pq.read_table(layout.shard(k)).replace_schema_metadata(None) for k in range(n_shards)]
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise TucoError(f"{layout.shards}: shards with incompatible columns ({exc})") from None
    table = table.take(pc.sort_indices(table[ROW]))
    rows = table[ROW].to_numpy()
    if len(rows) != n_rows or not np.array_equal(rows, np.arange(n_rows)):
        raise TucoError(f"{layout.shards}: the shards hold {len(rows)} rows for {n_rows} prompts "
                        f"({len(np.unique(rows))} distinct); delete the directory to start over")
    table = table.drop_columns([ROW])
    atomic_write(layout.scores("parquet"), lambda f: pq.write_table(table, f))
    for fmt in formats:
        write_rows(table, layout.scores(fmt))
    return layout.scores("parquet")


def write_rows(table: pa.Table, path: Path) -> Path:
    """``table`` as ``tuco score`` writes a .csv / .jsonl file (:func:`~tuco_kernels.prompts.output.write_records`,
    byte for byte), ``MERGE_CHUNK`` rows at a time so that a million rows never become a million dicts at once."""
    def write(f):
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".merge-") as tmp:
            for start in range(0, max(table.num_rows, 1), MERGE_CHUNK):
                part = write_records(table.slice(start, MERGE_CHUNK).to_pylist(), Path(tmp) / f"part{path.suffix}")
                data = part.read_bytes()
                if start and path.suffix == ".csv":
                    data = data.split(b"\n", 1)[1]  # one header
                f.write(data)

    return atomic_write(path, write)


# ------------------------------------------------------------------------------------------ progress


class Progress:
    """Prompts and tokens of the whole dataset (finished shards of earlier runs included), tokens/s of this
    run and the ETA from it: a line redrawn on a terminal, else one line every ``every`` seconds (job logs)."""

    def __init__(self, n_prompts: int, n_tokens: int, done_prompts: int, done_tokens: int, *, enabled: bool,
                 stream=None, every: float | None = None):
        self.n_prompts, self.n_tokens = n_prompts, n_tokens
        self.start_prompts, self.start_tokens = done_prompts, done_tokens
        self.prompts, self.tokens = done_prompts, done_tokens
        self.enabled, self.stream = enabled, stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every if every is not None else (0.5 if self.tty else 30.0)
        self.t0 = time.perf_counter()
        self.last = -math.inf

    @property
    def rate(self) -> float:
        """Tokens per second scored by this run."""
        dt = time.perf_counter() - self.t0
        return (self.tokens - self.start_tokens) / dt if dt > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        left = self.n_tokens - self.tokens
        eta = _duration(left / rate) if rate > 0 and left > 0 else ("0 s" if left <= 0 else "?")
        resumed = f", {self.start_prompts:,} from earlier runs" if self.start_prompts else ""
        return (f"tuco: {self.prompts:,}/{self.n_prompts:,} prompts ({100 * self.prompts / max(self.n_prompts, 1):.1f} %"
                f"{resumed}), {self.tokens:,}/{self.n_tokens:,} tokens, {rate:,.0f} tokens/s, ETA {eta}")

    def update(self, prompts: int, tokens: int, force: bool = False) -> None:
        self.prompts, self.tokens = prompts, tokens
        now = time.perf_counter()
        if self.enabled and (force or now - self.last >= self.every):
            self.last = now
            self.stream.write(("\r" + self.line() + "\x1b[K") if self.tty else self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(self.prompts, self.tokens, force=True)
            if self.tty:
                self.stream.write("\n")


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else (f"{s // 60} min {s % 60:02d} s" if s >= 60
                                                                         else f"{s} s")


# ---------------------------------------------------------------------------------------- the driver


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

    @property
    def complete(self) -> bool:
        return not self.failed

    @property
    def path(self) -> Path:
        return Path(self.out_dir) / "scores.parquet"

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
                  rank_timeout: float | None = None, truncate: str | None = None) -> DatasetRun:
    """Score ``prompts`` into the directory ``out_dir`` in resumable shards (see the module docstring).

    The arguments shared with :func:`~tuco_kernels.score` mean the same and give the same numbers, row for row.

    Args:
        shard_tokens: padded tokens per shard (whole micro-batches; a batch bigger than this is a shard alone).
            Fewer, larger shards mean fewer files and, with offload, whole layer-major sweeps; smaller ones lose
            less to a crash and balance ranks better at the end of a run.
        formats: also merge into ``scores.csv`` / ``scores.jsonl`` (``scores.parquet`` is always written).
        progress: report prompts, tokens/s and the ETA on stderr (rank 0).
        coordinator: the ranks' coordinator (:func:`tuco_kernels.distributed.connect`); default: connect to the
            torchrun job this process belongs to, or work alone.
        rank_timeout: seconds without a heartbeat after which a rank counts as dead (when connecting here).

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
        records, tokens = tokenize_all(pair, prompts, chat=chat, system_prompt=system_prompt, truncate=truncate)
        _check_ids(records)
        plan = make_plan(pair, records, tokens, alpha=alpha, chat=chat, system_prompt=system_prompt,
                         batch_tokens=batch_tokens, layers=layers, token_map=token_map, output_co=output_co,
                         backend=backend, max_gpu_memory=max_gpu_memory, sweep_tokens=sweep_tokens,
                         shard_tokens=shard_tokens)
        layout = Layout(out_dir, len(plan.shards))
        if coord.rank == 0:
            lock = _prepare_directory(layout, plan, coord)
        state = coord.wait_json("plan", from_rank=0, what="rank 0's plan")
        if coord.rank != 0:
            compare_fingerprints(state["fingerprint"], plan.fingerprint, f"rank 0's plan (this is rank {coord.rank})")
            if not layout.plan.is_file():
                raise TucoError(f"rank {coord.rank} does not see {layout.plan}, which rank 0 wrote: the output "
                                f"directory must be on a filesystem every node shares")
        return _run(pair, coord, layout, plan, state, records, tokens, alphas=plan.fingerprint["alpha"],
                    layers=layers, token_map=token_map, output_co=output_co, schedule=schedule, backend=backend,
                    budget=budget, formats=formats, progress=progress)
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


def _prepare_directory(layout: Layout, plan: DatasetPlan, coord: Coordinator) -> DirectoryLock:
    """Rank 0: lock, check or write plan.json, clear what a killed run left half-written, list what is left."""
    layout.make()
    lock = DirectoryLock(layout.root)
    try:
        existing = check_plan(layout.root, plan.fingerprint)
        if existing is None:
            _write_json(layout.plan, plan.to_json())
        layout.remove_partials()
        pending = [s.k for s in plan.shards if not layout.shard(s.k).is_file()]
        if pending:
            layout.success.unlink(missing_ok=True)
        coord.set_json("plan", {"fingerprint": plan.fingerprint, "pending": pending})
    except BaseException:
        lock.release()
        raise
    return lock


def _run(pair, coord: Coordinator, layout: Layout, plan: DatasetPlan, state: dict, records, tokens, *, alphas,
         layers, token_map, output_co, schedule, backend, budget, formats, progress) -> DatasetRun:
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
        started, ts = _now(), time.perf_counter()
        try:
            table = score_shard(pair, shard, records, tokens, alphas=alphas, layers=layers, token_map=token_map,
                                output_co=output_co, schedule=schedule, sweep_plan=plan.sweep_plan, backend=backend,
                                pad_id=pad_id, on_batch=on_batch, on_layer=on_layer)
            meta = {"k": shard.k, "rank": coord.rank, "host": socket.gethostname(), "device": _device_name(pair.device),
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
                _write_json(layout.error(shard.k), {
                    "k": shard.k, "rank": coord.rank, "host": socket.gethostname(), "started": started,
                    "failed": _now(), "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(),
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
            "tokens_scored": coord.add("scored_tokens", 0), "scoring_seconds": round(time.perf_counter() - t0, 3)})
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
                     coord.world_size)
    if final["failed"]:
        ks = final["failed"]
        raise ShardsFailed(f"{len(ks)} of {len(plan.shards)} shards failed ({', '.join(map(str, ks[:10]))}"
                           f"{', …' if len(ks) > 10 else ''}); their errors are in {layout.errors}/. The other "
                           f"shards are written: rerun the same command to retry only the failed ones")
    return run


def _finish(layout: Layout, plan: DatasetPlan, formats, this_run: dict) -> dict:
    """Rank 0, every rank done: the failed shards, or the merge and _SUCCESS (with ``this_run``: how the last
    run went, from its first claim to its last shard)."""
    failed = [s.k for s in plan.shards if not layout.shard(s.k).is_file()]
    if failed:
        return {"failed": failed}
    wanted = [layout.scores("parquet")] + [layout.scores(f) for f in formats]
    if not (layout.success.is_file() and all(p.is_file() for p in wanted)):
        t0 = time.perf_counter()
        merge_shards(layout, len(plan.shards), plan.n_prompts, formats)
        _write_json(layout.success, {"finished": _now(), "n_prompts": plan.n_prompts, "n_shards": len(plan.shards),
                                     "fingerprint_sha256": plan.fingerprint_sha, "formats": ["parquet", *formats],
                                     "merge_seconds": round(time.perf_counter() - t0, 3), "last_run": this_run})
    return {"failed": []}
