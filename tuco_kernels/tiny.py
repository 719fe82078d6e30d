"""Tiny real components for tests and the bundled demo: a BPE tokenizer trained on text, and
config-built models of every supported family (random init, a few hundred thousand parameters).

Nothing is downloaded: the tokenizer is trained here with the ``tokenizers`` library and wrapped in
a ``PreTrainedTokenizerFast`` with a ChatML-style chat template; the models come from HF configs.
"""

from __future__ import annotations

import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<bos>", "<eos>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(texts: list[str], vocab_size: int = 384):
    """A byte-level BPE tokenizer trained on ``texts``, with BOS prepended and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B",
                                                       special_tokens=[("<bos>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(model_type: str, vocab_size: int, *, hidden: int = 64, layers: int = 3, sliding_window: int = 6,
                bos_token_id: int = 1, eos_token_id: int = 2, pad_token_id: int = 0):
    """A small config of ``model_type`` that exercises the family's features (GQA, sliding windows, soft-capping)."""
    from transformers import AutoConfig

    ids = dict(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    if model_type == "gpt2":
        return AutoConfig.for_model("gpt2", vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=4,
                                    n_positions=256, **ids)
    common = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, **ids)
    extra = {
        "llama": {}, "qwen2": {}, "phi3": {},
        "mistral": dict(sliding_window=sliding_window),
        "qwen3": dict(head_dim=16),
        "gemma": dict(head_dim=16),
        "gemma2": dict(head_dim=16, sliding_window=sliding_window,
                       layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]),
        "gemma3_text": dict(head_dim=16, sliding_window=sliding_window, final_logit_softcapping=30.0,
                            layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)]),
    }[model_type]
    if model_type == "phi3":
        common["pad_token_id"] = pad_token_id
    return AutoConfig.for_model(model_type, **common, **extra)


def build_model(config, *, seed: int = 0, dtype=torch.float32, attn_implementation: str | None = None):
    """A randomly initialised CausalLM from ``config`` (deterministic for a seed), in eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}  # default: HF's choice
    model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
    return model.eval()


@torch.no_grad()
def perturbed_copy(model, *, scale: float = 0.05, seed: int = 1, layers_only: bool = True):
    """A "fine-tuned" copy: every decoder-block weight nudged by relative Gaussian noise.

    With ``layers_only`` the embeddings, final norm and head are shared bit-for-bit (the α = 0 identity needs it).
    """
    import copy

    from .families import family_of

    ft = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    params = family_of(ft).layers(ft).parameters() if layers_only else ft.parameters()
    for p in params:
        noise = torch.randn(p.shape, generator=gen, dtype=torch.float32).to(p.dtype)
        p.add_(noise * scale * (p.float().std().clamp(min=1e-3)).to(p.dtype))
    return ft.eval()
