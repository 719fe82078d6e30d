"""``tuco eval``'s work: lm-eval tasks on the α-steered pair, one ``lm_eval.simple_evaluate`` per α.

:func:`task_manager` and :func:`check_tasks` run before any model loads: the include folders exist, every task
name is known (a close match is suggested otherwise) and every task's data loads (a task whose data must come from
a hub and is not in the local cache is named). :func:`evaluate_alphas` then evaluates one
:class:`~.lm.LMEvalModel` at each α (the pair loaded once); each result is ``simple_evaluate``'s dict as it is
(``results[task]["acc,none"]``, ``samples[task]`` with ``log_samples``) with this tool's metadata under ``"tuco"``.
:func:`write_json` writes one atomically; :func:`sweep_paths` names a sweep's per-α files.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Callable
from pathlib import Path

from ..errors import OptionError, OutputError, TucoError
from ..files import write_atomically

#: keys of a task's results that are not metrics
NOT_METRICS = ("alias", "name", "sample_len", "samples", " ")


def task_manager(include_paths=None, tasks=()):
    """lm-eval's TaskManager over ``include_paths`` (folders of task YAMLs, each checked) and lm-eval's own tasks.

    Indexing lm-eval's own few thousand task files takes seconds to tens of seconds; when every name in ``tasks``
    is found in (and loads from) the include folders alone, that index is all that is built."""
    from lm_eval.tasks import TaskManager

    paths = [str(p) for p in (include_paths or [])]
    for p in paths:
        if not Path(p).is_dir():
            raise OptionError(f"--include-path {p}: not a folder of lm-eval task files")
    try:
        if paths and tasks:
            own = TaskManager(include_path=paths, include_defaults=False)
            if all(own.match_tasks([t]) for t in tasks):
                try:
                    _load_each(own, tasks)
                    return own
                except Exception:   # a YAML of theirs that includes one of lm-eval's: the full index below
                    pass
        return TaskManager(include_path=paths or None)
    except TucoError:
        raise
    except Exception as exc:   # a YAML lm-eval cannot index
        raise OptionError(f"--include-path {', '.join(paths)}: lm-eval cannot read the task files there ({exc})") from None


def check_tasks(manager, tasks: list[str]) -> list[str]:
    """The task names, each known to ``manager`` (glob patterns allowed), and every task's data loaded once."""
    if not tasks:
        raise OptionError("--tasks names no task")
    for name in tasks:
        if not manager.match_tasks([name]):
            near = difflib.get_close_matches(name, manager.all_tasks, n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else "; `lm-eval ls tasks` lists them, --include-path adds yours"
            raise OptionError(f"--tasks: unknown lm-eval task {name!r}{hint}")
    for name in tasks:
        try:
            _load_each(manager, [name])
        except Exception as exc:   # the data: a hub dataset that is not cached offline, a missing local file, a bad YAML
            first = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            raise TucoError(f"task {name!r}: its data could not be loaded ({type(exc).__name__}: {first})") from None
    return tasks


def _load_each(manager, tasks) -> None:
    for name in tasks:
        manager.load([name])


def evaluate_alphas(model, manager, tasks: list[str], alphas: list, *, on_result: Callable | None = None,
                    **evaluate_options) -> list[dict]:
    """``simple_evaluate``'s dict for each α in turn (``model.set_alpha``), in order; ``on_result(alpha, result)``
    as each finishes. ``evaluate_options``: simple_evaluate's own (limit, num_fewshot, log_samples, ...)."""
    import lm_eval

    out = []
    for alpha in alphas:
        model.set_alpha(alpha)
        result = lm_eval.simple_evaluate(model=model, tasks=list(tasks), task_manager=manager, **evaluate_options)
        out.append(result)
        if on_result is not None:
            on_result(alpha, result)
    return out


def metrics_of(result: dict) -> dict[str, dict[str, float]]:
    """{task: {metric: value}}: the numeric metrics of a result (``acc,none`` -> ``acc``, stderr kept as such)."""
    table = {}
    for task, values in result.get("results", {}).items():
        row = {}
        for key, value in values.items():
            if key in NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, _, flt = key.partition(",")
            row[metric if flt in ("", "none") else f"{metric} ({flt})"] = float(value)
        table[task] = row
    return table


def jsonable(obj):
    """``obj`` as strict JSON values: numpy scalars as numbers, sets as lists, NaN/inf as null, other objects as
    their str (lm-eval's own rule for what it cannot serialise)."""
    from lm_eval.utils import handle_non_serializable

    def clean(value):
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, dict):
            return {str(k): clean(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v) for v in value]
        if value is None or isinstance(value, (str, int, bool)):
            return value
        return clean(handle_non_serializable(value))

    return clean(obj)


def write_json(path: Path, data: dict) -> Path:
    """``data`` as indented JSON at ``path``, atomically (an interrupted write leaves the old file or the new)."""
    text = json.dumps(jsonable(data), indent=1, ensure_ascii=False, allow_nan=False)
    return write_atomically(path, (text + "\n").encode("utf-8"))


def alpha_label(alpha) -> str:
    return ",".join(f"{a:g}" for a in alpha) if isinstance(alpha, (list, tuple)) else f"{alpha:g}"


def sweep_paths(out: Path, alphas: list) -> list[Path]:
    """Each α's result file beside the sweep's summary ``out``: ``<stem>.alpha=<α><suffix>``."""
    return [out.with_name(f"{out.stem}.alpha={alpha_label(a)}{out.suffix}") for a in alphas]


def check_json_out(out, *, force: bool, also=()) -> Path:
    """The results path (and the files a sweep writes beside it), refused before any work when they cannot or
    must not be written."""
    out = Path(out)
    if out.suffix.lower() != ".json":
        raise OutputError(f"{out}: tuco eval writes JSON (simple_evaluate's dict); name a file ending in .json")
    if not out.parent.is_dir():
        raise OutputError(f"{out}: directory {out.parent} does not exist")
    for path in [out, *also]:
        if path.is_dir():
            raise OutputError(f"{path}: is a directory")
        if path.exists() and not force:
            raise OutputError(f"{path}: exists; pass --force to replace it")
    probe = out.parent / f".{out.name}.probe"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{out}: directory {out.parent} is not writable ({exc.strerror})") from None
    return out
