"""One shard's work: its micro-batches scored with :func:`~tuco_kernels.score.score`'s own steps into the rows
``tuco score`` writes (plus each prompt's input position, for the merge), and the shard's file written whole."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ..files import write_atomically
from ..prompts.batching import pad_batch
from ..result import TuCoResult
from ..score import assemble_sides, group_batches, score_groups
from .layout import ROW, Layout
from .shards import Shard
from .tokens import TokenTable


def shard_table(result: TuCoResult, rows: list[int]) -> pa.Table:
    """A shard's rows: exactly the records ``tuco score`` writes (:meth:`TuCoResult.to_records`), plus the rows'
    positions in the merged output (``_row``: the prompt's input position; a pair set's fine-tune k adds k times the
    number of prompts). Every shard row is made here."""
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
        if on_batch is not None and part.side == 0:   # a pair set's fine-tunes finish a batch together
            on_batch(len(part.indices), int(sum(len(tokens[i]) for i in part.indices)))
        parts.append(replace(part, indices=[local[i] for i in part.indices]))
    result = assemble_sides(pair, [records[i] for i in rows], [tokens[i] for i in rows], alphas, parts,
                            layers=layers, token_map=token_map, output_co=output_co)
    return shard_table(result, output_rows(rows, len(pair.sides), len(records)))


def output_rows(rows: list[int], n_sides: int, n_prompts: int) -> list[int]:
    """The merged output's positions of a shard's rows: its prompts' positions, once per fine-tune (side-major)."""
    return [side * n_prompts + i for side in range(n_sides) for i in rows]


def write_shard(layout: Layout, k: int, table: pa.Table, meta: dict) -> Path:
    table = table.replace_schema_metadata({b"tuco_shard": json.dumps(meta).encode()})
    return write_atomically(layout.shard(k), lambda f: pq.write_table(table, f))
