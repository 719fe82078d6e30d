"""`tuco` end to end on saved tiny models: every input and output format, and every bad-input path."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

import tuco_kernels as tk
from tuco_kernels.cli import main

from tests.fixtures.pairs import PROMPTS, make_pair_models, save_pair


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("cli_models")
    save_pair(root, tokenizer, "qwen2")
    return root


@pytest.fixture(scope="module")
def expected(models):
    return tk.score(tk.load_pair(models / "pt", models / "ft"), PROMPTS, layers=True)


def _write_prompts(tmp_path, kind):
    if kind == "jsonl":
        text = "\n".join(json.dumps({"id": f"p{i}", "prompt": p}) for i, p in enumerate(PROMPTS))
    elif kind == "csv":
        text = "id,prompt\n" + "\n".join(f'p{i},"{p}"' for i, p in enumerate(PROMPTS))
    else:
        text = "\n".join(PROMPTS)
    path = tmp_path / f"prompts.{kind}"
    path.write_text(text + "\n")
    return path


def _read(path):
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if path.suffix == ".csv":   # per-layer values are flat columns beta_0 … beta_{L-1}
        df = pd.read_csv(path)
        rows = []
        for r in df.to_dict("records"):
            row = {k: v for k, v in r.items() if not any(k.startswith(f"{n}_") and k[len(n) + 1:].isdigit()
                                                         for n in ("beta", "ptc_l1", "ftc_l1"))}
            for name in ("beta", "ptc_l1", "ftc_l1"):
                cols = sorted((c for c in r if c.startswith(f"{name}_") and c[len(name) + 1:].isdigit()),
                              key=lambda c: int(c.rsplit("_", 1)[1]))
                if cols:
                    row[name] = [r[c] for c in cols]
            rows.append(row)
        return rows
    return pd.read_parquet(path).to_dict("records")


@pytest.mark.parametrize("in_kind", ["jsonl", "csv", "txt"])
@pytest.mark.parametrize("out_kind", ["jsonl", "csv", "parquet"])
def test_score_every_format(tmp_path, models, expected, in_kind, out_kind, capsys):
    prompts, out = _write_prompts(tmp_path, in_kind), tmp_path / f"out.{out_kind}"
    rc = main(["score", "--pretrained", str(models / "pt"), "--finetuned", str(models / "ft"),
               "--prompts", str(prompts), "--out", str(out), "--layers", "--no-progress"])
    assert rc == 0
    rows = _read(out)
    assert len(rows) == len(PROMPTS)
    for i, row in enumerate(rows):
        assert str(row["id"]) == (f"p{i}" if in_kind != "txt" else str(i))
        assert row["tuco"] == pytest.approx(expected.tuco[i], abs=1e-12)
        assert row["preco"] == pytest.approx(1 - expected.tuco[i], abs=1e-12)
        assert row["n_tokens"] == expected.n_tokens[i]
        assert list(row["beta"]) == pytest.approx(list(expected.beta[i]), abs=1e-9)
        assert len(row["ptc_l1"]) == len(row["ftc_l1"]) == 3
    assert "TuCo mean ± sd" in capsys.readouterr().err


@pytest.mark.parametrize("in_kind", ["csv", "jsonl"])
def test_labels_reach_every_output_and_the_report_groups_by_them(tmp_path, models, expected, in_kind, capsys):
    sources = ["web", "chat", "web", "chat"][:len(PROMPTS)]
    if in_kind == "csv":
        text = "prompt,source,set\n" + "\n".join(f'"{p}",{s},{i}' for i, (p, s) in enumerate(zip(PROMPTS, sources)))
    else:
        text = "\n".join(json.dumps({"prompt": p, "source": s, "set": i})
                         for i, (p, s) in enumerate(zip(PROMPTS, sources)))
    prompts = tmp_path / f"labelled.{in_kind}"
    prompts.write_text(text + "\n")
    base = ["--pretrained", str(models / "pt"), "--finetuned", str(models / "ft"), "--prompts", str(prompts),
            "--no-progress"]
    for out in ("s.csv", "s.jsonl", "s.parquet", "run/"):   # run/: a sharded run's directory
        assert main(["score", *base, "--out", f"{tmp_path}/{out}"]) == 0
        rows = _read(tmp_path / "run" / "scores.parquet" if out == "run/" else tmp_path / out)
        assert [r["source"] for r in rows] == sources, out
        assert [str(r["set"]) for r in rows] == [str(i) for i in range(len(PROMPTS))], out
        assert [r["tuco"] for r in rows] == pytest.approx(list(expected.tuco), abs=1e-12)
        # the labels stand between the prompt and its scores
        assert list(rows[0])[:4] == ["id", "text", "source", "set"], out
    capsys.readouterr()
    assert main(["report", str(tmp_path / "s.parquet"), "--group", "source", "--auc", "chat,web",
                 "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "chat" in page and "web" in page and "AUC" in page
    gen = tmp_path / "gen.jsonl"
    assert main(["steer", *base[:-1], "--alpha", "1", "--max-new-tokens", "2", "--out", str(gen)]) == 0
    assert [json.loads(line)["source"] for line in gen.read_text().splitlines()] == sources


def test_a_label_named_like_an_output_column_is_refused_before_loading(tmp_path, models, capsys):
    (tmp_path / "p.csv").write_text("prompt,tuco\nhello,0.5\n")
    rc = main(["score", "--pretrained", str(models / "pt"), "--finetuned", str(models / "ft"), "--prompts",
               str(tmp_path / "p.csv"), "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "p.csv:2: the column 'tuco' has the name of an output column" in err
    assert "loading" not in err and not (tmp_path / "o.csv").exists()


def test_chat_alpha_and_output_co(tmp_path, models):
    prompts = tmp_path / "chat.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "user", "content": "Can you help me?"}]}) + "\n")
    out = tmp_path / "o.jsonl"
    base = ["score", "--pretrained", str(models / "pt"), "--finetuned", str(models / "ft"), "--prompts", str(prompts),
            "--out", str(out), "--no-progress", "--output-co"]
    assert main(base + ["--system-prompt", "Be kind."]) == 0
    row = json.loads(out.read_text())
    pair = tk.load_pair(models / "pt", models / "ft")
    exp = tk.score(pair, [[{"role": "user", "content": "Can you help me?"}]], system_prompt="Be kind.", output_co=True)
    assert row["tuco"] == pytest.approx(exp.tuco[0]) and row["output_co"] == pytest.approx(exp.output_co[0])
    assert main(base + ["--alpha", "1.25", "--force"]) == 0
    steered = json.loads(out.read_text())["tuco"]
    assert steered == pytest.approx(tk.score(pair, [[{"role": "user", "content": "Can you help me?"}]],
                                             alpha=1.25).tuco[0])


@pytest.mark.parametrize("content,match", [
    ('{"prompt": "ok"}\n{"prompt": oops}\n', "prompts.jsonl:2: invalid JSON"),
    ('{"prompt": "ok"}\n{"text2": "x"}\n', "prompts.jsonl:2: expected exactly one of"),
])
def test_bad_input_exits_nonzero_and_keeps_old_output(tmp_path, models, capsys, content, match):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(content)
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    rc = main(["score", "--pretrained", str(models / "pt"), "--finetuned", str(models / "ft"),
               "--prompts", str(prompts), "--out", str(out), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert match in err and "Traceback" not in err
    assert out.read_text() == "previous results\n"
    assert list(tmp_path.glob("*.partial")) == []


@pytest.mark.parametrize("extra,match", [
    (["--out", "{tmp}/x.xlsx"], "unknown output type '.xlsx'"),
    (["--out", "{tmp}/nodir/x.jsonl"], "does not exist"),
    (["--out", "{tmp}/o.jsonl", "--dtype", "int3"], "unknown dtype 'int3'"),
    (["--out", "{tmp}/o.jsonl", "--tokenizer", "{tmp}/NOTOK"], "NOTOK: not a model directory, a .gguf file or a Hugging Face hub id"),
    (["--out", "{tmp}/o.jsonl", "--backend", "nope"], "argument --backend: invalid choice: 'nope'"),
])
def test_bad_options(tmp_path, models, capsys, extra, match):
    args = ["score", "--no-progress", "--pretrained", str(models / "pt"), "--finetuned", str(models / "ft"),
            "--prompts", str(_write_prompts(tmp_path, "txt"))] + [a.format(tmp=tmp_path) for a in extra]
    assert main(args) == 2
    assert match in capsys.readouterr().err


def test_incompatible_pair_exits_2(tmp_path, models, tokenizer, capsys):
    _, other = make_pair_models("llama", tokenizer)
    other.save_pretrained(tmp_path / "llama")
    tokenizer.save_pretrained(tmp_path / "llama")
    rc = main(["score", "--pretrained", str(models / "pt"), "--finetuned", str(tmp_path / "llama"),
               "--prompts", str(_write_prompts(tmp_path, "txt")), "--out", str(tmp_path / "o.csv"), "--no-progress"])
    assert rc == 2 and "model_type differs" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_steer_and_info_commands(tmp_path, models, capsys):
    prompts = _write_prompts(tmp_path, "txt")
    out = tmp_path / "gen.jsonl"
    rc = main(["steer", "--pretrained", str(models / "pt"), "--finetuned", str(models / "ft"), "--prompts",
               str(prompts), "--alpha", "0.75", "1.25", "--max-new-tokens", "4", "--out", str(out)])
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["alpha"] for r in rows] == [0.75, 1.25] * len(PROMPTS)       # grouped by prompt, α in a column
    assert [r["prompt"] for r in rows[::2]] == PROMPTS and all(isinstance(r["text"], str) for r in rows)
    printed = capsys.readouterr().out
    assert printed.count("── [") == len(PROMPTS) and f"── [0] {PROMPTS[0]}" in printed and "   α=0.75  " in printed
    info = subprocess.run([sys.executable, "-m", "tuco_kernels.cli", "info"], capture_output=True, text=True)
    assert info.returncode == 0 and "backend torch   available" in info.stdout and "transformers" in info.stdout
    assert "compiled ops    tuco_kernels._C (built by setup.py)" in info.stdout or "JIT build" in info.stdout
    if not torch.cuda.is_available():
        assert "backend cuda    torch built without CUDA" in info.stdout or "no CUDA device" in info.stdout
        assert "backend cpu     available" in info.stdout and "default on cpu  cpu" in info.stdout


def test_steer_alpha_sweep_top_k_and_one_alpha_convention(tmp_path, models, capsys):
    """--alpha-sweep A,B (eval's spelling) equals the older --alpha A B; --alpha A,B is one α per layer, as for score;
    --top-k reaches the sampler (top-k 1 samples the greedy tokens); a negative α is accepted with a note."""
    base = ["steer", "--pretrained", str(models / "pt"), "--finetuned", str(models / "ft"), "--prompts",
            str(_write_prompts(tmp_path, "txt")), "--max-new-tokens", "4"]

    def run(*flags, name):
        out = tmp_path / f"{name}.jsonl"
        assert main([*base, *flags, "--out", str(out)]) == 0
        return [json.loads(line) for line in out.read_text().splitlines()]

    sweep = run("--alpha-sweep", "0.75,1.25", name="sweep")
    assert sweep == run("--alpha", "0.75", "1.25", name="spaced")
    assert [r["alpha"] for r in sweep] == [0.75, 1.25] * len(PROMPTS)
    greedy = run("--alpha", "1", name="greedy")
    assert [r["text"] for r in run("--alpha", "1", "--sample", "--top-k", "1", "--seed", "5", name="k1")] == \
        [r["text"] for r in greedy]
    n_layers = tk.load_pair(models / "pt", models / "ft").n_layers
    per_layer = run("--alpha", ",".join(["1"] * n_layers), name="layers")
    assert [r["text"] for r in per_layer] == [r["text"] for r in greedy]
    capsys.readouterr()
    run("--alpha", "-0.5", name="negative")
    assert "α < 0 subtracts the fine-tuning component" in capsys.readouterr().err
    assert main([*base, "--alpha", "1", "--alpha-sweep", "0,1"]) == 2
    assert "--alpha and --alpha-sweep both given" in capsys.readouterr().err
    assert main(["steer", "--help"]) == 0
    helptext = " ".join(capsys.readouterr().out.split())
    for flag in ("--top-k K with --sample", "--temperature T with --sample", "--top-p P with --sample",
                 "--seed S with --sample", "--max-new-tokens N new tokens"):
        assert flag in helptext
    assert "(default: 0, all)" in helptext and "(default: 32)" in helptext


def test_console_script_runs(tmp_path, models):
    """The installed `tuco` entry point, as a user runs it, with the progress bar on stderr."""
    import shutil

    exe = shutil.which("tuco") or str((__import__("pathlib").Path(sys.executable).parent / "tuco"))
    out = tmp_path / "o.parquet"
    proc = subprocess.run([exe, "score", "--pretrained", str(models / "pt"), "--finetuned", str(models / "ft"),
                           "--prompts", str(_write_prompts(tmp_path, "txt")), "--out", str(out)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "scoring" in proc.stderr and len(pd.read_parquet(out)) == len(PROMPTS)


def test_score_with_offload_schedule_and_profile(tmp_path, tokenizer):
    from tuco_kernels.cli import main

    from tests.fixtures.pairs import make_pair_models

    pt, ft = make_pair_models("llama", tokenizer)
    for name, model in (("pt", pt), ("ft", ft)):
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    (tmp_path / "p.txt").write_text("Hello there\nCan you help me?\n")
    base = ["score", "--pretrained", str(tmp_path / "pt"), "--finetuned", str(tmp_path / "ft"),
            "--prompts", str(tmp_path / "p.txt"), "--no-progress"]
    assert main(base + ["--out", str(tmp_path / "a.jsonl")]) == 0
    assert main(base + ["--out", str(tmp_path / "b.jsonl"), "--offload", "disk", "--schedule", "layer",
                        "--profile"]) == 0
    a, b = ((tmp_path / f).read_text() for f in ("a.jsonl", "b.jsonl"))
    assert a == b
    assert main(base + ["--out", str(tmp_path / "c.jsonl"), "--max-gpu-memory", "lots"]) == 2


@pytest.mark.parametrize("out_kind", ["csv", "jsonl", "parquet"])
def test_outputs_carry_text_token_maps_and_run_metadata(tmp_path, models, out_kind):
    out = tmp_path / f"o.{out_kind}"
    prompts = _write_prompts(tmp_path, "jsonl")
    assert main(["score", "--pretrained", str(models / "pt"), "--finetuned", str(models / "ft"), "--prompts",
                 str(prompts), "--out", str(out), "--no-progress", "--layers", "--token-map", "--raw-text"]) == 0
    if out_kind == "csv":
        frame = pd.read_csv(out)
        assert [f"beta_{i}" for i in range(3)] == [c for c in frame.columns if c.startswith("beta_")]
        assert frame["beta_2"].dtype.kind == "f" and "beta" not in frame.columns
        tokens, token_tuco = json.loads(frame["tokens"][2]), json.loads(frame["token_tuco"][2])
    else:
        frame = pd.read_parquet(out) if out_kind == "parquet" else pd.read_json(out, lines=True)
        assert len(frame["beta"][0]) == 3
        tokens, token_tuco = list(frame["tokens"][2]), list(frame["token_tuco"][2])
    assert frame["text"].tolist() == PROMPTS and frame["n_tokens"].tolist()[2] == len(tokens) == len(token_tuco)
    assert "".join(tokens).endswith(PROMPTS[2])
    meta = json.loads((tmp_path / f"o.{out_kind}.meta.json").read_text())
    assert meta["models"]["finetuned"].endswith("ft") and meta["dtype"] == "float32" and meta["layers"] == 3
    assert meta["options"]["layers"] is True and meta["rendering"].startswith("raw text")
    assert {"python", "torch", "transformers"} <= set(meta["versions"]) and meta["date"][:4].isdigit()
    if out_kind == "parquet":
        import pyarrow.parquet as pq

        assert json.loads(pq.read_metadata(out).metadata[b"tuco"]) == meta


def test_provenance_is_what_the_user_asked_and_what_the_run_did(tmp_path, models, capsys):
    """--template: the rendering line and the metadata name the paper's template (they said "chat template of <path>"
    before); the options are recorded as given, the device the run chose beside them."""
    prompts = _write_prompts(tmp_path, "txt")
    out = tmp_path / "o.csv"
    assert main(["score", "--pretrained", str(models / "pt"), "--finetuned", str(models / "ft"), "--prompts",
                 str(prompts), "--out", str(out), "--no-progress", "--template", "llama2", "--truncate", "left"]) == 0
    err = capsys.readouterr().err
    assert "tuco: rendering: the paper's llama2 template (tuco_kernels.prompts.templates)" in err
    meta = json.loads((tmp_path / "o.csv.meta.json").read_text())
    assert meta["rendering"].startswith("the paper's llama2 template")
    assert meta["options"]["template"] == "llama2" and meta["options"]["chat"] is False   # as given (no --chat)
    assert meta["options"]["device"] is None and meta["device"] == "cpu"                  # and what the run did


@pytest.mark.parametrize("labels", [False, True])
def test_a_sharded_run_records_the_same_metadata_as_a_file_run(tmp_path, models, labels, capsys):
    import pyarrow.parquet as pq

    prompts = _write_prompts(tmp_path, "jsonl")
    if labels:
        prompts.write_text("".join(json.dumps({"prompt": p, "source": "x"}) + "\n" for p in PROMPTS))
    assert main(["score", "--pretrained", str(models / "pt"), "--finetuned", str(models / "ft"), "--prompts",
                 str(prompts), "--out", f"{tmp_path}/run/", "--also", "csv", "--no-progress", "--raw-text"]) == 0
    for name in ("scores.parquet", "scores.csv"):
        meta = json.loads((tmp_path / "run" / f"{name}.meta.json").read_text())
        assert meta["models"]["finetuned"].endswith("ft") and meta["rendering"].startswith("raw text")
        assert meta["options"]["raw_text"] is True and meta["command"].startswith("tuco score")
        assert len(meta["fingerprint_sha256"]) == 64
    assert json.loads(pq.read_metadata(tmp_path / "run" / "scores.parquet").metadata[b"tuco"]) == meta
    capsys.readouterr()
    assert main(["report", str(tmp_path / "run" / "scores.parquet"), "--out", str(tmp_path / "r.html")]) == 0
    assert "No run metadata" not in (tmp_path / "r.html").read_text()
