"""Whether two models can be decomposed against each other: the config fields, built modules and tokenizers
that must agree. Errors name the first field that differs (:class:`~tuco_kernels.errors.IncompatiblePairError`)."""

from __future__ import annotations

import logging

from ..errors import IncompatiblePairError
from .chain import prove_chain
from .families import Family, check_config, find_family

log = logging.getLogger("tuco_kernels")


def _config_field(config, field):
    if field == "per_layer_config":   # per-layer overrides (heterogeneous models), compared as stored
        return config.to_dict().get(field)
    try:
        return getattr(config, field, None)
    except Exception:   # a per-layer attribute that transformers refuses to read globally: compare it as stored
        return config.to_dict().get(field)


def check_configs(pc, fc) -> None:
    """Raise :class:`IncompatiblePairError` naming the first config field on which the two models disagree, or
    :class:`~tuco_kernels.errors.UnsupportedModelError` for a config that cannot be a decoder-only causal LM."""
    if pc.model_type != fc.model_type:
        raise IncompatiblePairError("model_type", pc.model_type, fc.model_type)
    check_config(fc)
    for field in ("num_hidden_layers", "hidden_size", "vocab_size", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "layer_types", "sliding_window", "per_layer_config"):
        a, b = _config_field(pc, field), _config_field(fc, field)
        if a != b:
            raise IncompatiblePairError(field, a, b)


def check_compatible(pt, ft, pt_tokenizer=None, ft_tokenizer=None) -> Family:
    """Check configs, built modules and tokenizers; raise :class:`IncompatiblePairError` naming the field. Returns
    the family as found by structure (not yet proven: :func:`prove_pair`, or the streamed pair's probe)."""
    pc, fc = pt.config, ft.config
    check_configs(pc, fc)
    family = find_family(ft)
    if find_family(pt).layers_path != family.layers_path:
        raise IncompatiblePairError("decoder stack", find_family(pt).layers_path, family.layers_path)
    n_pt, n_ft = len(family.layers(pt)), len(family.layers(ft))
    if n_pt != n_ft:
        raise IncompatiblePairError("number of decoder layers", n_pt, n_ft)
    if pt.get_input_embeddings().weight.shape != ft.get_input_embeddings().weight.shape:
        raise IncompatiblePairError("vocabulary size (embedding rows)", pt.get_input_embeddings().weight.shape[0],
                                    ft.get_input_embeddings().weight.shape[0])
    if pt_tokenizer is not None and ft_tokenizer is not None:
        pv, fv = pt_tokenizer.get_vocab(), ft_tokenizer.get_vocab()
        for token, idx in pv.items():
            if fv.get(token) != idx:
                raise IncompatiblePairError("tokenizer vocabulary", f"{token!r} -> {idx}", f"{token!r} -> {fv.get(token)}",
                                            "the fine-tuned tokenizer must keep every pre-trained token id")
    rope_a, rope_b = _config_field(pc, "rope_parameters"), _config_field(fc, "rope_parameters")
    if rope_a != rope_b:
        log.warning("rope parameters differ (%s vs %s); pre-trained blocks will see the fine-tuned model's "
                    "rotary embeddings, as the decomposition requires", rope_a, rope_b)
    return family


def prove_pair(pt, ft, family: Family | None = None, *, pt_pads_invariant: bool | None = None) -> Family:
    """The chain probe (chain.py) on both resident models; the fine-tuned model's proven family.
    ``pt_pads_invariant``: the pre-trained model's own probe result when it was already proven (a pair set's base,
    the same model object for every fine-tune), so that only the fine-tuned model is probed."""
    family = family or find_family(ft)
    proven = prove_chain(ft, family).family
    pt_invariant = prove_chain(pt, family).family.pads_invariant if pt_pads_invariant is None else pt_pads_invariant
    return proven.with_probe(pads_invariant=proven.pads_invariant and pt_invariant)
