"""The ``tuco`` command's options: one parser per command, options in groups (input, models, scoring or generation,
memory, output), typed and checked as they are parsed, defaults shown, an example in every command's help."""

from __future__ import annotations

import argparse
import sys

from .. import ops
from .._version import __version__
from ..prompts.templates import PAPER_TEMPLATES
from ..prompts.tokenize import TRUNCATE_SIDES
from .console import EXIT_USER
from .reporting import add_report_parser
from .sharded import add_dataset_args
from .values import (alpha_list, alpha_value, memory_size, non_negative_int, positive_float, positive_int, probability,
                     sample_limit)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in the one-line form every other error takes."""

    def error(self, message):
        print(f"tuco: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(EXIT_USER)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Examples kept as written; every option's default shown, unless it has none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "%(default)" not in text and action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            text += " (default: %(default)s)"
        return text


EXAMPLES = {
    "score": """examples:
  tuco score --prompts prompts.txt --out scores.csv                   # the default pair (gemma-3-270m + chat LoRA)
  tuco score --pretrained meta-llama/Llama-2-7b-hf --finetuned meta-llama/Llama-2-7b-chat-hf \\
             --template llama2 --prompts prompts.jsonl --out scores.parquet --dtype bfloat16 --layers
  tuco score --pretrained BASE --finetuned CHAT --prompts p.jsonl --out s.parquet --offload disk --max-gpu-memory 8GiB
  tuco score --pretrained BASE --finetuned LORA_A --finetuned LORA_B --prompts p.jsonl --out s.parquet   # a finetuned column

exit status: 0 clean; 2 a mistake named on one line; 3 finished, but rows are flagged (see the status column);
1 an internal error (a bug); 130 interrupted.""",
    "steer": """examples:
  tuco steer --prompts prompts.txt --alpha-sweep 0.75,1,1.25 --max-new-tokens 40         # the default pair
  tuco steer --pretrained BASE --finetuned CHAT --prompts p.txt --alpha 1.25 --sample --samples 4 --out gen.jsonl""",
    "eval": """examples:
  tuco eval --tasks arc_easy --limit 100 --out arc.json                                 # the default pair
  tuco eval --pretrained BASE --finetuned CHAT --tasks mmlu --num-fewshot 5 --alpha-sweep 0.75,0.9,1,1.1,1.25 \
            --out mmlu.json --dtype bfloat16 --offload cpu
  tuco eval --pretrained BASE --finetuned CHAT --tasks my_task --include-path tasks/ --log-samples --out r.json

