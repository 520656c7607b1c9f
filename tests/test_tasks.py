"""The paper's datasets offline: loaders on the project's fixtures, answer checkers on hard cases,
generated ProntoQA problems checked by an independent reasoner, and both prompt paths.

The fixtures under tests/fixtures are written for sirt in each dataset's hub format; none is
copied from a public dataset.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from sirt.config.compose import compose
from sirt.config.defaults import default
from sirt.config.errors import ConfigError, InputError
from sirt.config.schema import Config
from sirt.loop.checks import validated
from sirt.models.load import char_tokenizer
from sirt.models.prompts import solver_prompt, verifier_schema
from sirt.stages.evaluation import harness_accuracy
from sirt.tasks import prontoqa
from sirt.tasks.answers import flexible_match, strict_match
from sirt.tasks.benchmarks import DatasetUnavailable
from sirt.tasks.problem import Problem
from sirt.tasks.registry import is_correct, load_splits
from tests.conftest import ROOT

FIXTURES = ROOT / "tests" / "fixtures"
CHATML = (  # a ChatML template like SmolLM2's, on the project's own character tokenizer
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def fixture_splits(name: str, **overrides) -> tuple[list[Problem], list[Problem]]:
    cfg = default("dataset", name=name, path=str(FIXTURES / f"{name}_{{split}}.jsonl"), n_train=100, n_test=100)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return load_splits(cfg)


@pytest.mark.parametrize(("name", "kind", "sizes"), [("gsm8k", "gsm8k", (10, 8)), ("math", "math", (4, 4)),
                                                    ("prontoqa", "truefalse", (3, 3))])
def test_each_loader_reads_its_fixture(name, kind, sizes):
    train, test = fixture_splits(name)
    assert (len(train), len(test)) == sizes
    for problem in train + test:
        assert problem.kind == kind
        assert is_correct(problem.answer, problem), problem  # every reference passes its own checker
        assert problem.level >= 0


def test_gsm8k_loader_strips_calculator_markup_and_counts_steps():
    train, _ = fixture_splits("gsm8k")
    assert not any("<<" in p.answer for p in train)
    trip = next(p for p in train if p.question.startswith("A train travels"))
    assert trip.level == 3 and trip.answer.endswith("#### 270")


def test_math_levels_come_from_the_level_field():
    _, test = fixture_splits("math")
    assert sorted(p.level for p in test) == [0, 1, 2, 2]  # "Level ?" gives 0


def test_split_sizes_are_a_seeded_draw():
    small, _ = fixture_splits("gsm8k", n_train=4, n_test=2)
    again, _ = fixture_splits("gsm8k", n_train=4, n_test=2)
    other, _ = fixture_splits("gsm8k", n_train=4, n_test=2, seed=7)
    assert len(small) == 4 and small == again and small != other


def test_a_malformed_row_is_named(tmp_path):
    (tmp_path / "bad_train.jsonl").write_text('{"question": "q", "answer": "no final number"}\n')
    (tmp_path / "bad_test.jsonl").write_text('{"question": "q", "answer": "#### 1"}\n')
    cfg = default("dataset", name="gsm8k", path=str(tmp_path / "bad_{split}.jsonl"))
    with pytest.raises(InputError, match=r"bad_train\.jsonl: line 1: .*####"):
        load_splits(cfg)


def test_a_missing_local_file_and_an_unreachable_hub_fail_with_one_message():
    with pytest.raises(InputError, match="does not exist"):
        load_splits(default("dataset", name="math", path="/nonexistent/math_{split}.jsonl"))
    with pytest.raises(DatasetUnavailable, match=r"dataset\.path="):  # HF_HUB_OFFLINE=1 (conftest)
        load_splits(default("dataset", name="gsm8k", hub=default("dataset.hub", id="openai/gsm8k", configs=["main"])))


MATH500_ROWS = [  # MATH-500's format (HuggingFaceH4/MATH-500, test.jsonl): written for sirt, not copied
    {"problem": "What is $7 \\times 6 - 2$?", "solution": "First $7 \\times 6 = 42$, and $42 - 2 = \\boxed{40}$.",
     "answer": "40", "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
    {"problem": "Find $x$ if $5x + 3 = 28$.", "solution": "Subtracting 3 gives $5x = 25$, so $x = \\boxed{5}$.",
     "answer": "5", "subject": "Algebra", "level": 2, "unique_id": "test/algebra/2.json"},
    {"problem": "How many diagonals does a hexagon have?",
     "solution": "Each of the 6 vertices meets 3 diagonals, each counted twice: $6 \\cdot 3 / 2 = \\boxed{9}$.",
     "answer": "9", "subject": "Geometry", "level": 4, "unique_id": "test/geometry/3.json"},
]


def hub_copy(directory, **splits: list[str]) -> str:
    """A local copy laid out like a hub dataset repo (one ``<split>.jsonl`` each): ``datasets.load_dataset``
    reads it by the same call as a hub id."""
    directory.mkdir()
    for split, lines in splits.items():
        (directory / f"{split}.jsonl").write_text("".join(line + "\n" for line in lines))
    return str(directory)


def test_math_is_tested_on_math500_unless_a_random_subset_is_asked_for(tmp_path, cache_dir):
    assert compose("dataset=math").dataset.hub.test_id == "HuggingFaceH4/MATH-500"
    fixture = {split: (FIXTURES / f"math_{split}.jsonl").read_text().splitlines() for split in ("train", "test")}
    math = hub_copy(tmp_path / "hendrycks_math", **fixture)  # MATH's own format: "Level 2", type
    math500 = hub_copy(tmp_path / "math500", test=[json.dumps(row) for row in MATH500_ROWS])
    hub = [f"dataset.hub.id={math}", "dataset.hub.configs=[]"]
    train, test = load_splits(validated(compose("dataset=math", *hub, f"dataset.hub.test_id={math500}")).dataset)
    assert len(train) == 4 and {p.question for p in train} <= {json.loads(x)["problem"] for x in fixture["train"]}
    assert sorted((p.question, p.level, p.kind) for p in test) == sorted(
        (r["problem"], r["level"], "math") for r in MATH500_ROWS)  # all of MATH-500 (n_test = 500)
    random_subset = validated(compose("dataset=math", *hub, "dataset.hub.test_id=null", "dataset.n_test=2"))
    _, drawn = load_splits(random_subset.dataset)
    assert len(drawn) == 2 and {p.question for p in drawn} <= {json.loads(x)["problem"] for x in fixture["test"]}
    with pytest.raises(ConfigError, match=r"dataset\.hub\.test_id"):
        validated(compose("dataset=prontoqa", f"dataset.hub.test_id={math500}"))  # generated: nothing to pair with


# --- answer checkers ----------------------------------------------------------------------------------


def gsm8k(gold: str) -> Problem:
    return Problem("q", f"work\n#### {gold}", 1, kind="gsm8k")


@pytest.mark.parametrize(("response", "gold", "ok"), [
    ("so the total is 1,234 apples.\n#### 1,234", "1234", True),  # thousands separators
    ("#### 100000", "100,000", True),
    ("#### $1,080.00", "1080", True),  # currency and trailing zeros
    ("#### 18 dollars", "18", True),  # units
    ("The answer is 45%.", "45", True),
    ("#### -5", "-5", True),  # negatives
    ("It fell to \u22125 degrees, so the answer is \u22125.", "-5", True),  # unicode minus
    ("#### 5", "-5", False),
    ("#### 3/4", "0.75", True),  # fractions
    ("The final answer is $\\boxed{\\frac{3}{4}}$.", "0.75", True),
    ("\\boxed{\\dfrac{1}{2}}", "0.5", True),
    ("First 12 + 30 = 42, then 42 - 30 = 12. The answer is 12.", "12", True),
    ("We add 12 and 30 to get 42 and take away 30, leaving 12", "12", True),  # last number
    ("#### 12\nCheck: 12 + 30 = 42", "12", True),  # #### beats the last number
    ("#### 12.5", "12", False),
    ("I cannot solve this.", "12", False),
])
def test_gsm8k_checker_hard_cases(response, gold, ok):
    assert is_correct(response, gsm8k(gold)) is ok


GRADING = [json.loads(line) for line in (FIXTURES / "gsm8k_grading.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("case", GRADING, ids=[c["why"] for c in GRADING])
def test_gsm8k_rule_grades_the_fixture_as_a_careful_grader(case):
    """42 responses written for the project (headings, self-corrections, expressions, negations, markup),
    each with a careful grader's verdict; lm-eval's two filters graded by their own definitions."""
    problem = gsm8k(case["gold"])
    assert is_correct(case["response"], problem) is case["ok"]
    assert strict_match(case["response"], problem) is case["strict"]
    assert flexible_match(case["response"], problem) is case["flexible"]


def test_harness_metrics_sit_beside_acc():
    """acc_strict and acc_flexible for #### tasks (the organism's included); none for other kinds."""
    test = [gsm8k("18"), gsm8k("8"), Problem("q", "3+5 #### 8", 1)]
    responses = ["#### 18.00", "The answer is 5 + 3 = 8.", "3+5 #### 8"]
    assert harness_accuracy(responses, test) == {"acc_strict": pytest.approx(1 / 3),
                                                 "acc_flexible": pytest.approx(2 / 3)}
    assert harness_accuracy(["#### True"], [Problem("q", "#### True", 1, kind="truefalse")]) == {}


