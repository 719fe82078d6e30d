"""Shard validation and the merge (tuco_kernels/dataset/verify.py, merge.py), as properties over plans that
hypothesis draws: a run's own shards always pass and merge into input order; a damaged, foreign, swapped,
shortened, relabelled or linked shard never passes, is never merged, and never raises anything but a named error.

No model is needed: the plans are real (prompts.batching.batch_groups and dataset.shards.pack_shards over drawn
lengths) and the shard files are real Parquet files written by dataset.scoring.write_shard."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from tuco_kernels.dataset.layout import ROW, Layout
from tuco_kernels.dataset.merge import merge_shards
from tuco_kernels.dataset.scoring import write_shard
from tuco_kernels.dataset.shards import pack_shards
from tuco_kernels.dataset.verify import check_shard, merged_problem, output_sizes, set_aside, shard_problem
from tuco_kernels.errors import TucoError
from tuco_kernels.prompts.batching import batch_groups

SHA = "a" * 64
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def runs(draw):
    """(lengths, ids, batch_tokens, shard_tokens) of a drawn run: 2 to 40 prompts, integer or string ids."""
    n = draw(st.integers(2, 40))
    lengths = draw(st.lists(st.integers(1, 60), min_size=n, max_size=n))
    int_ids = draw(st.booleans())
    ids = list(range(100, 100 + n)) if int_ids else [f"p{i}" for i in draw(st.permutations(range(n)))]
    batch_tokens = draw(st.integers(max(lengths), 4 * max(lengths)))
    return lengths, ids, batch_tokens, draw(st.integers(1, 3 * batch_tokens))


def lay_out(root: Path, lengths, ids, batch_tokens, shard_tokens, sha=SHA):
    """A run directory holding every shard of the drawn plan, as the run writes them."""
    import numpy as np

    shards = pack_shards(batch_groups(lengths, batch_tokens), np.array(lengths), shard_tokens)
    layout = Layout(root, len(shards))
    layout.make()
    for s in shards:
        rows = [i for g in s.batches for i in g]
        table = pa.table({"id": [ids[i] for i in rows], "tuco": [i / 100 for i in rows], ROW: pa.array(rows, pa.int64())})
        write_shard(layout, s.k, table, {"k": s.k, "fingerprint_sha256": sha})
    return layout, shards


@given(runs())
@SETTINGS
def test_a_runs_own_shards_pass_and_merge_into_input_order(run):
    with tempfile.TemporaryDirectory() as tmp:
        layout, shards = lay_out(Path(tmp), *run)
        lengths, ids = run[0], run[1]
        assert [shard_problem(layout.shard(s.k), s, SHA, ids) for s in shards] == [None] * len(shards)
        merge_shards(layout, len(shards), len(lengths), ("csv",), plan_shards=shards, ids=ids, fingerprint_sha=SHA)
        merged = pq.read_table(layout.scores()).to_pydict()
        assert merged["id"] == ids and merged["tuco"] == [i / 100 for i in range(len(ids))]
        assert (layout.scores("csv").read_text().splitlines()[1].split(",")[0] == str(ids[0]))


MUTATIONS = ("truncate", "garbage", "empty", "foreign", "swap", "drop-row", "relabel-id", "link", "no-metadata")


def mutate(how: str, layout: Layout, shards, k: int, data, rng_bytes: bytes) -> None:
    path = layout.shard(k)
    other = layout.shard((k + 1) % len(shards))
    if how == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: data.draw(st.integers(0, len(raw) - 1))])
    elif how == "garbage":
        path.write_bytes(rng_bytes)
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "foreign":
        table = pq.read_table(path)
        meta = {b"tuco_shard": table.schema.metadata[b"tuco_shard"].replace(SHA.encode(), b"b" * 64)}
        pq.write_table(table.replace_schema_metadata(meta), path)
    elif how == "swap":
        shutil.copy(other, path)
    elif how == "drop-row":
        table = pq.read_table(path)
        meta = table.schema.metadata
        if table.num_rows == 1:
            table = table.slice(0, 0)
        else:
            table = table.slice(1)
        pq.write_table(table.replace_schema_metadata(meta), path)
    elif how == "relabel-id":
        table = pq.read_table(path)
        ids = table.column("id").to_pylist()
        ids[0] = (ids[0] + 10_000) if isinstance(ids[0], int) else ids[0] + "x"
        pq.write_table(table.set_column(0, "id", pa.array(ids)).replace_schema_metadata(table.schema.metadata), path)
    elif how == "link":
        target = layout.root / "elsewhere.parquet"
        shutil.copy(path, target)
        path.unlink()
        os.symlink(target, path)
    elif how == "no-metadata":
        pq.write_table(pq.read_table(path).replace_schema_metadata(None), path)


@given(runs(), st.sampled_from(MUTATIONS), st.data(), st.binary(min_size=0, max_size=400))
@SETTINGS
def test_a_damaged_or_foreign_shard_never_passes_and_is_never_merged(run, how, data, noise):
    with tempfile.TemporaryDirectory() as tmp:
        layout, shards = lay_out(Path(tmp), *run)
        lengths, ids = run[0], run[1]
        assume(len(shards) > 1 or how != "swap")
        k = data.draw(st.integers(0, len(shards) - 1))
        mutate(how, layout, shards, k, data, noise)
        problem = shard_problem(layout.shard(k), shards[k], SHA, ids)
        assert problem, f"{how}: shard {k} passed"
        others = [shard_problem(layout.shard(s.k), s, SHA, ids) for s in shards if s.k != k]
        assert others == [None] * (len(shards) - 1)
        with pytest.raises(TucoError, match=rf"shard {k} .*rerun the same command"):
            merge_shards(layout, len(shards), len(lengths), plan_shards=shards, ids=ids, fingerprint_sha=SHA)
        assert not layout.scores().exists()                        # nothing merged
        assert not os.path.lexists(layout.shard(k))                # set aside, to be scored again ...
        assert os.path.lexists(layout.shards / f"{layout.shard(k).name}.rejected")   # ... and kept


def test_set_aside_keeps_the_file_and_moves_a_link_not_its_target(tmp_path):
    target = tmp_path / "mine.parquet"
    target.write_bytes(b"user data")
    link = tmp_path / "000001.parquet"
    link.symlink_to(target)
    moved = set_aside(link)
    assert moved.name == "000001.parquet.rejected" and moved.is_symlink() and target.read_bytes() == b"user data"


def test_check_shard_returns_the_table_it_read(tmp_path):
    layout, shards = lay_out(tmp_path, [5, 4, 3, 2], ["a", "b", "c", "d"], 10, 10)
    table, problem = check_shard(layout.shard(0), shards[0], SHA, ["a", "b", "c", "d"])
    assert problem is None and table.column(ROW).to_pylist() == [i for g in shards[0].batches for i in g]


def test_merged_outputs_are_checked_against_the_sizes_success_records(tmp_path):
    import json

    layout, shards = lay_out(tmp_path, [5, 4, 3, 2], [1, 2, 3, 4], 10, 10)
    assert merged_problem(layout, ("csv",), SHA, 4) == ""                      # no _SUCCESS yet: merge, quietly
    merge_shards(layout, len(shards), 4, ("csv",), plan_shards=shards, ids=[1, 2, 3, 4], fingerprint_sha=SHA)
    layout.success.write_text(json.dumps({"fingerprint_sha256": SHA}))
    assert merged_problem(layout, ("csv",), SHA, 4) == ""                      # an earlier version's _SUCCESS
    layout.success.write_text(json.dumps({"fingerprint_sha256": SHA, "sizes": output_sizes(layout, ("csv",))}))
    assert merged_problem(layout, ("csv",), SHA, 4) is None
    assert "another run's" in merged_problem(layout, ("csv",), "c" * 64, 4)
    layout.scores("csv").write_text(layout.scores("csv").read_text()[:20])
    assert "scores.csv is damaged" in merged_problem(layout, ("csv",), SHA, 4)
    layout.success.write_bytes(b"\xff")
    assert "_SUCCESS is damaged" in merged_problem(layout, ("csv",), SHA, 4)
