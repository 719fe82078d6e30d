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
without a file; each rank then claims the next one through the rendezvous store
(:mod:`tuco_kernels.dataset.coordinator`) until none is left, and rank 0 merges. A shard that raises gets an error
record and the run goes on; the run then ends with :class:`ShardsFailed`, and a rerun scores only what is missing.

tokens.py       every prompt checked and tokenized once, into one flat table of token ids
shards.py       whole micro-batches packed into shards of at most shard_tokens padded tokens
identity.py     identities of the models a run scored (sampled bytes of their files or parameters)
layout.py       the output directory's files, written whole (temporary name, fsync, rename); its lock
plan.py         the plan every rank computes (shards, fingerprint), checked against plan.json
coordinator.py  torchrun's environment and the env:// store: shard queue, heartbeats, abort
scoring.py      one shard scored with tk.score's steps into its rows, and its file written
merge.py        every shard's rows in input order into scores.parquet (+ .csv / .jsonl)
progress.py     the progress line on stderr: prompts, tokens/s, ETA
run.py          score_dataset: the run on every rank, from the plan to the merge; DatasetRun
"""

from __future__ import annotations

from .coordinator import DEFAULT_TIMEOUT_S, Coordinator, RankLost, RunAborted, connect, device_for_rank, dist_env
from .identity import sources_identity
from .layout import Layout
from .merge import EXTRA_FORMATS
from .plan import PlanMismatch, check_plan
from .run import DEFAULT_SHARD_TOKENS, DatasetRun, ShardsFailed, score_dataset

__all__ = ["score_dataset", "DatasetRun", "PlanMismatch", "ShardsFailed", "DEFAULT_SHARD_TOKENS", "EXTRA_FORMATS",
           "check_plan", "sources_identity", "Coordinator", "connect", "dist_env", "device_for_rank", "RankLost",
           "RunAborted", "DEFAULT_TIMEOUT_S", "Layout"]
