"""A larger base for bench/lora.py's memory row: TinyLlama-1.1B's shape (Llama, d = 2048, 22 layers, MLP 5632, 32
query / 4 key-value heads, untied head) with random weights, SmolLM2's real tokenizer (49k tokens; from
bench/lora_smollm2_pair.py's folder), saved as an ordinary HF safetensors folder, and a PEFT LoRA of it (r = 8,
lora_alpha = 16 on every attention and MLP projection, B drawn from N(0, 0.02), seed 0). No trained 1B-class base is
offline here (/work/shared/docs/data.md); memory and speed do not depend on the weights' values, so this measures
what a shared pair saves at that size, and nothing about TuCo's values.

    python bench/lora_smollm2_pair.py /tmp/smol                  # the tokenizer's source
    python bench/lora_large_pair.py /tmp/smol/base OUT_DIR       # writes OUT_DIR/base and OUT_DIR/adapter
    python bench/lora.py --base OUT_DIR/base --adapter OUT_DIR/adapter --rounds 2
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(tokenizer_dir: Path, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from lora_smollm2_pair import save_random_lora

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                         num_key_value_heads=4, vocab_size=len(tokenizer), max_position_embeddings=2048,
                         tie_word_embeddings=False, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(config).float().eval()
    model.save_pretrained(out / "base")
    tokenizer.save_pretrained(out / "base")
    save_random_lora(model, out / "adapter")   # the same adapter recipe as the SmolLM2 pair's
    print(f"{out / 'base'}: {sum(p.numel() for p in model.parameters()):,} parameters; {out / 'adapter'}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
