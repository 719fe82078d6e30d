"""What ``tuco score`` and ``tuco steer`` do before their work: every check that costs nothing (options, the
prompt file, α against the config's layer count) before any model loads, then the pair, with the rendering said."""

from __future__ import annotations

import shlex
import sys
import warnings

from .. import ops
from ..errors import OptionError
from ..core.families import n_layers_of_config
from ..dataset import dist_env
from ..models import hub
from ..models.load import load_pair
from ..models.sources import is_adapter_dir, parse_device, parse_dtype, read_adapter_config, read_config
from ..prompts.sources import read_prompts
from ..prompts.templates import TemplateMismatchWarning, paper_template, use_paper_template
from ..prompts.tokenize import rendering


def default_device(requested):
    import torch

    return requested or ("cuda" if torch.cuda.is_available() else "cpu")


def n_layers_of(args) -> int | None:
    """The fine-tuned side's layer count from its config (no weights read); None when it cannot be told yet."""
    if args.pretrained is None:
        return None   # the default pair: known once fetched, checked by the scoring itself
    finetuned = args.finetuned if isinstance(args.finetuned, list) else [args.finetuned]
    counts = {}
    for source in finetuned:   # every side's config read (and named when broken) before any weights load
        adapter = is_adapter_dir(source)
        if adapter:
            read_adapter_config(source)
        counts[source] = n_layers_of_config(read_config(args.pretrained if adapter else source))
    return counts[finetuned[0]]


def one_process(what: str, instead: str) -> bool:
    """True outside torchrun. Under torchrun (WORLD_SIZE > 1), where ``what`` would make every rank do all the work
    and write the same file: rank 0 refuses in one line (with what to do ``instead``), the others return False to
    stop without repeating it."""
    env = dist_env()
    if not env.distributed:
        return True
    if env.rank == 0:
        raise OptionError(f"{what} runs in one process, but this is rank 0 of {env.world_size} under torchrun "
                          f"(WORLD_SIZE={env.world_size}), where every rank would do all the work and write the same "
                          f"file; {instead}")
    return False


def one_or_several_finetuned(args) -> None:
    """``args.finetuned`` as load_pair takes it: one --finetuned a string, several a list (tuco score only)."""
    given = args.finetuned
    if not isinstance(given, list):
        return
    if len(given) == 1:
        args.finetuned = given[0]
    elif args.command != "score":
        raise OptionError(f"tuco {args.command} takes one --finetuned, got {len(given)} ({', '.join(given)}); "
                          f"tuco score scores several against one --pretrained, or run tuco {args.command} once per "
                          f"fine-tune")


def check_model_args(args, alphas) -> None:
    """The model options (both sides or neither, hub ids resolved, dtype, device, kernel backend) and α against the
    config's layer count, before any model loads."""
    one_or_several_finetuned(args)
    if (args.pretrained is None) != (args.finetuned is None):
        raise OptionError("give both --pretrained and --finetuned, or neither (the default gemma-3-270m pair)")
    # hub ids resolved to their local snapshots once, here, so that a missing model is named before anything loads
    args.pretrained = hub.local_source(args.pretrained)
    args.finetuned = ([hub.local_source(f) for f in args.finetuned] if isinstance(args.finetuned, list)
                      else hub.local_source(args.finetuned))
    args.tokenizer = hub.local_source(args.tokenizer)
    parse_dtype(args.dtype)
    parse_device(default_device(args.device))
    if args.backend is not None:
        ops.resolve_backend(args.backend, default_device(args.device))
    n_layers = n_layers_of(args)
    for alpha in alphas:
        if isinstance(alpha, list) and n_layers is not None and len(alpha) != n_layers:
            raise OptionError(f"--alpha has {len(alpha)} values but the model has {n_layers} layers")
    if any(a < 0 for alpha in alphas for a in (alpha if isinstance(alpha, list) else [alpha])):
        print("tuco: note: α < 0 subtracts the fine-tuning component (x + PTC − |α|·FTC at each layer), beyond the "
              "paper's α ≥ 0 (docs/math.md §3)", file=sys.stderr)


def check_before_loading(args, alphas) -> list:
    """Every check that costs nothing, before any model loads; returns the prompts."""
    check_model_args(args, alphas)
    if args.template:
        paper_template(args.template)  # an unknown name fails before any weights load
    rendering_choice(args)
    return read_prompts(args.prompts)  # every line, before any weights load


def rendering_choice(args) -> bool | None:
    """--chat: True, --raw-text: False, neither: None (the chat template when the tokenizer has one)."""
    if args.chat and args.raw_text:
        raise OptionError("--chat and --raw-text contradict each other; give one")
    if args.template and args.raw_text:
        raise OptionError(f"--template {args.template} and --raw-text contradict each other: a template renders "
                          f"prompts as chats; give one")
    return True if args.chat or args.template else (False if args.raw_text else None)


def load_models(args):
    """The pair the model and memory options name (the default pair without any)."""
    if args.pretrained is None:
        print("tuco: no model given; using the default pair (gemma-3-270m + chat LoRA; first run fetches it)",
              file=sys.stderr)
    return load_pair(args.pretrained, args.finetuned, tokenizer=args.tokenizer, dtype=args.dtype,
                     device=default_device(args.device), allow_pickle=args.allow_pickle, offload=args.offload,
                     max_gpu_memory=args.max_gpu_memory, prefetch=not args.no_prefetch,
                     lora=getattr(args, "lora", "shared"))


def load(args):
    """The pair the options name (the default pair without any), its paper template applied; says how prompts
    will be rendered and sets ``args.chat`` to that choice."""
    pair = load_models(args)
    if args.template:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", TemplateMismatchWarning)
            use_paper_template(pair, args.template)
        for w in caught:
            print(f"tuco: warning: {w.message}", file=sys.stderr)
    args.chat = rendering_choice(args)
    if dist_env().rank == 0:   # under torchrun every rank renders alike: one says how
        print(f"tuco: rendering: {rendering(pair.tokenizer, args.chat, args.system_prompt)}", file=sys.stderr)
    return pair


def options_of(args) -> dict:
    """The options of the run as the user gave them (for the results' metadata; what the run made of them, the
    models' snapshots, the device, the offload, the rendering, is recorded beside them by run_metadata)."""
    skip = {"command", "pretrained", "finetuned", "no_progress", "given", "argv"}
    given = getattr(args, "given", None) or vars(args)
    return {k: v for k, v in given.items() if k not in skip}


def command_line(args=None) -> str:
    """The command as typed: ``tuco`` and the arguments :func:`tuco_kernels.cli.main` parsed."""
    argv = getattr(args, "argv", None)
    return shlex.join(["tuco", *(sys.argv[1:] if argv is None else argv)])


def estimated_bytes(n_rows: int, per_row: int) -> int:
    """What an output of ``n_rows`` rows will take, for the free-space check before any work."""
    return n_rows * per_row + 4096
