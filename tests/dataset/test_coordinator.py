"""The ranks' coordinator (tuco_kernels/dataset/coordinator.py) in one process: two ranks as threads on a real
env:// rendezvous store. Whole runs under torchrun are in test_processes.py."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from tuco_kernels.dataset.coordinator import (Coordinator, DistEnv, RankLost, RunAborted, StoreCoordinator,
                                              device_for_rank, dist_env)
from tuco_kernels.errors import TucoError


@pytest.fixture
def ranks(monkeypatch):
    """Two StoreCoordinators (rank 0 hosts the store), timeout 1 s, heartbeat every 0.1 s."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(port))
    coords = [None, None]

    def start(r):
        coords[r] = StoreCoordinator(DistEnv(r, 2, r, 2), timeout=1.0, heartbeat=0.1)

    threads = [threading.Thread(target=start, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    yield coords
    for c in reversed(coords):
        c._aborted = False
        c.close()


def test_every_item_of_the_queue_is_claimed_once(ranks):
    claimed = {0: [], 1: []}

    def work(c):
        while (i := c.add("next", 1) - 1) < 200:
            claimed[c.rank].append(i)

    threads = [threading.Thread(target=work, args=(c,)) for c in ranks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed[0] + claimed[1]) == list(range(200))


def test_a_failed_rank_tells_the_others(ranks):
    r0, r1 = ranks
    r0.abort("plan.json was made by a run with other alpha", 2)
    with pytest.raises(RunAborted, match="rank 0 failed: plan.json was made by a run with other alpha") as info:
        r1.wait("plan", from_ranks=[0], what="rank 0's plan")
    assert info.value.code == 2 and r0.add("abort_seen", 0) == 1


def test_a_silent_rank_is_declared_lost_within_the_timeout(ranks):
    r0, r1 = ranks
    r0.set_json("plan", {"pending": []})
    assert r1.wait_json("plan", from_rank=0, what="the plan") == {"pending": []}
    r1._stop.set()                       # rank 1's process "dies": no more heartbeats, never finishes
    r1._thread.join()
    t0 = time.monotonic()
    with pytest.raises(RankLost, match=r"rank 1 \(.* pid \d+\) has not been heard from for \d+ s \(timeout 1 s\)"):
        r0.wait_all({0: "finished/0", 1: "finished/1"}, what="the last shards")
    assert time.monotonic() - t0 < 5
    with pytest.raises(RunAborted, match="rank 0 failed: rank 1"):   # and says so to anyone still listening
        r1.check_abort()


def test_one_process_and_the_environment():
    c = Coordinator()
    assert not c.distributed and c.add("next", 1) == 1 and c.add("next", 1) == 2
    c.set_json("plan", {"a": 1})
    assert c.wait_json("plan", from_rank=0, what="x") == {"a": 1}
    assert dist_env({}) == DistEnv(0, 1, 0, 1)
    assert dist_env({"WORLD_SIZE": "16", "RANK": "9", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "8"}) == DistEnv(9, 16, 1, 8)
    with pytest.raises(TucoError, match="RANK=4 is outside WORLD_SIZE=2"):
        dist_env({"WORLD_SIZE": "2", "RANK": "4"})
    assert device_for_rank("cpu", DistEnv(1, 2, 1, 2)) == "cpu"
    assert device_for_rank(None, DistEnv(0, 1, 0, 1)) is None
