"""The command line's value types (argparse ``type=``): each turns one option's text into its value or says, in
one line, why it cannot (argparse then prints ``tuco: error: argument --X: ...``, exit 2)."""

from __future__ import annotations

import argparse

from ..errors import TucoError
from ..core.budget import parse_size


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def probability(text: str) -> float:
    value = positive_float(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return value


def alpha_value(text: str):
    """'1.25' -> 1.25; '1,1,0.5' -> one value per layer."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number or comma-separated list of numbers: {text!r}") from None
    if not all(v == v and abs(v) != float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"must be finite: {text!r}")
    return values[0] if len(values) == 1 else values


def memory_size(text: str) -> str:
    """A memory budget such as 8GiB, checked here and kept as written (load_pair and score read it)."""
    try:
        parse_size(text)
    except TucoError:
        raise argparse.ArgumentTypeError(f"not a memory size: {text!r}; write a positive size with its unit, e.g. "
                                         f"8GiB, 24GB or 512MiB") from None
    return text


def alpha_list(text: str) -> list[float]:
    """'0,0.5,1,1.25' -> the α values of a sweep (scalars, finite, at least one, none twice)."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None
    if not all(v == v and abs(v) != float("inf") for v in values):
        raise argparse.ArgumentTypeError(f"must be finite: {text!r}")
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"a value appears twice: {text!r}")
    return values


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def sample_limit(text: str) -> int | float:
    """lm-eval's --limit: a number of documents per task (a whole number ≥ 1) or a fraction of them (in (0, 1))."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value >= 1 and value == int(value):
        return int(value)
    if 0 < value < 1:
        return value
    raise argparse.ArgumentTypeError(f"must be a whole number of documents ≥ 1 or a fraction in (0, 1), got {text}")
