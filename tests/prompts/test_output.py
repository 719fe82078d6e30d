"""Output files: checked before any work, one writer at a time, never half-written, never NaN, the umask kept."""

import json
import os
import stat

import pandas as pd
import pytest

from tuco_kernels.errors import OutputError
from tuco_kernels.prompts.output import OutputTarget, check_output_path, write_records

ROWS = [{"id": "a", "tuco": 0.25, "beta": [0.1, float("nan")]}, {"id": "b", "tuco": float("nan"), "beta": [0.2, 0.3]}]


def test_refusals_name_the_reason(tmp_path):
    (tmp_path / "in.jsonl").write_text("{}\n")
    (tmp_path / "d.csv").mkdir()
    cases = [(tmp_path / "x.xlsx", "unknown output type '.xlsx'"), (tmp_path / "d.csv", "is a directory"),
             (tmp_path / "no" / "x.csv", "does not exist"), (tmp_path / "in.jsonl", "is also an input")]
    for path, match in cases:
        with pytest.raises(OutputError, match=match):
            check_output_path(path, inputs=[tmp_path / "in.jsonl"])
    with pytest.raises(OutputError, match="exists; pass --force"):
        OutputTarget(tmp_path / "in.jsonl", force=False)
    with pytest.raises(OutputError, match="needs about"):
        OutputTarget(tmp_path / "big.csv", estimated_bytes=10**18)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders anyway")
def test_read_only_folder_is_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    with pytest.raises(OutputError, match="is not writable"):
        check_output_path(ro / "x.csv")


def test_second_writer_is_refused_while_the_first_holds_the_lock(tmp_path):
    first = OutputTarget(tmp_path / "o.jsonl").claim()
    with pytest.raises(OutputError, match=r"another tuco run \(pid \d+\) is writing this file"):
        OutputTarget(tmp_path / "o.jsonl").claim()
    first.write(ROWS)
    first.release()
    assert not (tmp_path / ".o.jsonl.lock").exists()
    with OutputTarget(tmp_path / "o.jsonl", force=True) as again:   # released: the next run may replace it
        again.write(ROWS[:1])
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_non_finite_numbers_are_nulls(tmp_path, suffix):
    path = write_records(ROWS, tmp_path / f"o{suffix}")
    if suffix == ".jsonl":
        text = path.read_text()
        assert "NaN" not in text
        rows = [json.loads(line) for line in text.splitlines()]   # strict parsers accept it
        assert rows[1]["tuco"] is None and rows[0]["beta"] == [0.1, None]
    elif suffix == ".csv":
        frame = pd.read_csv(path)
        assert frame["tuco"].isna().tolist() == [False, True] and "NaN" not in path.read_text()
    else:
        frame = pd.read_parquet(path)
        assert frame["tuco"].isna().tolist() == [False, True]


def test_new_files_follow_the_umask_and_old_files_keep_their_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_records(ROWS, tmp_path / "o.csv")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644     # not mkstemp's 0600
        path.chmod(0o664)
        write_records(ROWS, path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o664
    finally:
        os.umask(old)


def test_a_failed_write_keeps_the_old_file_and_rescues_the_rows(tmp_path, monkeypatch):
    from tuco_kernels.prompts import output

    target = OutputTarget(tmp_path / "o.jsonl").claim()
    (tmp_path / "o.jsonl").write_text("old\n")
    real = output.write_records

    def full_disk(records, path, metadata=None):
        if path == target.path:
            raise OSError(28, "No space left on device")
        return real(records, path, metadata=metadata)

    monkeypatch.setattr(output, "write_records", full_disk)
    with pytest.raises(OutputError, match=r"No space left on device\); the 2 scored rows were saved to .*tuco-rescue"):
        target.write(ROWS)
    target.release()
    assert (tmp_path / "o.jsonl").read_text() == "old\n"
    assert list(tmp_path.glob("*.partial")) == []
