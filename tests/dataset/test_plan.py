"""The plan's fingerprint comparison (tuco_kernels/dataset/plan.py): every changed field named, and for a CPU
thread count alone, the fix."""

import pytest

from tuco_kernels.dataset.plan import PlanMismatch, compare_fingerprints


def test_a_thread_count_change_names_the_fix():
    with pytest.raises(PlanMismatch, match=r"device: cpu \(1 thread\) → cpu \(2 threads\)\). .*resume with the first "
                                           r"run's 1 thread: OMP_NUM_THREADS=1 before the command"):
        compare_fingerprints({"device": "cpu (1 thread)"}, {"device": "cpu (2 threads)"}, "run/")
    with pytest.raises(PlanMismatch, match=r"OMP_NUM_THREADS=8 "):
        compare_fingerprints({"device": "cpu (8 threads)"}, {"device": "cpu (1 thread)"}, "run/")


def test_other_changes_keep_the_general_advice():
    with pytest.raises(PlanMismatch, match=r"other device \(device: cuda \(H100\) → cpu \(2 threads\)\)\. .*rerun "
                                           r"with the same inputs and options") as info:
        compare_fingerprints({"device": "cuda (H100)"}, {"device": "cpu (2 threads)"}, "run/")
    assert "OMP_NUM_THREADS" not in str(info.value)
    compare_fingerprints({"alpha": [1.0]}, {"alpha": [1.0]}, "run/")   # nothing changed: no error
