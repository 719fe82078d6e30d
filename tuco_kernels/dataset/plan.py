"""The plan every rank computes from the same inputs (micro-batches, shards and the fingerprint of everything that
changes the numbers or the shards), and its check against the ``plan.json`` an earlier run wrote: a rerun that
changed any of it stops with :class:`PlanMismatch`, naming the field."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import torch

from .._version import __version__
from ..core.engine import layer_alphas
from ..errors import TucoError
from ..core.budget import parse_size, plan_for
from ..ops import resolve_backend
from ..prompts.batching import batch_groups
from .identity import pair_identity
from .layout import Layout, now
from .shards import Shard, pack_shards
from .tokens import TokenTable

PLAN_FORMAT = 1


class PlanMismatch(TucoError):
    """The output directory was made by a run with other inputs, models or options."""


@dataclass
class DatasetPlan:
    """What every rank computes from the same inputs: micro-batches, shards and the fingerprint."""

    fingerprint: dict
    sweep_plan: object
    shards: list[Shard]
    n_prompts: int
    n_tokens: int
    info: dict = field(default_factory=dict)   # recorded in plan.json, never compared
    n_sides: int = 1   # fine-tunes scored per prompt (a pair set's; each prompt gives one row per fine-tune)

    @property
    def n_rows(self) -> int:
        """Rows of the merged output: every prompt once per fine-tune, fine-tune by fine-tune."""
        return self.n_prompts * self.n_sides

    @property
    def fingerprint_sha(self) -> str:
        return hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True).encode()).hexdigest()

    def to_json(self) -> dict:
        return {"format": PLAN_FORMAT, "fingerprint": self.fingerprint, "fingerprint_sha256": self.fingerprint_sha,
                "n_prompts": self.n_prompts, "n_sides": self.n_sides, "n_tokens": self.n_tokens,
                "n_shards": len(self.shards),
                "padded_tokens": sum(s.padded for s in self.shards), "info": self.info,
                "shards": [s.summary() for s in self.shards]}


#: the fingerprint's fields, in the order a mismatch is reported; each changes the numbers or the shards
FINGERPRINT_FIELDS = ("pretrained", "finetuned", "fine_tunes", "lora", "dtype", "device", "backend", "attn_implementation", "alpha",
                      "layers", "token_map", "output_co", "chat", "system_prompt", "chat_template", "batch_tokens",
                      "shard_tokens", "n_prompts", "inputs")


def make_plan(pair, records, tokens: TokenTable, *, alpha, chat, system_prompt, batch_tokens, layers, token_map,
              output_co, backend, max_gpu_memory, sweep_tokens, shard_tokens) -> DatasetPlan:
    """Micro-batches exactly as :func:`~tuco_kernels.score.plan_batches` makes them (the same memory plan and
    grouping), packed into shards; the fingerprint of everything that changes the numbers or the shards."""
    budget = parse_size(max_gpu_memory)
    lengths = tokens.lengths
    batch_plan = plan_for(pair, lengths.tolist(), batch_tokens=batch_tokens, budget=budget, own_pt=output_co,
                          token_map=token_map)
    groups = batch_groups(lengths.tolist(), batch_plan.batch_tokens, alone=not pair.family.pads_invariant)
    total_padded = sum(len(g) * int(lengths[g[0]]) for g in groups)
    sweep_plan = batch_plan.sweeps(total_padded, sweep_tokens)
    shards = pack_shards(groups, lengths, shard_tokens)
    ids = [r.id for r in records]
    identity = pair_identity(pair)
    config = pair.finetuned.config
    template = getattr(pair.tokenizer, "chat_template", None) if chat or any(r.messages for r in records) else None
    fp = {
        "pretrained": identity["pretrained"]["sha256"],
        "finetuned": identity["finetuned"]["sha256"],
        "fine_tunes": pair.side_names,   # a pair set's names, the finetuned column (None: one fine-tune)
        "lora": lora_modes(pair),   # shared and merged round apart
        "dtype": str(pair.dtype).removeprefix("torch."),
        "device": device_name(pair.device),   # CPU: the thread count changes matmul rounding; GPU: the model
        "backend": resolve_backend(backend, pair.device.type),  # the per-layer norms' summation order
        "attn_implementation": getattr(config, "_attn_implementation", None) or "sdpa",
        "alpha": [float(a) for a in layer_alphas(alpha, pair.n_layers)],
        "layers": bool(layers), "token_map": bool(token_map), "output_co": bool(output_co),
        "chat": bool(chat), "system_prompt": system_prompt,
        "chat_template": hashlib.sha256(template.encode()).hexdigest() if isinstance(template, str) else None,
        "batch_tokens": int(batch_plan.batch_tokens), "shard_tokens": int(shard_tokens),
        "n_prompts": len(records), "inputs": tokens.digest(ids),
    }
    info = {"models": identity, "tuco_kernels": __version__,
            "torch": torch.__version__, "created": now(), "micro_batches": len(groups),
            "sweep_tokens": sweep_plan.sweep_tokens}
    return DatasetPlan(fp, sweep_plan, shards, len(records), int(lengths.sum()), info, n_sides=len(pair.sides))


def lora_modes(pair):
    """"shared"/"merged" for a LoRA fine-tune, None for a whole model; a pair set's, one per fine-tune."""
    def mode(lora):
        return lora["mode"] if lora else None

    lora = getattr(pair, "lora", None)
    return [mode(m) for m in lora] if isinstance(lora, list) else mode(lora)


