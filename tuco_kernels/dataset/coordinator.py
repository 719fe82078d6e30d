"""Many processes on one dataset: torchrun's environment, its rendezvous store, a work queue and liveness.

Scoring shards needs no collective: no tensor ever crosses ranks. What ranks share is a little control state,
kept in the key-value store of torch.distributed's ``env://`` rendezvous (the TCPStore that torchrun's agent,
or rank 0 without torchrun, hosts): the plan rank 0 published, the next unclaimed shard (an atomic counter,
``store.add``), progress counters, each rank's heartbeat, and an abort message. No process group is created, so
there is no NCCL or gloo collective that a dead rank could leave hanging.

Liveness: every rank's background thread bumps its heartbeat counter every ``HEARTBEAT_S`` seconds. A rank that
waits for others (rank 0 for everyone's last shard, the others for rank 0's plan and merge) declares a rank
lost when its counter has not moved for ``timeout`` seconds, and fails with its number. A process that died
(killed, out of memory, node lost) stops beating; one that is alive but stuck inside a call keeps beating and
is not detected (torchrun's own agent, or the job's time limit, ends it). Any rank that fails sets the abort
message, which the waiting ranks see at their next poll.

:class:`Coordinator` is the one-process version of the same interface, so the dataset code has one path.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import TucoError

HEARTBEAT_S = 2.0
POLL_S = 0.2
DEFAULT_TIMEOUT_S = 120.0


class RankLost(TucoError):
    """Another rank stopped beating (its process died) while this one waited for it."""


class RunAborted(TucoError):
    """Another rank failed and said why; ``code`` is the exit status it failed with."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun (or Slurm-launched ``env://``) job; one process: rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_env(environ=None) -> DistEnv:
    """From torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE); absent: one process."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank if world > 1 else 0)))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError as exc:
        raise TucoError(f"cannot read the torchrun environment: {exc}") from None
    if world > 1 and not (0 <= rank < world):
        raise TucoError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return DistEnv(rank, world, local, local_world)


def device_for_rank(device: str | None, env: DistEnv) -> str | None:
    """The device this rank scores on: with several ranks, "cuda" (or no device where CUDA is available) is
    the GPU of LOCAL_RANK; where each process sees a single GPU (CUDA_VISIBLE_DEVICES per task, as Slurm sets
    it), that GPU. An explicit "cuda:N" or "cpu" is kept."""
    if not env.distributed:
        return device
    if device is None and not torch.cuda.is_available():
        return None
    if device not in (None, "cuda"):
        return device
    count = torch.cuda.device_count()
    if count == 1:
        index = 0
    elif env.local_rank < count:
        index = env.local_rank
    else:
        raise TucoError(f"LOCAL_RANK={env.local_rank} but this process sees {count} GPUs; give each rank its own "
                        f"GPU (--nproc-per-node ≤ GPUs per node) or one visible GPU per process")
    torch.cuda.set_device(index)
    return f"cuda:{index}"


class Coordinator:
    """One process: the work queue is a counter, there is nobody to wait for."""

    rank, world_size = 0, 1

    def __init__(self):
        self._kv: dict[str, str] = {}
        self._counters: dict[str, int] = {}

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def add(self, key: str, n: int) -> int:
        """Add ``n`` to the counter ``key`` (0 when new) and return the new value; atomic across ranks."""
        self._counters[key] = self._counters.get(key, 0) + n
        return self._counters[key]

    def set(self, key: str, value: str) -> None:
        self._kv[key] = value

    def get(self, key: str) -> str | None:
        """The value of ``key``, or None when nobody set it yet."""
        return self._kv.get(key)

    def set_json(self, key: str, value) -> None:
        self.set(key, json.dumps(value))

    def wait_json(self, key: str, *, from_rank: int, what: str):
        return json.loads(self.wait(key, from_ranks=[from_rank], what=what))

    def wait(self, key: str, *, from_ranks: list[int], what: str) -> str:
        value = self.get(key)
        if value is None:
            raise TucoError(f"internal: {key!r} was never set ({what})")
        return value

    def wait_all(self, keys_by_rank: dict[int, str], *, what: str, tick=None) -> None:
        for key in keys_by_rank.values():
            self.wait(key, from_ranks=[], what=what)

    def abort(self, message: str, code: int = 1) -> None:
        """Tell the other ranks this one failed (first message wins)."""

    def check_abort(self) -> None:
        pass

    def first_to_report(self) -> bool:
        """Whether this rank is the first to ask (so that a job's ranks stopped together say it once)."""
        return True

    def lost_ranks(self) -> list[tuple[int, str]]:
        """(rank, "host pid N") of the other ranks on this host whose processes are gone."""
        return []

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class StoreCoordinator(Coordinator):
    """Ranks of a torchrun job, through the ``env://`` rendezvous store (see the module docstring)."""

    def __init__(self, env: DistEnv, *, timeout: float = DEFAULT_TIMEOUT_S, heartbeat: float = HEARTBEAT_S):
        super().__init__()
        self.env, self.timeout, self.rank, self.world_size = env, float(timeout), env.rank, env.world_size
        try:
            store, rank, world = next(dist.rendezvous(f"env://?rank={env.rank}&world_size={env.world_size}",
                                                      timeout=timedelta(seconds=max(timeout, 60.0))))
        except (RuntimeError, ValueError) as exc:  # DistStoreError and friends
            raise TucoError(f"rank {env.rank}: torch.distributed rendezvous (env://, MASTER_ADDR="
                            f"{os.environ.get('MASTER_ADDR')}, MASTER_PORT={os.environ.get('MASTER_PORT')}) "
                            f"failed: {exc}") from None
        if (rank, world) != (env.rank, env.world_size):
            raise TucoError(f"rendezvous gave rank {rank} of {world}, the environment says {env.rank} of "
                            f"{env.world_size}")
        # a torchrun restart (--max-restarts) may reuse the agent's store: keys of an earlier attempt must not count
        attempt = f"{os.environ.get('TORCHELASTIC_RUN_ID', 'run')}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        self.store = dist.PrefixStore(f"tuco/{attempt}/", store)
        self._lock = threading.Lock()
        self._aborted = False
        self._seen: dict[int, tuple[int, float]] = {}
        self._stop = threading.Event()
        self.host = socket.gethostname()
        self.set(f"host/{self.rank}", f"{self.host} pid {os.getpid()}")
        self._beat()
        self._thread = threading.Thread(target=self._beating, args=(heartbeat,), name="tuco-heartbeat", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------------------------- store access

    def _call(self, fn, *args):
        try:
            with self._lock:
                return fn(*args)
        except RuntimeError as exc:  # DistNetworkError, DistStoreError: the store's host is gone
            host = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
            raise RankLost(f"rank {self.rank} lost the rendezvous store at {host} ({exc}); the process hosting it "
                           f"(torchrun's agent, or rank 0) stopped. Finished shards are kept: relaunch the same "
                           f"command to resume") from None

    def add(self, key: str, n: int) -> int:
        return int(self._call(self.store.add, key, n))

    def set(self, key: str, value: str) -> None:
        self._call(self.store.set, key, value)

    def get(self, key: str) -> str | None:
        def get():
            return self.store.get(key).decode() if self.store.check([key]) else None
        return self._call(get)

    # ---------------------------------------------------------------------------------------- liveness

    def _beat(self) -> None:
        self.add(f"beat/{self.rank}", 1)

    def _beating(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self._beat()
            except Exception:  # the store is gone (its host died): the main thread's next call fails and says so
                return

    def _who(self, rank: int) -> str:
        where = self.get(f"host/{rank}")
        return f"rank {rank}" + (f" ({where})" if where else "")

    def check_alive(self, ranks: list[int], what: str) -> None:
        now = time.monotonic()
        for r in ranks:
            beats = self.add(f"beat/{r}", 0)
            last = self._seen.get(r)
            if last is None or last[0] != beats:
                self._seen[r] = (beats, now)
            elif now - last[1] > self.timeout:
                message = (f"{self._who(r)} has not been heard from for {now - last[1]:.0f} s (timeout "
                           f"{self.timeout:.0f} s) while rank {self.rank} waited for {what}; it died or lost its "
                           f"connection. Finished shards are kept: relaunch the same command to resume")
                self.abort(message)
                raise RankLost(message)

    def abort(self, message: str, code: int = 1) -> None:
        try:
            with self._lock:
                self.store.compare_set("abort", "", json.dumps({"rank": self.rank, "message": message, "code": code}))
            self._aborted = True
        except Exception:
            pass  # the store itself is gone; nothing to tell

    def check_abort(self) -> None:
        raw = self.get("abort")
        if raw:
            info = json.loads(raw)
            if info["rank"] != self.rank:
                self.add("abort_seen", 1)
                raise RunAborted(f"rank {info['rank']} failed: {info['message']}", info.get("code", 1))

    def first_to_report(self) -> bool:
        try:
            with self._lock:
                value = self.store.compare_set("reported", "", str(self.rank))
            return value.decode() == str(self.rank)
        except Exception:  # noqa: BLE001 - the store is gone: nobody else can be asked, so say it here
            return True

    def lost_ranks(self) -> list[tuple[int, str]]:
        gone = []
        for r in range(self.world_size):
            if r == self.rank:
                continue
            try:
                where = self.get(f"host/{r}")
            except TucoError:
                return gone
            host, _, pid = (where or "").partition(" pid ")
            if host == self.host and pid.isdigit() and not _alive(int(pid)):
                gone.append((r, where))
        return gone

    def wait(self, key: str, *, from_ranks: list[int], what: str) -> str:
        """The value of ``key`` once set, watching ``from_ranks`` for life and every rank for an abort."""
        while True:
            value = self.get(key)
            if value is not None:
                return value
            self.check_abort()
            self.check_alive(from_ranks, what)
            time.sleep(POLL_S)

    def wait_all(self, keys_by_rank: dict[int, str], *, what: str, tick=None) -> None:
        """Until every rank's key is set (each rank watched until its own is); ``tick()`` runs at every poll."""
        pending = dict(keys_by_rank)
        while True:
            pending = {r: k for r, k in pending.items() if self.get(k) is None}
            if tick is not None:
                tick()
            if not pending:
                return
            self.check_abort()
            self.check_alive(sorted(pending), what)
            time.sleep(POLL_S)

    def close(self) -> None:
        """Stop beating. A rank 0 that hosts the store (no torchrun agent) and aborted first gives the others a
        few seconds to read why, rather than leave them with a vanished store."""
        if self._aborted and self.rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
            deadline = time.monotonic() + min(self.timeout, 10.0)
            try:
                while self.add("abort_seen", 0) < self.world_size - 1 and time.monotonic() < deadline:
                    time.sleep(POLL_S)
            except TucoError:
                pass
        self._stop.set()
        self._thread.join(timeout=5)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped by its parent, does not)."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in ("Z", "X")


def connect(env: DistEnv | None = None, *, timeout: float = DEFAULT_TIMEOUT_S) -> Coordinator:
    """A :class:`StoreCoordinator` under torchrun (WORLD_SIZE > 1), else the one-process :class:`Coordinator`."""
    env = env or dist_env()
    return StoreCoordinator(env, timeout=timeout) if env.distributed else Coordinator()