def math_problem(boxed: str) -> Problem:
    return Problem("q", f"Hence the answer is $\\boxed{{{boxed}}}$.", 1, kind="math")


@pytest.mark.parametrize(("response", "boxed", "ok"), [
    ("So $x = \\boxed{\\dfrac{2}{3}}$.", "\\frac{2}{3}", True),
    ("The answer is $\\boxed{0.5}$.", "\\frac{1}{2}", True),
    ("$\\sqrt{50} = \\boxed{5\\sqrt{2}}$", "5\\sqrt{2}", True),
    ("$\\boxed{\\sqrt{50}}$", "5\\sqrt{2}", True),  # symbolic equality
    ("$\\boxed{540^\\circ}$", "540", True),
    ("$\\boxed{\\frac{3}{2}}$", "\\frac{2}{3}", False),
    ("$\\boxed{(1, 2)}$", "(1,2)", True),
    ("I do not know.", "5", False),
])
def test_math_checker_reads_boxed_latex(response, boxed, ok):
    assert is_correct(response, math_problem(boxed)) is ok


@pytest.mark.parametrize(("response", "gold", "ok"), [
    ("Max is a wug. Every wug is cold. So Max is cold.\n#### True", "True", True),
    ("The statement is false.", "False", True),
    ("#### False", "True", False),
    ("Is it true or false? It looks true at first.\n#### False", "False", True),  # #### beats earlier words
    ("No verdict here.", "True", False),
])
def test_prontoqa_checker(response, gold, ok):
    assert is_correct(response, Problem("q", f"#### {gold}", 1, kind="truefalse")) is ok