def compare_fingerprints(old: dict, new: dict, where: str) -> None:
    """Raise :class:`PlanMismatch` naming every field of ``new`` that differs from ``old``."""
    changed = [k for k in FINGERPRINT_FIELDS if k in new and old.get(k) != new[k]]
    changed += [k for k in new if k not in FINGERPRINT_FIELDS and old.get(k) != new[k]]
    if not changed:
        return

    def show(v):
        text = json.dumps(v) if not isinstance(v, str) else v
        return text if len(text) <= 40 else text[:16] + "…"

    what = "; ".join(f"{k}: {show(old.get(k))} → {show(new[k])}" for k in changed)
    threads = _threads_hint(old.get("device"), new.get("device")) if "device" in changed else ""
    raise PlanMismatch(f"{where} was made by a run with other {'/'.join(changed)} ({what}). Its finished shards "
                       f"cannot be mixed with this run's: {threads or 'rerun with the same inputs and options'}, or "
                       f"use another output directory (or delete this one to start over)")


def _threads_hint(old, new) -> str:
    """When only the CPU thread count differs: how to resume. It stays in the fingerprint because it changes the
    numbers (the order of the matmuls' sums: on the default pair TuCo moved by up to 1.5e-7 between 1 and 2
    threads, 2026-12-05), so the fix is to run with the first run's count."""
    m_old, m_new = (re.fullmatch(r"cpu \((\d+) threads?\)", str(v)) for v in (old, new))
    if not (m_old and m_new):
        return ""
    n = m_old.group(1)
    return (f"the CPU thread count changes the last bits of the sums, so resume with the first run's {n} "
            f"thread{'s' if n != '1' else ''}: OMP_NUM_THREADS={n} before the command (torchrun sets 1 per rank)")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'s' if n != 1 else ''})"


def read_plan(layout: Layout) -> tuple[dict | None, str | None]:
    """(plan.json's content, None); (None, None) when there is none; (None, why) when it is damaged (not UTF-8,
    not JSON, no fingerprint object): then it is written again, each finished shard being checked against this
    run's own fingerprint before it counts."""
    if not layout.plan.is_file():
        return None, None
    try:
        plan = json.loads(layout.plan.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"not readable JSON ({str(exc).splitlines()[0][:80] if str(exc) else type(exc).__name__})"
    if not isinstance(plan, dict) or not isinstance(plan.get("fingerprint"), dict):
        return None, "no fingerprint in it"
    return plan, None


def check_plan(out_dir, fingerprint: dict) -> dict | None:
    """The existing ``plan.json`` of ``out_dir`` after checking ``fingerprint`` (all of it, or the fields known
    before the models load) against it; None when there is none or it is damaged (:func:`read_plan`)."""
    layout = Layout(out_dir)
    plan, _ = read_plan(layout)
    if plan is None:
        return None
    if plan.get("format") != PLAN_FORMAT:
        raise PlanMismatch(f"{layout.plan}: plan format {plan.get('format')}, this version writes {PLAN_FORMAT}; "
                           f"finish that run with the version that started it, or use another output directory")
    compare_fingerprints(plan["fingerprint"], fingerprint, str(layout.plan))
    return plan
