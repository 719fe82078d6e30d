"""Whether two models can be decomposed against each other: the config fields, built modules and tokenizers
that must agree. Errors name the first field that differs (:class:`~tuco_kernels.errors.IncompatiblePairError`)."""

from __future__ import annotations

import logging

from ..errors import IncompatiblePairError
from .families import Family, family_of

log = logging.getLogger("tuco_kernels")


def _config_field(config, field):
    return getattr(config, field, None)


def check_configs(pc, fc) -> Family:
    """Raise :class:`IncompatiblePairError` naming the first config field on which the two models disagree."""
    if pc.model_type != fc.model_type:
        raise IncompatiblePairError("model_type", pc.model_type, fc.model_type)
    family = family_of(fc)
    for field in ("num_hidden_layers", "hidden_size", "vocab_size", "num_attention_heads",
                  "num_key_value_heads", "head_dim", "layer_types", "sliding_window"):
        a, b = _config_field(pc, field), _config_field(fc, field)
        if a != b:
            raise IncompatiblePairError(field, a, b)
    return family


def check_compatible(pt, ft, pt_tokenizer=None, ft_tokenizer=None) -> Family:
    """Check configs, built modules and tokenizers; raise :class:`IncompatiblePairError` naming the field."""
    pc, fc = pt.config, ft.config
    family = check_configs(pc, fc)
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