# --- generated ProntoQA -------------------------------------------------------------------------------


def derive(context: str, entity: str) -> dict[str, bool]:
    """An independent forward-chaining reasoner over the generator's sentence forms."""
    isa, props = {}, {}
    for sentence in re.findall(r"[^.]+\.", context):
        sentence = sentence.strip()
        if m := re.fullmatch(r"(?:Every|Each) (\w+) is an? (\w+)\.", sentence):
            isa.setdefault(m[1], []).append(m[2])
        elif m := re.fullmatch(r"(?:Every|Each) (\w+) is (not )?(\w+)\.", sentence):
            props.setdefault(m[1], []).append((m[3], m[2] is None))
    start = re.search(rf"{entity} is an? (\w+)\.", context)[1]
    known, frontier = {}, [start]
    seen = set()
    while frontier:
        concept = frontier.pop()
        if concept in seen:
            continue
        seen.add(concept)
        for prop, positive in props.get(concept, []):
            assert known.get(prop, positive) == positive, "contradictory ontology"
            known[prop] = positive
        frontier += isa.get(concept, [])
    return known


def test_generated_prontoqa_answers_follow_from_the_context():
    rows = prontoqa.generate(300, [1, 2, 3, 5, 8], seed=3)
    assert {r["answer"] for r in rows} == {"A", "B"} and {r["hops"] for r in rows} == {1, 2, 3, 5, 8}
    for row in rows:
        statement = re.search(r"\? (\w+) is (not )?(\w+)\.$", row["question"])
        entity, negated, prop = statement[1], statement[2] is not None, statement[3]
        holds = derive(row["context"], entity)[prop] != negated
        assert holds == (row["answer"] == "A"), row
        assert row["chain"].count("So ") == row["hops"]  # one conclusion per rule applied


