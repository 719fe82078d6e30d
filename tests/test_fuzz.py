"""A fuzz suite over prompt files, options and weights with planted NaN/inf (hypothesis), run through `tuco score` as a
user runs it. For every generated case: exit 0 with finite rows, or 3 with flagged rows, or 2 with one line naming
the problem; never a traceback, never an input file changed, never a half-written output."""

import json
import math

import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.pairs import make_pair_models
from tuco_kernels import cli

pytestmark = pytest.mark.slow

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(str.strip)
GOOD_ID = st.one_of(st.none(), st.integers(0, 10**6), st.text(alphabet="abcxyz,\" 019", min_size=1, max_size=6)
                    .filter(lambda t: t.strip().lower() not in ("nan", "na", "none", "null", "n/a")))
ROWS = st.lists(st.tuples(GOOD_ID, st.one_of(TEXT, st.just('he said "hi", then\nleft'))), min_size=1, max_size=5,
                unique_by=lambda r: str(r[0]) if r[0] is not None else object())
# one mistake per case, or none: each kind of bad input is met on its own, and most cases reach real scoring
MISTAKES = [None] * 8 + ["batch_tokens", "alpha", "alpha_length", "out_kind", "nan_id", "float_id", "dup_id",
                         "empty_prompt", "broken_line", "too_long", "no_prompts", "bad_utf8"]


@pytest.fixture(scope="module")
def models(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("fuzz")
    pt, ft = make_pair_models("llama", tokenizer)
    variants = {"clean": (pt, ft)}
    for name, side, layer, value in (("nan_pt", 0, 0, float("nan")), ("inf_ft", 1, 2, float("inf"))):
        pair = [m.__class__(m.config) for m in (pt, ft)]
        for copy, source in zip(pair, (pt, ft)):
            copy.load_state_dict(source.state_dict())
        with torch.no_grad():
            pair[side].model.layers[layer].mlp.down_proj.weight[0, 0] = value
        variants[name] = tuple(pair)
    for name, (p, f) in variants.items():
        for side, model in (("pt", p), ("ft", f)):
            model.save_pretrained(root / name / side)
            tokenizer.save_pretrained(root / name / side)
    return root


def write_prompts(path, kind, rows, bom, broken_line, bad_utf8=False):
    if kind == "jsonl":
        lines = [json.dumps({"prompt": text} if pid is None else {"id": pid, "prompt": text}) for pid, text in rows]
        if broken_line:
            lines.insert(len(lines) // 2, '{"prompt": "unterminated')
        data = "\n".join(lines) + "\n"
    elif kind == "csv":
        def cell(v):
            v = "" if v is None else str(v)
            return '"' + v.replace('"', '""') + '"'
        data = "id,prompt\n" + "".join(f"{cell(pid)},{cell(text)}\n" for pid, text in rows)
        if broken_line:
            data += '"open,quote\n'
    else:
        data = "".join(text.replace("\n", " ") + "\n" for _, text in rows)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode("utf-8") + (b"\xff\xfe" if bad_utf8 else b""))


OUTCOMES = []   # exit status of every generated case (the last test checks the fuzz reached real scoring)


@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(kind=st.sampled_from(["jsonl", "csv", "txt"]), rows=ROWS, bom=st.booleans(),
       mistake=st.sampled_from(MISTAKES), model=st.sampled_from(["clean", "clean", "nan_pt", "inf_ft"]),
       out_kind=st.sampled_from(["jsonl", "csv", "parquet"]), layers=st.booleans(),
       truncate=st.sampled_from([None, None, "left", "right"]), batch_tokens=st.sampled_from(["4096", "1", "64"]),
       alpha=st.sampled_from(["1", "0.5", "1,1.25,1"]))
def test_tuco_score_never_crashes_never_lies_never_loses(tmp_path_factory, models, capsys, kind, rows, bom, mistake,
                                                         model, out_kind, layers, truncate, batch_tokens, alpha):
    tmp = tmp_path_factory.mktemp("case")
    rows = list(rows)
    if mistake in ("nan_id", "float_id", "dup_id") and kind != "txt":
        rows.append(({"nan_id": float("nan"), "float_id": 1.5}.get(mistake, rows[0][0] if rows[0][0] is not None
                                                                     else 0), "x"))
        if mistake == "dup_id" and rows[0][0] is None:
            rows[0] = (0, rows[0][1])
    if mistake == "empty_prompt":
        rows.append((None, "   "))
    if mistake == "too_long":
        rows.append((None, "word " * 400))
    if mistake == "no_prompts":
        rows = []
    prompts = tmp / f"p.{kind}"
    write_prompts(prompts, kind, rows, bom, mistake == "broken_line", mistake == "bad_utf8")
    before = prompts.read_bytes()
    out = tmp / f"o.{'xlsx' if mistake == 'out_kind' else out_kind}"
    batch_tokens = {"batch_tokens": "0"}.get(mistake, batch_tokens)
    alpha = {"alpha": "nan", "alpha_length": "1,1"}.get(mistake, alpha)
    args = ["score", "--pretrained", str(models / model / "pt"), "--finetuned", str(models / model / "ft"),
            "--prompts", str(prompts), "--out", str(out), "--no-progress", "--batch-tokens", batch_tokens,
            "--alpha", alpha] + (["--layers"] if layers else []) + (["--truncate", truncate] if truncate else [])
    capsys.readouterr()
    rc = cli.main(args)
    err = capsys.readouterr().err
    OUTCOMES.append((rc, mistake, err.strip().splitlines()[-1][:120] if err.strip() else ""))
    assert "Traceback" not in err and "internal error" not in err, err
    assert prompts.read_bytes() == before
    assert not list(tmp.glob("*.partial")) and not list(tmp.glob(".*.lock"))
    if rc == cli.EXIT_USER:
        errors = [line for line in err.splitlines() if line.startswith("tuco: error: ")]
        assert len(errors) == 1 and err.rstrip().endswith(errors[0]), err
        assert not out.exists()
        return
    assert rc in (cli.EXIT_OK, cli.EXIT_FLAGGED), (rc, err)
    frame = (pd.read_parquet(out) if out_kind == "parquet" else pd.read_csv(out, keep_default_na=False,
                                                                            na_values=[""]) if out_kind == "csv"
             else pd.DataFrame([json.loads(line) for line in out.read_text().splitlines()]))
    assert len(frame) == len(rows) - (mistake == "too_long" and truncate is None)
    ok = frame["status"] == "ok"
    assert frame.loc[ok, "tuco"].between(0, 1).all()
    assert frame.loc[~ok, "tuco"].isna().all()
    assert (rc == cli.EXIT_FLAGGED) == bool((~ok).any())
    if model != "clean":
        assert (~ok).all() and frame["status"].str.startswith("non-finite").all()
    assert all(not (isinstance(v, float) and math.isinf(v)) for v in frame["tuco"])


def test_the_fuzz_reached_real_scoring():
    """Not only refusals: a good share of the generated cases were scored (clean, or with flagged rows)."""
    scored = sum(rc in (cli.EXIT_OK, cli.EXIT_FLAGGED) for rc, _, _ in OUTCOMES)
    refused = {m for rc, m, _ in OUTCOMES if rc == cli.EXIT_USER}
    assert len(OUTCOMES) >= 80 and scored >= 30, OUTCOMES
    assert len(refused) >= 8, refused   # most kinds of mistake were generated, and each was refused by name
