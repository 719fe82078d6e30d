"""``tuco eval``: lm-evaluation-harness tasks on the α-steered pair (:mod:`tuco_kernels.harness`), one result per α.

Before any model loads: lm-eval is installed, the options, the output path(s), every task name and every task's
data. Then the pair loads once and ``simple_evaluate`` runs at each α; a sweep writes each α's result as it
finishes, then its summary and the figure (each metric against α, one panel per task).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from ..errors import OptionError
from ..harness import require_lm_eval
from ..harness.evaluate import (alpha_label, check_json_out, check_tasks, evaluate_alphas, metrics_of, sweep_paths,
                                task_manager, write_json)
from ..harness.plot import sweep_figure
from ..prompts.tokenize import tokenizer_name
from ..result import run_metadata
from .console import EXIT_OK
from .prepare import check_model_args, command_line, load_models, options_of


def cmd_eval(args) -> int:
    require_lm_eval()
    alphas, sweep = eval_alphas(args)
    if args.fewshot_single_turn and not args.apply_chat_template:
        raise OptionError("--fewshot-single-turn arranges few-shot examples inside a chat turn; it needs "
                          "--apply-chat-template")
    check_model_args(args, alphas)
    out = Path(args.out)
    per_alpha = sweep_paths(out, alphas) if sweep else []
    check_json_out(out, force=args.force, also=per_alpha + ([out.with_suffix(".png")] if sweep else []))
    with _third_party_output(args.verbose):
        names = [t.strip() for t in args.tasks.split(",") if t.strip()]
        manager = task_manager(args.include_path, names)
        tasks = check_tasks(manager, names)
        pair = load_models(args)
        with pair:
            if args.apply_chat_template and not getattr(pair.tokenizer, "chat_template", None):
                raise OptionError(f"--apply-chat-template: the fine-tuned tokenizer ({tokenizer_name(pair.tokenizer)}) "
                                  f"has no chat template")
            from ..harness.lm import LMEvalModel   # imports lm-eval (checked above)

            model = LMEvalModel(pair, alphas[0], batch_tokens=args.batch_tokens, max_gpu_memory=args.max_gpu_memory,
                                sweep_tokens=args.sweep_tokens, backend=args.backend, engine=args.engine)
            how = eval_rendering(args, pair.tokenizer)
            print(f"tuco: {pair}; tasks {', '.join(tasks)}; α {', '.join(_label(a) for a in alphas)}", file=sys.stderr)
            print(f"tuco: rendering: {how}", file=sys.stderr)
            meta = run_metadata(pair, options=options_of(args), command=command_line(args))
            meta.update(rendering=how, tasks=tasks, versions={**meta["versions"], **_versions()})

            def on_result(alpha, result):
                print(summary_table([alpha], [result]), file=sys.stderr)
                if sweep:
                    path = per_alpha[alphas.index(alpha)]
                    _write(path, result, {**meta, "alpha": alpha})
                    print(f"tuco: α = {_label(alpha)} written to {path}", file=sys.stderr)

            results = evaluate_alphas(model, manager, tasks, alphas, on_result=on_result, **lm_eval_options(args))
    if not sweep:
        _write(out, results[0], {**meta, "alpha": alphas[0]})
        print(f"tuco: results written to {out}", file=sys.stderr)
        return EXIT_OK
    write_sweep(out, alphas, results, per_alpha, meta)
    print(summary_table(alphas, results), file=sys.stderr)
    print(f"tuco: sweep summary written to {out}, each α's result beside it, the figure to {out.with_suffix('.png')}",
          file=sys.stderr)
    return EXIT_OK


def eval_alphas(args) -> tuple[list, bool]:
    """The α values to evaluate, and whether they are a sweep."""
    if args.alpha_sweep is not None and args.alpha is not None:
        raise OptionError("--alpha and --alpha-sweep both given; use --alpha for one α, --alpha-sweep for several")
    if args.alpha_sweep is not None:
        return list(args.alpha_sweep), True
    return [1.0 if args.alpha is None else args.alpha], False


def lm_eval_options(args) -> dict:
    """simple_evaluate's options from the command line."""
    return dict(limit=args.limit, num_fewshot=args.num_fewshot, log_samples=args.log_samples,
                apply_chat_template=args.apply_chat_template,
                fewshot_as_multiturn=args.apply_chat_template and not args.fewshot_single_turn,
                system_instruction=args.system_instruction, bootstrap_iters=args.bootstrap_iters)


def eval_rendering(args, tokenizer) -> str:
    """How lm-eval turns documents into tokens here, in words (printed, and kept in the metadata)."""
    if not args.apply_chat_template:
        how = "lm-eval's prompts as raw text (its own BOS handling, truncation and stop sequences; no chat template)"
    else:
        turns = "in one user turn" if args.fewshot_single_turn else "as turns"
        how = f"lm-eval's apply_chat_template: chat template of {tokenizer_name(tokenizer)}, few-shot examples {turns}"
    if args.system_instruction:
        how += f", system instruction {args.system_instruction!r}"
    return how


def write_sweep(out: Path, alphas: list, results: list[dict], files: list[Path], meta: dict) -> None:
    """The sweep's summary (its metadata, and per α the metrics and the file with the whole result) and the figure."""
    tables = [metrics_of(r) for r in results]
    figure = out.with_suffix(".png")
    sweep_figure([float(a) for a in alphas], tables, figure,
                 title=f"lm-eval metrics against α ({meta['models'].get('finetuned') if meta.get('models') else ''})")
    write_json(out, {"tuco": {**meta, "alpha_sweep": alphas, "figure": figure.name},
                     "sweep": [{"alpha": a, "results": r.get("results", {}), "groups": r.get("groups", {}),
                                "n-samples": r.get("n-samples", {}), "file": f.name}
                               for a, r, f in zip(alphas, results, files)]})


def summary_table(alphas: list, results: list[dict]) -> str:
    """Task, metric, then the value (± stderr) at each α, as aligned text."""
    tables = [metrics_of(r) for r in results]
    rows = [["task", "metric", *(f"α={_label(a)}" for a in alphas)]]
    tasks = list(dict.fromkeys(t for table in tables for t in table))
    for task in tasks:
        metrics = list(dict.fromkeys(m for table in tables for m in table.get(task, {}) if "_stderr" not in m))
        for m in metrics:
            cells = []
            for table in tables:
                row = table.get(task, {})
                value, err = row.get(m), row.get(_stderr_of(m))
                cells.append("–" if value is None else f"{value:.4f}" + (f" ± {err:.4f}" if err is not None else ""))
            rows.append([task, m, *cells])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _stderr_of(metric: str) -> str:
    name, paren, rest = metric.partition(" (")
    return f"{name}_stderr" + (f" ({rest}" if paren else "")


def _write(path: Path, result: dict, meta: dict) -> None:
    write_json(path, {**result, "tuco": meta})


def _label(alpha) -> str:
    return alpha_label(alpha)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("lm_eval", "datasets"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


@contextlib.contextmanager
def _third_party_output(verbose: bool):
    """lm-eval's and datasets' log lines and datasets' progress bars only with -v (lm-eval's request bars stay)."""
    log = logging.getLogger("lm_eval")
    saved = log.level
    log.setLevel(logging.INFO if verbose else logging.ERROR)
    toggled = False
    if not verbose:
        try:
            import datasets

            if datasets.is_progress_bar_enabled():
                datasets.disable_progress_bars()
                toggled = True
        except ImportError:
            pass
    try:
        yield
    finally:
        log.setLevel(saved)
        if toggled:
            import datasets

            datasets.enable_progress_bars()
