"""The merge (tuco_kernels/dataset/merge.py) refuses shards whose rows are not each prompt once."""

from __future__ import annotations

import pyarrow as pa
import pytest

import tuco_kernels as tk
from tuco_kernels.dataset.layout import ROW, Layout
from tuco_kernels.dataset.merge import merge_shards
from tuco_kernels.dataset.scoring import write_shard


def test_merge_refuses_duplicate_or_missing_rows(tmp_path):
    layout = Layout(tmp_path, 2)
    layout.make()
    for k, rows in enumerate(([0, 1], [1, 2])):
        write_shard(layout, k, pa.table({"id": rows, "tuco": [0.5] * 2, ROW: rows}), {})
    with pytest.raises(tk.TucoError, match="4 rows for 3 prompts"):
        merge_shards(layout, 2, 3)
