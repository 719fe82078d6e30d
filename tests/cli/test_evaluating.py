"""`tuco eval` end to end on a saved tiny pair and local task files (offline): the results file is
simple_evaluate's dict with this tool's metadata, a sweep writes one result per α, a summary and the figure, the
numbers are tk.LMEvalModel's, and every mistake is one named line before any model loads."""

import json

import pytest

pytest.importorskip("lm_eval")

import lm_eval  # noqa: E402

import tuco_kernels as tk  # noqa: E402
from tuco_kernels.cli import main  # noqa: E402

from tests.fixtures.eval_tasks import write_tasks  # noqa: E402
from tests.fixtures.pairs import save_pair  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("eval")
    save_pair(root, tokenizer)
    write_tasks(root / "tasks")
    return root


def _args(setup, *extra):
    return ["eval", "--pretrained", str(setup / "pt"), "--finetuned", str(setup / "ft"), "--include-path",
            str(setup / "tasks"), *extra]


def test_one_alpha_writes_simple_evaluates_dict_with_metadata(setup, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(_args(setup, "--tasks", "tiny_mc,tiny_gen", "--alpha", "0.5", "--log-samples", "--out", str(out))) == 0
    got = json.loads(out.read_text())
    assert set(got["results"]) == {"tiny_mc", "tiny_gen"} and 0 <= got["results"]["tiny_mc"]["acc,none"] <= 1
    assert len(got["samples"]["tiny_mc"]) == 6 and got["samples"]["tiny_gen"][0]["resps"]
    meta = got["tuco"]
    assert meta["alpha"] == 0.5 and meta["tasks"] == ["tiny_mc", "tiny_gen"]
    assert meta["models"]["finetuned"].endswith("ft") and meta["layers"] == 3
    assert {"torch", "transformers", "lm_eval", "datasets"} <= set(meta["versions"])
    assert meta["rendering"].startswith("lm-eval's prompts as raw text")
    assert "tuco: rendering: lm-eval's prompts as raw text" in capsys.readouterr().err

    # the same numbers as tk.LMEvalModel through simple_evaluate
    model = tk.LMEvalModel(tk.load_pair(setup / "pt", setup / "ft"), alpha=0.5)
    direct = lm_eval.simple_evaluate(model=model, tasks=["tiny_mc"], bootstrap_iters=100000, log_samples=True,
                                     task_manager=lm_eval.tasks.TaskManager(include_path=str(setup / "tasks")))
    assert [s["resps"] for s in direct["samples"]["tiny_mc"]] == [
        [[tuple(r) for r in req] for req in s["resps"]] for s in got["samples"]["tiny_mc"]]


def test_alpha_sweep_writes_one_result_per_alpha_a_summary_and_a_figure(setup, tmp_path, capsys):
    out = tmp_path / "sweep.json"
    assert main(_args(setup, "--tasks", "tiny_mc,tiny_ppl", "--alpha-sweep", "0,1,1.25", "--limit", "4",
                      "--out", str(out))) == 0
    summary = json.loads(out.read_text())
    assert summary["tuco"]["alpha_sweep"] == [0.0, 1.0, 1.25] and summary["tuco"]["figure"] == "sweep.png"
    assert [s["file"] for s in summary["sweep"]] == ["sweep.alpha=0.json", "sweep.alpha=1.json", "sweep.alpha=1.25.json"]
    ppl = []
    for entry in summary["sweep"]:
        one = json.loads((tmp_path / entry["file"]).read_text())
        assert one["tuco"]["alpha"] == entry["alpha"] and one["results"] == entry["results"]
        assert one["results"]["tiny_mc"]["sample_len"] == 4
        ppl.append(one["results"]["tiny_ppl"]["word_perplexity,none"])
    assert len(set(ppl)) == 3   # α changes the model
    png = (tmp_path / "sweep.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    err = capsys.readouterr().err
    assert "α=0" in err and "α=1.25" in err and "word_perplexity" in err


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "tiny_mcc", "--out", "{tmp}/r.json"], "unknown lm-eval task 'tiny_mcc'; did you mean tiny_mc"),
    (["--tasks", "tiny_mc", "--out", "{tmp}/r.csv"], "r.csv: tuco eval writes JSON"),
    (["--tasks", "tiny_mc", "--alpha", "1", "--alpha-sweep", "0,1", "--out", "{tmp}/r.json"],
     "--alpha and --alpha-sweep both given"),
    (["--tasks", "tiny_mc", "--alpha", "1,1", "--out", "{tmp}/r.json"], "--alpha has 2 values but the model has 3 layers"),
    (["--tasks", "tiny_mc", "--fewshot-single-turn", "--out", "{tmp}/r.json"], "it needs --apply-chat-template"),
    (["--tasks", "tiny_mc", "--out", "{tmp}/missing/r.json"], "directory {tmp}/missing does not exist"),
    (["--tasks", "tiny_mc", "--apply-chat-template", "--pretrained", "{tmp}/nowhere", "--out", "{tmp}/r.json"],
     "nowhere"),
])
def test_mistakes_are_one_named_line(setup, tmp_path, capsys, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(_args(setup, *argv)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tuco: error: ") and message.replace("{tmp}", str(tmp_path)) in err[-1], err


def test_bad_values_and_existing_outputs_are_refused(setup, tmp_path, capsys):
    assert main(_args(setup, "--tasks", "tiny_mc", "--alpha-sweep", "0,1,1", "--out", str(tmp_path / "r.json"))) == 2
    assert "a value appears twice" in capsys.readouterr().err
    assert main(_args(setup, "--tasks", "tiny_mc", "--limit", "0", "--out", str(tmp_path / "r.json"))) == 2
    assert "--limit" in capsys.readouterr().err
    (tmp_path / "s.alpha=1.json").write_text("{}")
    assert main(_args(setup, "--tasks", "tiny_mc", "--alpha-sweep", "0,1", "--out", str(tmp_path / "s.json"))) == 2
    assert "s.alpha=1.json: exists; pass --force" in capsys.readouterr().err
    assert main(["eval", "--tasks", "tiny_mc", "--include-path", str(tmp_path / "no_tasks"), "--out",
                 str(tmp_path / "r.json")]) == 2
    assert "no_tasks: not a folder of lm-eval task files" in capsys.readouterr().err


def test_a_task_whose_data_is_missing_is_named_before_loading(setup, tmp_path, capsys):
    tasks = write_tasks(tmp_path / "tasks")
    (tasks / "mc.jsonl").unlink()
    assert main(["eval", "--pretrained", str(setup / "pt"), "--finetuned", str(setup / "ft"), "--tasks", "tiny_mc",
                 "--include-path", str(tasks), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err
    assert "tuco: error: task 'tiny_mc': its data could not be loaded" in err
    assert "ModelPair(" not in err and "Traceback" not in err   # named before the pair loads, no stack trace
