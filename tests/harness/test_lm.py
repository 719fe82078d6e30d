"""tk.LMEvalModel against lm-eval's own ``hf`` backend (the oracle nobody here wrote), on tiny pairs and local tasks:
α = 1 is the fine-tuned model's ``hf`` evaluation bit for bit, α = 0 the pre-trained model's (shared embedding and
head), α in between is HF's forward with hooked block outputs, and a streamed pair gives the resident numbers."""

import subprocess
import sys

import pytest
import torch

pytest.importorskip("lm_eval")

import lm_eval  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import tuco_kernels as tk  # noqa: E402
from tuco_kernels.errors import OptionError, TucoError  # noqa: E402

from tests.fixtures.eval_tasks import write_tasks  # noqa: E402
from tests.fixtures.naive_reference import blocks_of  # noqa: E402
from tests.fixtures.pairs import make_pair_models, save_pair  # noqa: E402

TASKS = ["tiny_mc", "tiny_gen", "tiny_ppl"]


@pytest.fixture(scope="module")
def task_manager(tmp_path_factory):
    return TaskManager(include_path=str(write_tasks(tmp_path_factory.mktemp("tasks"))), include_defaults=False)


def responses(model, task_manager, tasks=TASKS) -> dict:
    """Every request's raw answer per task: (log p, greedy) pairs, generated strings, rolling log-likelihoods."""
    out = lm_eval.simple_evaluate(model=model, tasks=list(tasks), task_manager=task_manager, log_samples=True,
                                  bootstrap_iters=0)
    return {t: [s["resps"] for s in out["samples"][t]] for t in tasks}


def hf_backend(model, tokenizer):
    return HFLM(pretrained=model, tokenizer=tokenizer, batch_size=64)


def flat_logliks(resps: list) -> torch.Tensor:
    """Every request's log-likelihood (per document, per request, lm-eval's one response: (log p, greedy) or a sum)."""
    return torch.tensor([r[0][0] if isinstance(r[0], (tuple, list)) else r[0] for doc in resps for r in doc],
                        dtype=torch.float64)


def greedy_flags(resps: list) -> list:
    return [[r[0][1] for r in doc] for doc in resps]


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_alpha_one_is_the_hf_backend_on_the_finetuned_model(family, tokenizer, task_manager):
    pt, ft = make_pair_models(family, tokenizer)
    pair = tk.load_pair(pt, ft, tokenizer=tokenizer)
    got = responses(tk.LMEvalModel(pair, alpha=1.0), task_manager)
    expected = responses(hf_backend(ft, tokenizer), task_manager)
    assert got == expected    # log-likelihoods, greedy flags, generations and rolling sums, bit for bit
    assert any(text for req in got["tiny_gen"] for text in req)   # the generations are not all empty


def test_alpha_zero_is_the_hf_backend_on_the_pretrained_model(tokenizer, task_manager):
    pt, ft = make_pair_models("llama", tokenizer)   # blocks fine-tuned, embedding and head shared bit for bit
    pair = tk.load_pair(pt, ft, tokenizer=tokenizer)
    got = responses(tk.LMEvalModel(pair, alpha=0.0), task_manager)
    assert got == responses(hf_backend(pt, tokenizer), task_manager)
    assert got != responses(hf_backend(ft, tokenizer), task_manager)