def test_generated_prontoqa_splits_are_disjoint_and_self_consistent():
    cfg = default("dataset", name="prontoqa", levels=[1, 3, 5], n_train=60, n_test=30)
    train, test = load_splits(cfg)
    assert len(train) == 60 and len(test) == 30
    assert not {p.question for p in train} & {p.question for p in test}
    assert {p.level for p in train} <= {1, 3, 5}
    assert all(is_correct(p.answer, p) for p in train + test)
    assert all(p.answer.endswith(("#### True", "#### False")) and "So " in p.answer for p in train)


def test_prontoqa_hops_out_of_range_are_refused():
    with pytest.raises(ValueError, match="hops"):
        prontoqa.generate_row(random.Random(0), prontoqa.MAX_HOPS + 1, "x")


# --- prompts --------------------------------------------------------------------------------------------


def config(chat: bool, method: str = "tf") -> Config:
    c = default("", model=default("model", chat_template=chat), dataset=default("dataset",
        name="gsm8k", prompt_template="Q: {question}\nA: ", chat=default("dataset.chat", user="Solve: {question}")))
    c.verifier.method = method
    return c


def test_plain_prompt_path_is_the_dataset_template():
    tokenizer = char_tokenizer()
    assert solver_prompt("1+2", tokenizer, config(chat=True)) == "Q: 1+2\nA: "  # no template: plain
    assert verifier_schema(tokenizer, config(chat=True)).template == config(chat=True).verifier.template


def test_chat_prompt_path_uses_the_template_and_continues_it_for_verification():
    tokenizer = char_tokenizer()
    tokenizer.chat_template = CHATML
    assert solver_prompt("1+2", tokenizer, config(chat=False)) == "Q: 1+2\nA: "  # chat off: plain
    prompt = solver_prompt("1+2", tokenizer, config(chat=True))
    assert prompt == "<|im_start|>user\nSolve: 1+2<|im_end|>\n<|im_start|>assistant\n"
    tf = verifier_schema(tokenizer, config(chat=True)).template
    assert tf == ("{prompt}{response}<|im_end|>\n<|im_start|>user\nIs the answer above correct? Answer yes or no."
                  "<|im_end|>\n<|im_start|>assistant\n")
    qe = verifier_schema(tokenizer, config(chat=True, method="qe")).template
    assert "from 0 (certainly wrong) to 9" in qe
    assert tf.format(prompt=prompt, response="3").startswith(prompt + "3<|im_end|>")


def test_a_template_without_assistant_turns_is_refused():
    tokenizer = char_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}" \
                              "{% endfor %}"
    with pytest.raises(ConfigError, match="assistant"):
        verifier_schema(tokenizer, config(chat=True))
