"""The α-steered pair as an lm-evaluation-harness language model (``tk.LMEvalModel``).

It is lm-eval's own ``hf`` backend (:class:`lm_eval.models.huggingface.HFLM`) on the pair's fine-tuned model and
tokenizer, with the model's computation replaced by the α-model's (docs/math.md §3): lm-eval keeps its request
handling (its tokenization and BOS rule, left truncation, the one-token-continuation cache, rolling windows, stop
sequences, chat templates only when the evaluation asks for them), so an evaluation differs from the ``hf``
backend's only where α makes it differ.

* Resident pairs: every model call is the fine-tuned model's own HF forward (``generate`` for generation) with its
  blocks wrapped by :func:`~tuco_kernels.attach.attach`, which runs the pre-trained block on the same input and
  returns out_pt + α·(out_ft − out_pt); with α = 1 everywhere the fine-tuned model runs alone, so the
  log-likelihoods and generations are the ``hf`` backend's, bit for bit, for the same batches.
* Streamed pairs (``offload="cpu"|"disk"``): all requests of a ``loglikelihood`` call are scheduled layer-major
  through the engine (:mod:`.loglik`), each layer's weights crossing to the device once per sweep, with
  log-probabilities at every continuation position; generation recomputes the steered sequence at each step
  (:mod:`.decode`). Same model, same α-stream; the numbers equal the resident ones up to the rounding of a
  different batch layout (the engine's batches carry an attention mask, the ``hf`` backend's do not).
  ``engine=True`` answers a resident pair's log-likelihood requests this way too: the head then runs only at the
  continuation positions instead of every position (the ``hf`` backend's [batch, length, vocabulary] logits are
  4 GiB for 4096 tokens of a 262k-token vocabulary in fp32), and identical inputs run once.

Micro-batches hold at most ``batch_tokens`` tokens (rows × padded length) instead of lm-eval's row counts. The
class is never registered in lm-eval's model registry (registration reaches only the importing process, and a
name registered before ``lm_eval.models`` loads would hide lm-eval's own models): pass an instance to
``lm_eval.simple_evaluate(model=...)``.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager, nullcontext

import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils_hf import stop_sequences_criteria

from ..attach import attach
from ..core.engine import layer_alphas
from ..core.pair import ModelPair
from ..errors import OptionError, TucoError, positive_int
from .decode import generate_recomputed
from .loglik import continuation_logprobs

DEFAULT_BATCH_TOKENS = 4096
#: generation arguments a streamed pair's decoding loop understands (the rest of HF's are refused, naming them)
STREAMED_GENERATION_ARGS = {"attention_mask", "do_sample", "temperature", "top_k", "top_p"}


class LMEvalModel(HFLM):
    """An lm-eval LM for ``lm_eval.simple_evaluate(model=...)``: the pair's fine-tuned model under FTC α-scaling.

    Args:
        pair: a :class:`~tuco_kernels.core.pair.ModelPair` from :func:`~tuco_kernels.load_pair` (resident or
            streamed), with a tokenizer.
        alpha: a scalar or one value per layer; 1.0 is the fine-tuned model (see :meth:`set_alpha`).
        batch_tokens: rows × padded length per micro-batch.
        max_length: the context lm-eval truncates to (default: the model's, as the ``hf`` backend finds it).
        max_gpu_memory, sweep_tokens: a streamed pair's device budget and sweep cap (as in :func:`~tuco_kernels.score`).
        backend: the fused update's kernel backend (``tuco info``).
        engine: answer log-likelihood requests through the engine (:mod:`.loglik`); always so for a streamed pair,
            by default not for a resident one (its HF forward: the ``hf`` backend bit for bit at α = 1).
        seed: seeds a streamed pair's sampled generation (greedy decoding, lm-eval's default, needs none).
        add_bos_token, prefix_token_id, softmax_dtype, truncation: lm-eval's ``hf`` options of the same names.
    """

    def __init__(self, pair: ModelPair, alpha=1.0, *, batch_tokens: int = DEFAULT_BATCH_TOKENS,
                 max_length: int | None = None, max_gpu_memory=None, sweep_tokens: int | None = None,
                 backend: str | None = None, engine: bool = False, seed: int | None = 0,
                 add_bos_token: bool | None = None,
                 prefix_token_id: int | None = None, softmax_dtype=None, truncation: bool = False):
        if not isinstance(pair, ModelPair):
            raise TucoError(f"LMEvalModel needs a pair from tk.load_pair, got {type(pair).__name__}")
        pair = pair.one_pair("LMEvalModel")
        if pair.tokenizer is None:
            raise TucoError("LMEvalModel needs the pair's tokenizer (load_pair(..., tokenizer=...)): lm-eval sends text")
        if getattr(pair, "closed", False):
            raise TucoError("this streamed pair was closed (pair.close()); load it again with tk.load_pair")
        if max_gpu_memory is not None and pair.device.type != "cuda":
            raise OptionError(f"max_gpu_memory is a budget for a CUDA device, but the pair is on {pair.device}")
        self.pair = pair
        self.batch_tokens = positive_int("batch_tokens", batch_tokens)
        self.max_gpu_memory, self.sweep_tokens, self.kernel_backend, self.seed = (max_gpu_memory, sweep_tokens,
                                                                                   backend, seed)
        self.engine = bool(engine) or not pair.resident
        self._batch_end, self._batch_rows = 0, 1
        with _quiet_hflm_init():
            # lm-eval may give its tokenizer a pad token: a copy, so that the pair's own stays as it was
            super().__init__(pretrained=pair.finetuned, tokenizer=copy.deepcopy(pair.tokenizer), backend="causal",
                             batch_size="auto", max_length=max_length, add_bos_token=add_bos_token,
                             prefix_token_id=prefix_token_id, softmax_dtype=softmax_dtype, truncation=truncation)
        self._device = pair.device
        self.set_alpha(alpha)

    # ------------------------------------------------------------------------------------------------ α

    def set_alpha(self, alpha) -> None:
        """Evaluate under another α from now on (a scalar or one value per layer); the pair stays loaded."""
        self.alphas = layer_alphas(alpha, self.pair.n_layers)
        self.alpha = alpha if not hasattr(alpha, "tolist") else alpha.tolist()

    @property
    def steered(self) -> bool:
        return any(a != 1.0 for a in self.alphas)

    def _steering(self):
        """The fine-tuned model's blocks wrapped for α (nothing to wrap when α ≡ 1: the fine-tuned model itself)."""
        if not self.steered:
            return nullcontext()
        return attach(self.pair.finetuned, self.pair.pretrained, self.alphas, backend=self.kernel_backend,
                      family=self.pair.family)

    # ------------------------------------------------------------------------------------- model calls

    def _model_call(self, inps, attn_mask=None, labels=None):
        self._check_resident("a model call")
        with self._steering():
            return super()._model_call(inps, attn_mask, labels)

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        if self.pair.resident:
            with self._steering():
                return super()._model_generate(context, max_length, stop, **generation_kwargs)
        unknown = sorted(set(generation_kwargs) - STREAMED_GENERATION_ARGS)
        if unknown:
            raise OptionError(f"generation arguments {unknown} are not supported for a streamed pair (offload="
                              f"{self.pair.offload!r}), which decodes greedily or by sampling with temperature, top_k "
                              f"and top_p; load the pair resident (offload='none') for HF generate's other options")
        kwargs = dict(generation_kwargs)
        mask = kwargs.pop("attention_mask", None)
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        do_sample = kwargs.pop("do_sample", None)
        if do_sample is None:   # as HF generate: temperature 0 is greedy, else the model's generation config says
            config = getattr(self.pair.finetuned, "generation_config", None)
            do_sample = temperature > 0 and bool(getattr(config, "do_sample", False))
        criteria = stop_sequences_criteria(self.tokenizer, stop, context.shape[1], context.shape[0])
        return generate_recomputed(self.pair, self.alphas, context, mask if mask is not None else torch.ones_like(context),
                                   max_length=max_length, stopping_criteria=criteria,
                                   pad_token_id=self.tokenizer.pad_token_id, do_sample=bool(do_sample),
                                   temperature=temperature or 1.0, top_k=int(kwargs.get("top_k") or 0),
                                   top_p=float(kwargs.get("top_p") or 1.0), seed=self.seed, backend=self.kernel_backend)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        if not self.engine:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        pairs = []
        for _, context_enc, continuation_enc in requests:
            if not context_enc or not continuation_enc:
                raise TucoError("lm-eval sent a request with an empty context or continuation")
            pairs.append(((context_enc + continuation_enc)[-(self.max_length + 1):][:-1], continuation_enc))
        from tqdm.auto import tqdm

        bar = tqdm(total=len(requests), disable=disable_tqdm or self.rank != 0,
                   desc="Running loglikelihood requests (layer-major)")
        answers = continuation_logprobs(self.pair, pairs, self.alphas, batch_tokens=self.batch_tokens,
                                        max_gpu_memory=self.max_gpu_memory, sweep_tokens=self.sweep_tokens,
                                        backend=self.kernel_backend, softmax_dtype=self.softmax_dtype,
                                        on_done=bar.update)
        bar.close()
        for (request_str, _, _), answer in zip(requests, answers):
            if request_str is not None:
                self.cache_hook.add_partial("loglikelihood", request_str, answer)
        return answers

    # --------------------------------------------------------------------------- batches by token budget

    def _batch_scheduler(self, pos, requests):
        """Rows of the batch starting at ``pos`` (lm-eval sorts requests longest first): ``batch_tokens`` over the
        padded length of its first request."""
        if pos == 0 or pos >= self._batch_end:
            _, context_enc, continuation_enc = requests[pos]
            length = len((context_enc + continuation_enc)[-(self.max_length + 1):][:-1])
            self._batch_rows = max(1, self.batch_tokens // max(length, 1))
            self._batch_end = pos + self._batch_rows
        return self._batch_rows

    def _detect_batch_size(self, requests=None, pos: int = 0):
        """Never probed by trial forwards here: the rows :meth:`_fixed_rows` set, else what ``batch_tokens`` allows
        for windows of ``max_length`` tokens."""
        return self.batch_size_per_gpu if isinstance(self.batch_size_per_gpu, int) else self._window_rows()

    def _window_rows(self) -> int:
        """Rows per batch of rolling windows (``max_length`` tokens each); through the engine every window of a
        call goes at once (it makes its own token-budget micro-batches, scheduled layer-major)."""
        return 2**31 - 1 if self.engine else max(1, self.batch_tokens // self.max_length)

    @contextmanager
    def _fixed_rows(self, rows: int):
        """lm-eval's row count for a call that it sizes once (generation, rolling windows), then back to the
        per-batch token budget (:meth:`_batch_scheduler`)."""
        self.batch_size_per_gpu = rows
        try:
            yield
        finally:
            self.batch_size_per_gpu = "auto"

    def generate_until(self, requests, disable_tqdm: bool = False):
        if not requests:
            return []
        longest = max(len(self.tok_encode(r.args[0])) for r in requests)
        new = max(int(r.args[1].get("max_gen_toks", self.max_gen_toks)) for r in requests)
        with self._fixed_rows(max(1, self.batch_tokens // (min(longest, self.max_length) + new))):
            return super().generate_until(requests, disable_tqdm=disable_tqdm)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        with self._fixed_rows(self._window_rows()):
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)

    # ------------------------------------------------------------------------------------------- facts

    def _check_resident(self, what: str) -> None:
        if not self.pair.resident:
            raise TucoError(f"{what} needs the fine-tuned model resident; this pair streams its weights "
                            f"(offload={self.pair.offload!r})")

    def get_model_info(self) -> dict:
        """What simple_evaluate records about the model (nothing looked up on a hub)."""
        sources = getattr(self.pair, "sources", None) or {}
        return {"model_num_parameters": sum(p.numel() for p in self.pair.finetuned.parameters() if not p.is_meta),
                "model_dtype": str(self.pair.dtype).removeprefix("torch."), "model_revision": None, "model_sha": "",
                "tuco_pair": {side: str(src) for side, src in sources.items()} or repr(self.pair),
                "tuco_alpha": self.alpha, "tuco_offload": self.pair.offload}


@contextmanager
def _quiet_hflm_init():
    """HFLM warns that a model instance was passed (that is how it is meant to be used here); keep that quiet."""
    log = logging.getLogger("lm_eval.models.huggingface")
    saved = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(saved)
