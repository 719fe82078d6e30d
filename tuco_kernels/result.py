"""What a scoring run returns: per-prompt TuCo and friends in input order (:class:`TuCoResult`) and how the run
went (:class:`RunInfo`: schedule, memory plan, peak device memory, where the time went)."""

from __future__ import annotations

import dataclasses
import datetime
import math
from dataclasses import dataclass

import numpy as np

from ._version import __version__
from .core.budget import SweepPlan
from .offload.streamer import StreamProfile


@dataclass(frozen=True)
class RunInfo:
    """How a :func:`~tuco_kernels.score` call ran.

    schedule: "prompt" or "layer"; offload: where the blocks' weights lived ("none", "cpu", "disk"); rendering: how
    text prompts were turned into tokens (chat template or raw text);
    plan: the micro-batch and sweep plan; sweeps: how many sweeps walked the layers; profile: copies vs
    compute (``profile=True``); peak_gpu_memory: bytes (with ``max_gpu_memory``).
    """

    schedule: str
    offload: str
    plan: SweepPlan
    sweeps: int
    profile: StreamProfile | None = None
    peak_gpu_memory: int | None = None
    rendering: str = ""

    def lines(self) -> list[tuple[str, str]]:
        """(label, value) rows for a printed summary."""
        rows = [("rendering", self.rendering), ("schedule", f"{self.schedule}, offload={self.offload}, {self.sweeps} sweep(s)"),
                ("plan", self.plan.describe())]
        if self.profile is not None:
            rows += self.profile.lines() if self.offload != "none" else [("weight copies", "none (resident)")]
        if self.peak_gpu_memory is not None:
            rows.append(("peak device memory", f"{self.peak_gpu_memory / 2**30:.2f} GiB"))
        return rows


