"""The paper's prompt templates (App. E.2), as chat templates for a user's own pair.

A single user turn (and an optional system message that replaces the default system prompt) renders as:

* ``llama2`` (Llama 2 chat and Vicuna v1.5): ``<s>[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{prompt} [/INST]``
  with the standard Llama-2 system prompt;
* ``llama3``: the ``<|start_header_id|>`` format with the same system prompt, ending with the assistant header;
* ``gemma`` (Gemma 7B it, Zephyr Gemma): ``<bos><start_of_turn>user\\n{prompt}<end_of_turn>\\n<start_of_turn>model``,
  no system prompt, exactly as the paper prints it (no newline after ``model``);
* ``mistral``: the ``[INST] <<SYS>>`` format with Mistral's safety system prompt.

The paper's copy cuts the Llama-2 template off after ``<</SYS>>``; the ``{prompt} [/INST]`` continuation is the
standard one (paper.md §4.4 marks it inferred). Use with ``use_paper_template(tokenizer, name)`` or
``tuco score --template NAME``.
"""

from __future__ import annotations

import warnings

from ..errors import TucoError

LLAMA2_SYSTEM_PROMPT = (
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe. "
    "Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. "
    "Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering "
    "something not correct. If you don't know the answer to a question, please don't share false information.")

MISTRAL_SYSTEM_PROMPT = (
    "Always assist with care, respect, and truth. Respond with utmost utility yet securely. Avoid harmful, "
    "unethical, prejudiced, or negative content. Ensure replies promote fairness and positivity.")

_SINGLE_TURN = (
    "{%- if messages[0]['role'] == 'system' -%}{%- set system = messages[0]['content'] -%}"
    "{%- set turns = messages[1:] -%}{%- else -%}{%- set system = default_system -%}{%- set turns = messages -%}"
    "{%- endif -%}"
    "{%- if turns | length != 1 or turns[0]['role'] != 'user' -%}"
    "{{- raise_exception('the paper templates take one user turn (and an optional system message)') -}}"
    "{%- endif -%}{%- set prompt = turns[0]['content'] -%}")

_BODIES = {
    "llama2": "{{- bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + prompt + ' [/INST]' -}}",
    "llama3": ("{{- bos_token + '<|start_header_id|>system<|end_header_id|>\\n\\n' + system + '<|eot_id|>'"
               " + '<|start_header_id|>user<|end_header_id|>\\n\\n' + prompt + '<|eot_id|>'"
               " + '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"),
    "gemma": "{{- bos_token + '<start_of_turn>user\\n' + prompt + '<end_of_turn>\\n<start_of_turn>model' -}}",
    "mistral": "{{- bos_token + '[INST] <<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + prompt + ' [/INST]' -}}",
}
_SYSTEM = {"llama2": LLAMA2_SYSTEM_PROMPT, "llama3": LLAMA2_SYSTEM_PROMPT, "gemma": "", "mistral": MISTRAL_SYSTEM_PROMPT}
ALIASES = {"vicuna": "llama2", "zephyr-gemma": "gemma"}
PAPER_TEMPLATES = tuple(sorted([*_BODIES, *ALIASES]))


def paper_template_of(chat_template) -> str | None:
    """The name of the paper's template that ``chat_template`` is (as :func:`use_paper_template` sets it), else None."""
    if not isinstance(chat_template, str):
        return None
    return next((name for name in sorted(_BODIES) if paper_template(name) == chat_template), None)


def paper_template(name: str) -> str:
    """The Jinja chat template for one of :data:`PAPER_TEMPLATES`."""
    key = ALIASES.get(name, name)
    if key not in _BODIES:
        raise TucoError(f"unknown paper template {name!r}; choose from {', '.join(PAPER_TEMPLATES)}")
    if key == "gemma":
        return (_SINGLE_TURN.replace("{%- set system = messages[0]['content'] -%}",
                                     "{{- raise_exception('the Gemma template has no system prompt') -}}")
                .replace("default_system", "''") + _BODIES[key])
    system = _SYSTEM[key].replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")
    return _SINGLE_TURN.replace("default_system", f"'{system}'") + _BODIES[key]


# the model families each template was written for, and special tokens the template needs as single tokens
TEMPLATE_FAMILIES = {"llama2": ("Llama 2 chat / Vicuna", {"llama"}), "llama3": ("Llama 3 Instruct", {"llama"}),
                     "gemma": ("Gemma / Zephyr-Gemma", {"gemma", "gemma2", "gemma3", "gemma3_text"}),
                     "mistral": ("Mistral Instruct", {"mistral"})}
_TEMPLATE_TOKENS = {"llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
                    "gemma": ("<start_of_turn>", "<end_of_turn>")}


class TemplateMismatchWarning(UserWarning):
    """A paper template put on a model of another family: its scores are not comparable with the paper's."""


def template_mismatch(name: str, tokenizer, model_type: str | None = None) -> str | None:
    """Why template ``name`` does not fit this model (its family, or special tokens its tokenizer lacks), or None."""
    key = ALIASES.get(name, name)
    label, families = TEMPLATE_FAMILIES[key]
    if model_type is not None and model_type not in families:
        return f"the {name!r} template is the paper's format for {label} models; this pair is {model_type!r}"
    vocab = tokenizer.get_vocab() if tokenizer is not None else {}
    missing = [t for t in _TEMPLATE_TOKENS.get(key, ()) if t not in vocab]
    if missing:
        return (f"the {name!r} template is the paper's format for {label} models; this tokenizer has no "
                f"{missing[0]!r} token")
    return None


def use_paper_template(target, name: str):
    """Set the tokenizer's ``chat_template`` to the paper's template ``name``; return the tokenizer.

    ``target`` is a pair (``tk.load_pair(...)``) or a tokenizer. A template of another model family than the pair's
    (or needing special tokens the tokenizer lacks) is still set, with a :class:`TemplateMismatchWarning`. The
    template text carries the BOS token itself, so prompts rendered through it are tokenized without adding special
    tokens again (as every chat template in this package is).
    """
    tokenizer, model_type = getattr(target, "tokenizer", target), None
    if hasattr(target, "family"):
        model_type = target.family.model_type
    if tokenizer is None:
        raise TucoError(f"--template {name}: the pair has no tokenizer to put the template on")
    template = paper_template(name)
    why = template_mismatch(name, tokenizer, model_type)
    if why is not None:
        warnings.warn(f"{why}; scores will not be comparable with the paper's", TemplateMismatchWarning, stacklevel=2)
    tokenizer.chat_template = template
    return tokenizer
