"""The progress line (tuco_kernels/dataset/progress.py) counts what earlier runs finished."""

from __future__ import annotations

from tuco_kernels.dataset.progress import Progress


def test_progress_counts_the_resumed_part():
    import io

    stream = io.StringIO()
    bar = Progress(1000, 100_000, 400, 40_000, enabled=True, stream=stream, every=0)
    bar.t0 -= 10
    bar.update(500, 50_000)
    line = stream.getvalue()
    assert "500/1,000 prompts (50.0 %, 400 from earlier runs)" in line and "1,000 tokens/s" in line
    assert "ETA 50 s" in line
