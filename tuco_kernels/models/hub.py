"""Hugging Face hub ids (``org/name`` or ``org/name@revision``) as model sources, resolved to a local snapshot.

A source that is not an existing path and looks like a hub id is resolved by ``huggingface_hub``'s
``snapshot_download``: configs, tokenizer files and safetensors weights only (pickle weights are never fetched),
from the local HF cache when ``HF_HUB_OFFLINE=1``, else from the hub (into that cache). The result is a
:class:`HubModel`: a path-like to the snapshot that also carries the id and the exact commit it resolved to, which
the outputs' metadata records, so a score can be traced to the revision that produced it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError

#: what a snapshot is fetched with: configs, tokenizers, chat templates and safetensors weights (and adapters')
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken", "*.gguf"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*(@[A-Za-z0-9_./-]+)?$")


@dataclass(frozen=True)
class HubModel(os.PathLike):
    """A hub model resolved to its local snapshot: ``os.fspath()`` is the snapshot directory."""

    id: str          # "org/name"
    revision: str    # the commit hash the snapshot is at
    path: str        # the snapshot directory in the HF cache

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return f"{self.id}@{self.revision[:12]}"


def is_hub_id(source) -> bool:
    """A string that is not an existing local path and has the form ``org/name[@revision]``."""
    if not isinstance(source, str) or os.path.exists(os.path.expanduser(source)):
        return False
    return bool(_HUB_ID.match(source)) and not source.startswith((".", "/", "~"))


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def local_source(source):
    """``source`` itself, or its :class:`HubModel` when it is a hub id (see the module docstring)."""
    return resolve(source) if is_hub_id(source) else source


def resolve(source: str) -> HubModel:
    """The local snapshot of hub id ``source`` (``org/name`` or ``org/name@revision``); ModelError naming the id."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    repo, _, revision = source.partition("@")
    cut_off = offline()
    try:
        path = snapshot_download(repo, revision=revision or None, allow_patterns=ALLOW_PATTERNS,
                                 local_files_only=cut_off)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        where = ("it is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it"
                 if cut_off else "it is not in the local Hugging Face cache and the hub cannot be reached")
        raise ModelError(f"{source}: not a local path; as a Hugging Face hub id, {where} "
                         f"({_first_line(exc)})") from None
    except (HfHubHTTPError, ValueError, OSError) as exc:   # unknown repo or revision, gated, no network
        raise ModelError(f"{source}: not a local path, and the Hugging Face hub cannot provide it: "
                         f"{_first_line(exc)}") from None
    snapshot = Path(path)
    check_snapshot(source, snapshot, revision or "main")
    if not any(snapshot.glob("*.json")):
        raise ModelError(f"{source}: the hub snapshot {snapshot} has no config.json or adapter_config.json")
    return HubModel(repo, snapshot.name, str(snapshot))


_COMMIT = re.compile(r"[0-9a-f]{40}")


def check_snapshot(source: str, snapshot: Path, revision: str) -> None:
    """A cached snapshot as huggingface_hub lays it out (``snapshots/<commit>``, files linked into ``blobs/``), or
    a :class:`ModelError` saying how the cache entry is damaged: a ref that names no commit (an empty
    ``refs/main`` resolves to the ``snapshots`` folder itself), or files whose blobs are gone."""
    repo_dir = next((p for p in snapshot.parents if p.name.startswith("models--")), snapshot.parent)
    fix = (f"download it again (hf download {source.partition('@')[0]}) or delete {repo_dir} and let it be "
           f"fetched")
    if not _COMMIT.fullmatch(snapshot.name):
        raise ModelError(f"{source}: the Hugging Face cache entry is damaged: refs/{revision} "
                         f"({repo_dir / 'refs' / revision}) does not name a commit; {fix}")
    missing = sorted(p.name for p in snapshot.iterdir() if p.is_symlink() and not p.exists())
    if missing:
        raise ModelError(f"{source}: the cached snapshot {snapshot.name[:12]} is incomplete: {missing[0]}"
                         f"{f' (and {len(missing) - 1} more)' if len(missing) > 1 else ''} links to a missing blob; "
                         f"{fix}")


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]
