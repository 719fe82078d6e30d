"""Prompts to token ids: chats rendered with the fine-tuned tokenizer's chat template and
``add_generation_prompt=True``, so the last token is the template's (the paper's setting); raw text gets the
tokenizer's special tokens (e.g. BOS). Every error names the prompt.

How text prompts are rendered is one rule everywhere (``tk.score``, ``tk.next_token_logprobs``, ``tk.generate``, the CLI):
``chat=None`` (the default) renders them as the user turn of the fine-tuned tokenizer's chat template when it has
one, and as raw text when it has none; ``chat=True`` insists on the template, ``chat=False`` on raw text.
:func:`rendering` says which, in words; the CLI prints it at the start of every run.
"""

from __future__ import annotations

import re

from ..errors import OptionError, PromptError
from .records import Prompt, normalize_prompts
from .templates import paper_template_of


def render_chat(tokenizer, messages: list, system_prompt: str | None, where: str) -> str:
    if getattr(tokenizer, "chat_template", None) is None:
        raise PromptError(f"{where}: chat formatting requested but the fine-tuned tokenizer has no chat template")
    if system_prompt and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}] + list(messages)
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except Exception as exc:  # jinja raise_exception(...) and friends, e.g. "System role not supported"
        raise PromptError(f"{where}: the chat template rejected this conversation: {exc}") from exc


def use_chat(tokenizer, chat: bool | None) -> bool:
    """Whether text prompts become chat user turns: ``chat`` when given, else whether the tokenizer has a template."""
    if chat is None:
        return tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
    return bool(chat)


_HUB_SNAPSHOT = re.compile(r"models--(?P<org>[^/]+?)--(?P<name>[^/]+)/snapshots/(?P<commit>[0-9a-f]{12})[0-9a-f]*/?$")


def tokenizer_name(tokenizer) -> str:
    """A tokenizer as a reader knows it: its ``display_name`` (the default pair's), the hub id and commit of a
    Hugging Face cache snapshot, else the folder it was loaded from."""
    if getattr(tokenizer, "display_name", None):
        return tokenizer.display_name
    path = getattr(tokenizer, "name_or_path", None) or ""
    hub = _HUB_SNAPSHOT.search(path)
    if hub:
        return f"{hub['org']}/{hub['name']}@{hub['commit']}"
    return path or "the fine-tuned tokenizer"


def rendering(tokenizer, chat: bool | None, system_prompt: str | None = None) -> str:
    """How text prompts are rendered, in words (printed by the CLI, kept in ``RunInfo.rendering``)."""
    name = tokenizer_name(tokenizer)
    if use_chat(tokenizer, chat):
        system = f", system prompt {system_prompt!r}" if system_prompt else ""
        paper = paper_template_of(getattr(tokenizer, "chat_template", None))
        if paper is not None:   # tk.use_paper_template / --template: the paper's text, not the tokenizer's own
            return f"the paper's {paper} template (tuco_kernels.prompts.templates) on {name}'s tokens, user turn{system}"
        return f"chat template of {name}, user turn{system}"
    why = " (the tokenizer has no chat template)" if chat is None else ""
    return f"raw text with the tokenizer's special tokens{why}"


def tokenize(prompts: list[Prompt], tokenizer, *, chat: bool | None = None, system_prompt: str | None = None,
             vocab_size: int | None = None) -> list[list[int]]:
    """Token ids per prompt. Raw text gets the tokenizer's special tokens (e.g. BOS); chats the template's."""
    chat = use_chat(tokenizer, chat)
    if system_prompt and not chat and any(p.text is not None for p in prompts):
        raise OptionError("a system prompt (system_prompt=, --system-prompt) needs chat rendering, but text prompts "
                          "are rendered as raw text here (chat=False / --raw-text, or the tokenizer has no chat "
                          "template); drop it or render them as chats")
    out = []
    for p in prompts:
        if p.input_ids is not None:
            ids = p.input_ids
        else:
            if tokenizer is None:
                raise PromptError(f"{p.where}: text prompt but the pair has no tokenizer; give one (tokenizer=, --tokenizer) or input_ids")
            if p.messages is not None or chat:
                messages = p.messages or [{"role": "user", "content": p.text}]
                text = render_chat(tokenizer, messages, system_prompt, p.where)
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            else:
                ids = tokenizer(p.text, add_special_tokens=True)["input_ids"]
        if not ids:
            raise PromptError(f"{p.where}: prompt tokenizes to zero tokens")
        if vocab_size is not None and (min(ids) < 0 or max(ids) >= vocab_size):
            bad = next(t for t in ids if t < 0 or t >= vocab_size)
            raise PromptError(f"{p.where}: token id {bad} is outside the model's vocabulary [0, {vocab_size})")
        out.append(list(ids))
    return out


def pad_id_of(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
    return 0 if pad is None else pad  # padded positions are masked; the id only has to be valid


TRUNCATE_SIDES = ("left", "right")


def max_positions(config) -> int | None:
    """The longest sequence the model's position encoding covers (None: no fixed limit found in the config)."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fit_context(records: list[Prompt], token_lists: list[list[int]], limit: int | None,
                truncate: str | None) -> list[list[int]]:
    """Refuse (naming the prompt and its length) or, with ``truncate``, cut prompts longer than ``limit`` tokens.

    ``truncate="left"`` keeps the end of the prompt (its last token, the one TuCo is read at); ``"right"`` keeps
    the beginning. A truncated prompt's record gets ``extra["truncated_from"]`` (its full length).
    """
    if truncate is not None and truncate not in TRUNCATE_SIDES:
        raise OptionError(f"truncate must be 'left' or 'right', got {truncate!r}")
    if limit is None:
        return token_lists
    out = []
    for rec, ids in zip(records, token_lists):
        if len(ids) > limit:
            if truncate is None:
                raise PromptError(f"{rec.where} (id {rec.id!r}): {len(ids)} tokens, but the model has {limit} positions; "
                                  f"shorten it, or pass --truncate left|right (truncate='left'|'right') to cut it")
            rec.extra["truncated_from"] = len(ids)
            ids = ids[-limit:] if truncate == "left" else ids[:limit]
        out.append(ids)
    return out


def prepare(pair, prompts, *, chat: bool | None = None, system_prompt=None,
            truncate: str | None = None) -> tuple[list[Prompt], list[list[int]]]:
    """Normalised prompts and their token ids for ``pair``: its tokenizer, ids checked against its vocabulary,
    lengths against its positions (:func:`fit_context`)."""
    records = normalize_prompts(prompts)
    ids = tokenize(records, pair.tokenizer, chat=chat, system_prompt=system_prompt, vocab_size=pair.vocab_size)
    return records, fit_context(records, ids, max_positions(pair.finetuned.config), truncate)
