"""The progress line of a dataset run on stderr (rank 0): how far the whole dataset is, how fast this run goes."""

from __future__ import annotations

import math
import sys
import time


class Progress:
    """Prompts and tokens of the whole dataset (finished shards of earlier runs included), tokens/s of this
    run and the ETA from it: a line redrawn on a terminal, else one line every ``every`` seconds (job logs)."""

    def __init__(self, n_prompts: int, n_tokens: int, done_prompts: int, done_tokens: int, *, enabled: bool,
                 stream=None, every: float | None = None):
        self.n_prompts, self.n_tokens = n_prompts, n_tokens
        self.start_prompts, self.start_tokens = done_prompts, done_tokens
        self.prompts, self.tokens = done_prompts, done_tokens
        self.enabled, self.stream = enabled, stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every if every is not None else (0.5 if self.tty else 30.0)
        self.t0 = time.perf_counter()
        self.last = -math.inf

    @property
    def rate(self) -> float:
        """Tokens per second scored by this run."""
        dt = time.perf_counter() - self.t0
        return (self.tokens - self.start_tokens) / dt if dt > 0 else 0.0

    def line(self) -> str:
        rate = self.rate
        left = self.n_tokens - self.tokens
        eta = _duration(left / rate) if rate > 0 and left > 0 else ("0 s" if left <= 0 else "?")
        resumed = f", {self.start_prompts:,} from earlier runs" if self.start_prompts else ""
        return (f"tuco: {self.prompts:,}/{self.n_prompts:,} prompts ({100 * self.prompts / max(self.n_prompts, 1):.1f} %"
                f"{resumed}), {self.tokens:,}/{self.n_tokens:,} tokens, {rate:,.0f} tokens/s, ETA {eta}")

    def update(self, prompts: int, tokens: int, force: bool = False) -> None:
        self.prompts, self.tokens = prompts, tokens
        now = time.perf_counter()
        if self.enabled and (force or now - self.last >= self.every):
            self.last = now
            self.stream.write(("\r" + self.line() + "\x1b[K") if self.tty else self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(self.prompts, self.tokens, force=True)
            if self.tty:
                self.stream.write("\n")


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else (f"{s // 60} min {s % 60:02d} s" if s >= 60
                                                                         else f"{s} s")
