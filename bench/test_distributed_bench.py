"""bench/distributed.py's merge part runs and records its row (small sizes); the scaling and memory parts start
torchrun jobs (minutes) and are exercised by tests/dataset/test_processes.py's torchrun runs of the same code."""

import csv
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def test_merge_part_writes_its_row(tmp_path):
    env = dict(os.environ, TUCO_BENCH_RESULTS=str(tmp_path / "results"))
    proc = subprocess.run([sys.executable, str(HERE / "distributed.py"), "--part", "merge", "--merge-rows", "20000",
                           "--merge-shards", "7", "--merge-csv", "--keep", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "target: merge of 20,000 rows" in proc.stdout and "PASS" in proc.stdout
    rows = list(csv.DictReader(open(tmp_path / "results" / "distributed_merge.csv")))
    assert rows[0]["rows"] == "20000" and float(rows[0]["merge_s"]) > 0 and rows[0]["torch"]
    merged = tmp_path / "work" / "merge"
    assert (merged / "scores.parquet").is_file() and (merged / "scores.csv").is_file()
