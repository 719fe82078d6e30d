"""Everything the streamed path needs: weights brought to the device one layer at a time.

checkpoint.py  tensor sources: safetensors headers and ``preadv`` reads, in-memory modules
lora.py        a PEFT LoRA adapter merged per layer as PEFT merges it
skeleton.py    meta frames built from configs; the outer parameters read on their own
streamer.py    the layer streamer: page-locked arenas, double-buffered device slots, copy stream, reader thread
streamed_pair.py  the streamed pair (the engine's pair interface over a streamer)
"""
