"""The decomposition itself: no files, no downloads.

capture.py   records x_0 and every block's exact call arguments from a model's own HF forward
engine.py    the per-layer step over micro-batches (both schedules), the fused update, accumulation
pair.py      the pair interface the engine reads (and the resident pair)
pair_set.py  several fine-tunes against one base: each side's runners per layer, one base for all
compat.py    what two models must share to be decomposed against each other
families.py  where a model keeps its decoder blocks, final norm and head, found by structure; configs refused up front
chain.py     the chain probe: proves at load, on the model's own forward, that the decomposition is exact for it
head.py      next-token logits from x_L through the model's own final norm, head and logit post-processing
metrics.py   TuCo, β, OutputCo from accumulated vectors (docs/math.md)
budget.py    device-memory budgets: sizes, footprints, micro-batch and sweep plans, the peak check
reuse.py     a shared LoRA pair's projections that both blocks compute alike, computed once
"""