class _HookedAlpha:
    """Oracle: the fine-tuned model's own forward with every block's output replaced, by forward hooks, by
    out_pt + α(out_ft − out_pt), out_pt from the pre-trained block on the same input and arguments (the KV cache
    that lm-eval's uncached call still builds belongs to the fine-tuned blocks: the pre-trained one gets none)."""

    def __init__(self, pt, ft, alpha):
        self.pt, self.ft, self.alpha = pt, ft, alpha

    def __enter__(self):
        def hook(pt_block):
            def fn(module, args, kwargs, out_ft):
                kwargs = {k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values", "past_key_value")}
                out_pt = pt_block(*args, **kwargs)
                return out_pt + self.alpha * (out_ft - out_pt)
            return fn
        self.handles = [fb.register_forward_hook(hook(pb), with_kwargs=True)
                        for fb, pb in zip(blocks_of(self.ft), blocks_of(self.pt))]
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("alpha", [0.5, [1.25, 0.75, 1.0]])
def test_alpha_scales_the_finetuning_component(llama_pair, tokenizer, task_manager, alpha):
    tasks = ["tiny_mc", "tiny_ppl"]
    got = responses(tk.LMEvalModel(llama_pair, alpha=alpha), task_manager, tasks)
    scalar = alpha if isinstance(alpha, float) else None
    if scalar is not None:
        with _HookedAlpha(llama_pair.pretrained, llama_pair.finetuned, scalar):
            oracle = responses(hf_backend(llama_pair.finetuned, tokenizer), task_manager, tasks)
        for t in tasks:
            torch.testing.assert_close(flat_logliks(got[t]), flat_logliks(oracle[t]), atol=1e-5, rtol=1e-6)
    at_one = responses(tk.LMEvalModel(llama_pair, alpha=1.0), task_manager, tasks)
    assert (flat_logliks(got["tiny_mc"]) - flat_logliks(at_one["tiny_mc"])).abs().max() > 1e-3   # α is live


def test_per_layer_alpha_and_set_alpha(llama_pair, task_manager):
    model = tk.LMEvalModel(llama_pair, alpha=[1.0] * llama_pair.n_layers)
    ones = responses(model, task_manager, ["tiny_mc"])
    model.set_alpha(1.0)
    assert responses(model, task_manager, ["tiny_mc"]) == ones
    model.set_alpha(0.0)
    assert responses(model, task_manager, ["tiny_mc"]) != ones
    with pytest.raises(OptionError, match="alpha has 2 values but the model has 3 layers"):
        model.set_alpha([1.0, 1.0])
    with pytest.raises(OptionError, match="batch_tokens must be a positive integer"):
        tk.LMEvalModel(llama_pair, batch_tokens=0)


@pytest.mark.parametrize("offload, alpha", [("cpu", 1.0), pytest.param("disk", 0.75, marks=pytest.mark.slow)])
def test_streamed_pair_evaluates_like_the_resident_one(tmp_path, tokenizer, task_manager, offload, alpha):
    d = save_pair(tmp_path, tokenizer)
    resident = responses(tk.LMEvalModel(tk.load_pair(d / "pt", d / "ft"), alpha=alpha), task_manager)
    with tk.load_pair(d / "pt", d / "ft", offload=offload) as streamed_pair:
        streamed = responses(tk.LMEvalModel(streamed_pair, alpha=alpha, batch_tokens=64), task_manager)
    for t in ("tiny_mc", "tiny_ppl"):   # same model, another batch layout: equal to fp32 rounding
        torch.testing.assert_close(flat_logliks(streamed[t]), flat_logliks(resident[t]), atol=2e-5, rtol=1e-6)
    assert greedy_flags(streamed["tiny_mc"]) == greedy_flags(resident["tiny_mc"])
    assert streamed["tiny_gen"] == resident["tiny_gen"]   # cached HF generate vs recomputed engine steps


def test_engine_path_on_a_resident_pair(llama_pair, task_manager):
    hf = responses(tk.LMEvalModel(llama_pair, alpha=0.75), task_manager, ["tiny_mc", "tiny_ppl"])
    engine = responses(tk.LMEvalModel(llama_pair, alpha=0.75, engine=True), task_manager, ["tiny_mc", "tiny_ppl"])
    for t in ("tiny_mc", "tiny_ppl"):
        torch.testing.assert_close(flat_logliks(engine[t]), flat_logliks(hf[t]), atol=2e-5, rtol=1e-6)
    assert greedy_flags(engine["tiny_mc"]) == greedy_flags(hf["tiny_mc"])


def test_small_batches_give_the_same_answers(llama_pair, task_manager):
    big = responses(tk.LMEvalModel(llama_pair, alpha=0.5), task_manager)
    small = responses(tk.LMEvalModel(llama_pair, alpha=0.5, batch_tokens=8), task_manager)   # one row per batch
    for t in ("tiny_mc", "tiny_ppl"):
        torch.testing.assert_close(flat_logliks(small[t]), flat_logliks(big[t]), atol=2e-5, rtol=1e-6)
    assert small["tiny_gen"] == big["tiny_gen"]


def test_the_pairs_tokenizer_is_left_as_it_was(tokenizer):
    from tests.fixtures.tiny import train_tokenizer

    no_pad = train_tokenizer(["a few words of text"], vocab_size=300)
    no_pad.pad_token = None
    pt, ft = make_pair_models("llama", tokenizer)
    model = tk.LMEvalModel(tk.load_pair(pt, ft, tokenizer=no_pad))
    assert no_pad.pad_token is None and model.tokenizer.pad_token is not None


def test_bad_arguments_are_named(llama_pair):
    with pytest.raises(TucoError, match="needs a pair from tk.load_pair"):
        tk.LMEvalModel("gpt2")
    pt, ft = llama_pair.pretrained, llama_pair.finetuned
    with pytest.raises(TucoError, match="needs the pair's tokenizer"):
        tk.LMEvalModel(tk.load_pair(pt, ft))
    with pytest.raises(OptionError, match="max_gpu_memory is a budget for a CUDA device, but the pair is on cpu"):
        tk.LMEvalModel(llama_pair, max_gpu_memory="1GiB")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_lm_eval_models_still_resolve_after_import_tuco_kernels():
    run = _python("import tuco_kernels as tk\n"
                  "cls = tk.LMEvalModel\n"
                  "from lm_eval.api.registry import get_model\n"
                  "from lm_eval.models.huggingface import HFLM\n"
                  "assert get_model('hf') is HFLM and get_model('hf-auto') is HFLM\n"
                  "assert get_model('dummy').__name__ == 'DummyLM'\n"
                  "assert issubclass(cls, HFLM)\n"
                  "print('ok')")
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_import_tuco_kernels_does_not_import_lm_eval():
    run = _python("import sys, tuco_kernels\nprint('lm_eval' in sys.modules)")
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr[-2000:]


def test_missing_lm_eval_is_one_clear_line():
    run = _python("import sys\nsys.modules['lm_eval'] = None\n"
                  "import tuco_kernels as tk\n"
                  "try:\n    tk.LMEvalModel\nexcept tk.TucoError as e:\n    print(e)\n")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.startswith("lm-eval is not installed; install the eval extra: pip install 'tuco_kernels[eval]'")