@dataclass
class TuCoResult:
    """Scores of N prompts (input order).

    tuco, preco: [N]; n_tokens: [N] prompt length in tokens.
    ptc_l1, ftc_l1: [N, L] last-token |PTC_l|₁ and |FTC_l|₁ per layer (``layers=True``).
    beta: [N, L] cumulative β_l at the last token (``layers=True``); beta[:, -1] equals tuco up to fp32 rounding
        (β comes from the fp32 norms the fused update writes).
    token_tuco: N arrays [n_tokens] of TuCo at every position (``token_map=True``).
    output_co: [N] the OutputCo baseline (``output_co=True``).
    status: N strings, "ok" or why the row's numbers are not usable (a NaN or inf in the stream, naming the first
        layer and block where it appeared; 0/0); such rows keep their place but are never averaged.
    truncated_from: N original lengths, 0 for prompts that were not cut (``truncate=...``), else None.
    texts: N previews of the prompts (the text, a chat's turns, decoded ids), cut at 1000 characters.
    tokens: N lists of token strings beside ``token_tuco`` (``token_map=True``).
    columns: N dicts of the labels carried with the prompts (extra CSV columns, JSONL fields, DataFrame columns;
        the same names in every row), else None.
    finetuned: N names of the fine-tune each row scored (a pair set, ``load_pair(base, [a, b])``: every prompt
        once per fine-tune, fine-tune by fine-tune), else None.
    run: how the run went (:class:`RunInfo`).
    """

    ids: list
    tuco: np.ndarray
    n_tokens: np.ndarray
    alpha: list
    ptc_l1: np.ndarray | None = None
    ftc_l1: np.ndarray | None = None
    beta: np.ndarray | None = None
    token_tuco: list | None = None
    output_co: np.ndarray | None = None
    status: list | None = None
    truncated_from: list | None = None
    run: RunInfo | None = None
    texts: list | None = None
    tokens: list | None = None
    columns: list | None = None
    finetuned: list | None = None

    @classmethod
    def concat(cls, results: list[TuCoResult], *, finetuned: list[str]) -> TuCoResult:
        """One result of the rows of ``results`` in order, the rows of ``results[k]`` named ``finetuned[k]``."""
        first = results[0]

        def arrays(name):
            parts = [getattr(r, name) for r in results]
            return None if parts[0] is None else np.concatenate(parts)

        def lists(name):
            parts = [getattr(r, name) for r in results]
            return None if parts[0] is None else [v for part in parts for v in part]

        out = cls(ids=lists("ids"), tuco=arrays("tuco"), n_tokens=arrays("n_tokens"), alpha=first.alpha,
                  ptc_l1=arrays("ptc_l1"), ftc_l1=arrays("ftc_l1"), beta=arrays("beta"),
                  token_tuco=lists("token_tuco"), output_co=arrays("output_co"), status=lists("status"),
                  truncated_from=lists("truncated_from"), run=first.run, texts=lists("texts"), tokens=lists("tokens"),
                  columns=lists("columns"), finetuned=[name for name, r in zip(finetuned, results) for _ in r.ids])
        return out

    def by_finetuned(self) -> dict[str, TuCoResult]:
        """The rows of each fine-tune (a pair set's result) as its own result, by name, in order."""
        if self.finetuned is None:
            raise ValueError("this result scored one fine-tune (its finetuned is None)")
        names = list(dict.fromkeys(self.finetuned))
        return {name: self.rows([i for i, f in enumerate(self.finetuned) if f == name]) for name in names}

    def rows(self, index: list[int]) -> TuCoResult:
        """A result of the rows at ``index`` (positions), in that order."""
        def take(value):
            if value is None:
                return None
            return value[index] if isinstance(value, np.ndarray) else [value[i] for i in index]

        return dataclasses.replace(self, ids=take(self.ids), tuco=take(self.tuco), n_tokens=take(self.n_tokens),
                                   ptc_l1=take(self.ptc_l1), ftc_l1=take(self.ftc_l1), beta=take(self.beta),
                                   token_tuco=take(self.token_tuco), output_co=take(self.output_co),
                                   status=take(self.status), truncated_from=take(self.truncated_from),
                                   texts=take(self.texts), tokens=take(self.tokens), columns=take(self.columns),
                                   finetuned=take(self.finetuned))

    @property
    def ok(self) -> np.ndarray:
        """[N] bool: the row's TuCo is a number (``status == "ok"``)."""
        if self.status is None:
            return np.isfinite(self.tuco)
        return np.array([s == "ok" for s in self.status], dtype=bool)

    @property
    def flagged(self) -> list[int]:
        """Positions of the rows whose numbers are not usable (see ``status``)."""
        return [i for i, ok in enumerate(self.ok) if not ok]

    @property
    def meta(self) -> dict:
        """The run information as a dict (``schedule``, ``offload``, ``plan`` text, ``sweeps``, and ``profile`` /
        ``peak_gpu_memory`` when recorded); kept for code written before :attr:`run`."""
        if self.run is None:
            return {}
        out = dict(schedule=self.run.schedule, offload=self.run.offload, plan=self.run.plan.describe(),
                   sweeps=self.run.sweeps)
        if self.run.profile is not None:
            out["profile"] = self.run.profile
        if self.run.peak_gpu_memory is not None:
            out["peak_gpu_memory"] = self.run.peak_gpu_memory
        return out

    @property
    def preco(self) -> np.ndarray:
        return 1.0 - self.tuco

    def __len__(self) -> int:
        return len(self.ids)

    def to_records(self) -> list[dict]:
        """One plain dict per prompt (JSON-serialisable): id, the fine-tune (a pair set's ``finetuned``), text, the
        prompts' labels, tuco, preco, n_tokens, status and what was asked for. A number that is not finite is None (JSON null), never NaN."""
        out = []
        ok = self.ok
        for i, pid in enumerate(self.ids):
            rec = {"id": pid}
            if self.finetuned is not None:
                rec["finetuned"] = self.finetuned[i]
            if self.texts is not None:
                rec["text"] = self.texts[i]
            if self.columns is not None:
                rec |= self.columns[i]
            rec |= {"tuco": _number(self.tuco[i]) if ok[i] else None,
                   "preco": _number(self.preco[i]) if ok[i] else None, "n_tokens": int(self.n_tokens[i]),
                   "status": self.status[i] if self.status is not None else ("ok" if ok[i] else "non-finite")}
            if self.truncated_from is not None:
                rec["truncated_from"] = int(self.truncated_from[i]) or None
            if self.output_co is not None:
                rec["output_co"] = _number(self.output_co[i])
            if self.ptc_l1 is not None:
                rec["ptc_l1"] = [_number(v) for v in self.ptc_l1[i]]
                rec["ftc_l1"] = [_number(v) for v in self.ftc_l1[i]]
                rec["beta"] = [_number(v) for v in self.beta[i]]
            if self.token_tuco is not None:
                if self.tokens is not None:
                    rec["tokens"] = list(self.tokens[i])
                rec["token_tuco"] = [_number(v) for v in self.token_tuco[i]]
            out.append(rec)
        return out

    def to_pandas(self):
        import pandas as pd

        return pd.DataFrame.from_records(self.to_records())

    def summary(self) -> dict:
        """Statistics over the rows whose TuCo is a number; ``flagged`` counts the others."""
        t = self.tuco[self.ok & np.isfinite(self.tuco)]
        return {"n": len(self), "flagged": len(self) - int(t.size),
                "tuco_mean": float(t.mean()) if t.size else float("nan"),
                "tuco_sd": float(t.std(ddof=1)) if t.size > 1 else float("nan"),
                "tuco_min": float(t.min()) if t.size else float("nan"),
                "tuco_max": float(t.max()) if t.size else float("nan"),
                "tokens_mean": float(self.n_tokens.mean())}

    def __repr__(self) -> str:
        s = self.summary()
        flagged = f", {s['flagged']} flagged" if s["flagged"] else ""
        return (f"TuCoResult(n={s['n']}{flagged}, tuco mean={s['tuco_mean']:.4f} sd={s['tuco_sd']:.4f} "
                f"range=[{s['tuco_min']:.4f}, {s['tuco_max']:.4f}])")


def run_metadata(pair, *, options: dict | None = None, command: str | None = None, run: RunInfo | None = None) -> dict:
    """What a results file needs to be read later: the models (and, for hub ids, their revisions), dtype, device,
    rendering, options, versions and date. Written beside the results (``<file>.meta.json``, Parquet metadata)."""
    import platform

    import torch
    import transformers

    def model_of(model):
        return getattr(model.config, "_name_or_path", None) or getattr(model.config, "name_or_path", None)

    sources = getattr(pair, "sources", None)
    models = ({side: dataclasses.asdict(src) if dataclasses.is_dataclass(src) else src for side, src in sources.items()}
              if sources else {"pretrained": model_of(pair.pretrained), "finetuned": model_of(pair.finetuned)})
    return {"tuco_kernels": __version__, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": command, "models": models,
            "tokenizer": getattr(pair.tokenizer, "name_or_path", None), "model_type": pair.family.model_type,
            "layers": pair.n_layers, "dtype": str(pair.dtype).removeprefix("torch."), "device": str(pair.device),
            "offload": pair.offload, "lora": getattr(pair, "lora", None), "rendering": run.rendering if run is not None else None,
            "options": options or {},
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "transformers": transformers.__version__}}


def _number(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None