results: simple_evaluate's dict (results[task]["acc,none"], samples[task] with --log-samples) and this tool's
metadata under "tuco"; with --alpha-sweep, FILE is the sweep's summary and each α's result is written beside it
(FILE.alpha=<α>.json), with FILE.png: each metric against α, one panel per task.""",
    "info": """example:
  tuco info""",
}


def _parser_for(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES.get(name),
                          formatter_class=_HelpFormatter)


def _add_input_args(p: argparse.ArgumentParser):
    g = p.add_argument_group("input")
    g.add_argument("--prompts", required=True, metavar="SOURCE",
                   help="prompt file: .jsonl (prompt or messages, optional id), .csv (prompt, optional id), .txt (one "
                        "prompt a line), .parquet (prompt or messages, optional id); hf:NAME[:SPLIT[:COLUMN]], a "
                        "dataset in the local Hugging Face cache (offline) or a save_to_disk folder")
    g.add_argument("--chat", action="store_true", help="insist on rendering text prompts as user turns of the "
                                                       "fine-tuned tokenizer's chat template (the default when it has one)")
    g.add_argument("--raw-text", action="store_true", help="render text prompts as raw text, not as chat user turns")
    g.add_argument("--template", choices=PAPER_TEMPLATES, help="render prompts with one of the paper's templates "
                                                               "(App. E.2) for this model family")
    g.add_argument("--system-prompt", metavar="TEXT", help="system message for chat prompts")
    g.add_argument("--truncate", choices=TRUNCATE_SIDES,
                   help="cut prompts longer than the model's positions: left keeps the end (the last token), right "
                        "the beginning (default: refuse them, naming each)")


def _add_model_args(p: argparse.ArgumentParser):
    g = p.add_argument_group("models")
    g.add_argument("--pretrained", metavar="MODEL", help="pre-trained model: a directory, a .gguf file or a hub id "
                                                         "(with --finetuned; neither: the default gemma-3-270m pair)")
    g.add_argument("--finetuned", metavar="MODEL", action="append",
                   help="fine-tuned model: a directory, .gguf file, hub id or PEFT adapter; tuco score takes it several "
                        "times to score every fine-tune against the one pre-trained model in one sweep per layer (LoRA "
                        "adapters on one copy of the base), one row per prompt and fine-tune (column finetuned)")
    g.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory or hub id (default: the fine-tuned side's)")
    g.add_argument("--dtype", help="float32, bfloat16 or float16 (default: the checkpoints' own)")
    g.add_argument("--device", help="cpu, cuda, cuda:N (default: cuda when there is a GPU, else cpu)")
    g.add_argument("--allow-pickle", action="store_true", help="permit pickle (*.bin) weights (they can run code)")
    g.add_argument("--lora", choices=("shared", "merged"), default="shared",
                   help="with a PEFT LoRA adapter as --finetuned: shared (default; one copy of the base, PEFT's "
                        "unmerged forward) or merged (the adapter merged into a second copy, PEFT's merge_and_unload)")


def _add_memory_args(p: argparse.ArgumentParser, scoring: bool):
    g = p.add_argument_group("memory")
    g.add_argument("--offload", choices=("none", "cpu", "disk"),
                   help="where block weights live: none (on the device), cpu (page-locked host memory, streamed per "
                        "layer), disk (read per layer from the safetensors files); default: none, or what "
                        "--max-gpu-memory needs")
    g.add_argument("--max-gpu-memory", type=memory_size, metavar="SIZE", help="device memory budget, e.g. 8GiB: picks --offload and "
                                                            "sizes the batches")
    g.add_argument("--no-prefetch", action="store_true", help="with --offload: copy each layer only when it runs")
    if scoring:
        g.add_argument("--schedule", choices=("prompt", "layer"),
                       help="prompt: all layers per batch; layer: all batches per layer, weights fetched once per sweep "
                            "(default: layer with --offload, else prompt)")
        g.add_argument("--sweep-tokens", type=positive_int, metavar="N", help="cap on the tokens of one layer-major "
                                                                               "sweep")
        g.add_argument("--profile", action="store_true", help="print time in weight copies vs compute, GB/s, overlap")
    return g


def _add_common(p: argparse.ArgumentParser):
    p.add_argument("-v", "--verbose", action="store_true", help="also show the libraries' warnings and progress")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tuco", description="TuCo: how much of a model's answer comes from fine-tuning "
                                              "(Nuti, Franzmeyer, Henriques, ICML 2025)",
                     epilog="`tuco COMMAND --help` shows a command's options and examples.")
    parser.add_argument("--version", action="version", version=f"tuco {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    s = _parser_for(sub, "score", "TuCo of every prompt of a file")
    _add_input_args(s)
    _add_model_args(s)
    g = s.add_argument_group("scoring")
    g.add_argument("--alpha", type=alpha_value, default=1.0, metavar="A",
                   help="FTC scale α, or comma-separated per-layer values (1: the fine-tuned model)")
    g.add_argument("--layers", action="store_true", help="also write per-layer ptc_l1, ftc_l1 and cumulative beta")
    g.add_argument("--token-map", action="store_true",
                   help="also write TuCo at every token (token_tuco) beside the token strings (tokens)")
    g.add_argument("--output-co", action="store_true", help="also write the OutputCo baseline")
    g.add_argument("--batch-tokens", type=positive_int, default=4096, metavar="N",
                   help="rows × padded length per micro-batch")
    g.add_argument("--backend", choices=ops.BACKENDS, help="force a kernel backend (see `tuco info`)")
    _add_memory_args(s, scoring=True)
    o = s.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="FILE|DIR/",
                   help="results: a .jsonl, .csv or .parquet file (+ FILE.meta.json); or a directory (DIR/): sharded, "
                        "resumable, several processes under torchrun")
    o.add_argument("--force", action="store_true", help="replace --out if it exists (default: refuse)")
    o.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_dataset_args(o)  # --shard-tokens, --also, --rank-timeout (sharded.py)
    _add_common(s)

    t = _parser_for(sub, "steer", "generate under FTC α-scaling")
    _add_input_args(t)
    _add_model_args(t)
    g = t.add_argument_group("generation")
    g.add_argument("--alpha", type=alpha_value, nargs="+", metavar="A",
                   help="FTC scale α, or comma-separated per-layer values, as for score (default: 1, the fine-tuned "
                        "model); several α values as A B C are still read, --alpha-sweep is the spelling to use")
    g.add_argument("--alpha-sweep", type=alpha_list, metavar="A,B,...",
                   help="generate at each of these α (scalars, comma-separated, as for eval)")
    g.add_argument("--max-new-tokens", type=positive_int, default=32, metavar="N",
                   help="new tokens per completion at most; EOS (and a chat's end of turn) stops earlier (default: 32)")
    g.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=positive_float, default=1.0, metavar="T",
                   help="with --sample: divide the logits by T (default: 1)")
    g.add_argument("--top-k", type=non_negative_int, default=0, metavar="K",
                   help="with --sample: draw from the K most likely tokens only (default: 0, all)")
    g.add_argument("--top-p", type=probability, default=1.0, metavar="P",
                   help="with --sample: draw from the smallest set of tokens whose probability reaches P (default: 1, "
                        "all)")
    g.add_argument("--seed", type=int, default=0, metavar="S",
                   help="with --sample: the random seed; a prompt's draws depend only on it, the prompt's tokens and "
                        "the sample's number, not on batching (default: 0)")
    g.add_argument("--samples", type=positive_int, default=1, metavar="N",
                   help="completions per prompt and α (with --sample: independent draws)")
    g.add_argument("--no-cache", action="store_true", help="recompute the whole sequence at every step")
    g.add_argument("--batch-tokens", type=positive_int, default=4096, metavar="N",
                   help="rows × padded length per micro-batch")
    g.add_argument("--backend", choices=ops.BACKENDS, help="force a kernel backend (see `tuco info`)")
    _add_memory_args(t, scoring=False)
    o = t.add_argument_group("output")
    o.add_argument("--out", metavar="FILE", help="also write {id, prompt, alpha, sample, text} rows to .jsonl, .csv "
                                                 "or .parquet (completions are printed as they finish either way)")
    o.add_argument("--force", action="store_true", help="replace --out if it exists (default: refuse)")
    _add_common(t)

    e = _parser_for(sub, "eval", "lm-evaluation-harness tasks on the α-steered model")
    _add_model_args(e)
    g = e.add_argument_group("evaluation (lm-eval's evaluator underneath)")
    g.add_argument("--tasks", required=True, metavar="T[,T...]", help="lm-eval task or group names (globs allowed)")
    g.add_argument("--include-path", action="append", metavar="DIR",
                   help="a folder of your own task YAMLs (repeatable)")
    g.add_argument("--alpha", type=alpha_value, metavar="A",
                   help="FTC scale α, or comma-separated per-layer values (default: 1, the fine-tuned model)")
    g.add_argument("--alpha-sweep", type=alpha_list, metavar="A,B,...",
                   help="evaluate at each of these α (scalars): one result per α and a plot of each metric against α")
    g.add_argument("--limit", type=sample_limit, metavar="N",
                   help="documents per task: a number, or a fraction in (0, 1) (default: all)")
    g.add_argument("--num-fewshot", type=non_negative_int, metavar="K", help="few-shot examples (default: the task's)")
    g.add_argument("--log-samples", action="store_true", help="keep every document's requests and answers "
                                                                "(samples[task])")
    g.add_argument("--apply-chat-template", action="store_true",
                   help="lm-eval renders each prompt with the fine-tuned tokenizer's chat template (default: raw "
                        "text, lm-eval's own BOS handling)")
    g.add_argument("--fewshot-single-turn", action="store_true",
                   help="with --apply-chat-template: few-shot examples inside the one user turn (default: as turns)")
    g.add_argument("--system-instruction", metavar="TEXT", help="lm-eval's system instruction")
    g.add_argument("--bootstrap-iters", type=non_negative_int, default=100000, metavar="N",
                   help="lm-eval's bootstrap resamples for the standard errors of non-mean metrics (0: none)")
    g.add_argument("--batch-tokens", type=positive_int, default=4096, metavar="N",
                   help="rows × padded length per micro-batch")
    g.add_argument("--backend", choices=ops.BACKENDS, help="force a kernel backend (see `tuco info`)")
    g.add_argument("--engine", action="store_true",
                   help="answer log-likelihood requests through the decomposition engine, the head read only at the "
                        "continuation positions (always with --offload; for a resident pair faster with a large "
                        "vocabulary, equal to the default HF forward to fp32 rounding)")
    _add_memory_args(e, scoring=False).add_argument(
        "--sweep-tokens", type=positive_int, metavar="N", help="with --offload: cap on the tokens of one layer-major sweep")
    o = e.add_argument_group("output")
    o.add_argument("--out", required=True, metavar="FILE.json", help="the results (written atomically)")
    o.add_argument("--force", action="store_true", help="replace --out (and a sweep's files) if they exist")
    _add_common(e)

    i = _parser_for(sub, "info", "versions, device, compiled ops and kernel backends (and why one cannot run)")
    _add_common(i)
    r = add_report_parser(sub)
    _add_common(r)
    return parser


def join_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--max-gpu-memory -1GiB`` as ``--max-gpu-memory=-1GiB`` (and so for every option of the command that takes
    one value), so that a value starting with "-" reaches the option's own check, which names what is wrong with
    it, instead of argparse's "expected one argument". A following token that is itself an option is left alone."""
    argv = list(argv)
    if not argv:
        return argv
    commands = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
    sub = commands.get(argv[0])
    if sub is None:
        return argv
    options = {o for a in sub._actions for o in a.option_strings}
    takes_one = {o for a in sub._actions if a.option_strings and a.nargs is None for o in a.option_strings}
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            out += argv[i:]
            break
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if token in takes_one and nxt is not None and nxt.startswith("-") and len(nxt) > 1 \
                and nxt.split("=", 1)[0] not in options:
            out.append(f"{token}={nxt}")
            i += 2
            continue
        out.append(token)
        i += 1
    return out
