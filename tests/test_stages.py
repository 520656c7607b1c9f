"""Each stage of a round on hand-built inputs."""

from __future__ import annotations

import itertools
import math
import random

import pytest
import torch

from sirt.config.defaults import default
from sirt.models.load import char_tokenizer
from sirt.models.verdicts import first_token_ids, qe_scores, tf_scores
from sirt.stages import training
from sirt.stages.evaluation import mean_pass_at_k, pass_at_k
from sirt.stages.samples import Sample
from sirt.stages.selection import best_of_n, verifier_choice
from sirt.stages.training import CHECKPOINTING_MIN_PARAMS, gradient_checkpointing
from sirt.stages.uncertainty import solver_verifier_gap
from sirt.tasks.arithmetic import arithmetic_problem, plain_layout, solve_chain
from sirt.tasks.problem import Problem, extract_answer
from sirt.tasks.registry import is_correct
from sirt.tasks.rows import rows_to_problems


def test_best_of_n_takes_lowest_normalised_nll_among_accepted():
    scores = [0.9, 0.2, 0.7, 0.6]
    nll = [10.0, 1.0, 9.0, 4.0]
    lengths = [10, 10, 3, 2]  # per token: 1.0, 0.1 (rejected), 3.0, 2.0
    assert best_of_n(scores, nll, lengths, sigma=0.5) == 0
    assert best_of_n(scores, nll, lengths, sigma=0.65) == 0
    assert best_of_n(scores, nll, lengths, sigma=0.0) == 1
    assert best_of_n(scores, nll, lengths, sigma=0.95) is None


def test_verifier_choice_falls_back_to_lowest_uncertainty_when_nothing_is_accepted():
    assert verifier_choice([0.1, 0.4, 0.3], [1.0, 5.0, 1.5], [1, 1, 3], sigma=0.5) == 2  # 1.5 / 3 tokens
    assert verifier_choice([0.1, 0.6, 0.9], [1.0, 5.0, 0.5], [1, 1, 1], sigma=0.5) == 2


def test_uncertainty_and_gap_from_known_logprobs():
    solver = [[Sample("a", 2, math.log(0.25)), Sample("a2", 2, math.log(0.5))],
              [Sample("b", 4, math.log(0.5)), Sample("b2", 1, math.log(0.125))]]
    verifier = [Sample("c", 1, math.log(0.5)), Sample("d", 2, math.log(1.0))]
    gap = solver_verifier_gap(solver, verifier)
    U_s = (math.log(4) + math.log(2) + math.log(2) + math.log(8)) / 4  # every sample of every prompt
    U_v = math.log(2) / 2
    assert gap["U_s"] == pytest.approx(U_s)
    assert gap["U_s_first"] == pytest.approx((math.log(4) + math.log(2)) / 2)  # paper 1's one-sample estimate
    assert gap["U_v"] == pytest.approx(U_v)
    assert gap["G"] == pytest.approx(U_s - U_v)
    assert gap["U_s_tok"] == pytest.approx((math.log(4) / 2 + math.log(2) / 2 + math.log(2) / 4 + math.log(8)) / 4)


def test_tf_score_from_known_logits():
    logits = torch.full((2, 6), -1e9)
    logits[0, [1, 2, 3]] = torch.log(torch.tensor([0.3, 0.1, 0.6]))  # true {1,2}, false {3}
    logits[1, [1, 3]] = torch.tensor([0.0, 0.0])
    s = tf_scores(logits, true_ids=[1, 2], false_ids=[3])
    assert s.tolist() == pytest.approx([0.4, 0.5], abs=1e-6)
    with pytest.raises(ValueError):
        tf_scores(logits, [1], [1])


def test_qe_score_is_expected_rating_scaled():
    logits = torch.full((1, 8), -1e9)
    logits[0, [4, 5, 6]] = torch.log(torch.tensor([0.2, 0.3, 0.5]))  # ratings 0, 1, 2
    assert qe_scores(logits, [4, 5, 6]).item() == pytest.approx(0.3 * 0.5 + 0.5 * 1.0, abs=1e-6)


def test_first_token_ids_on_char_tokenizer():
    tok = char_tokenizer()
    yes = first_token_ids(tok, "yes")
    assert tok.convert_tokens_to_ids("y") in yes and tok.convert_tokens_to_ids("Y") in yes
    assert set(yes).isdisjoint(first_token_ids(tok, "no"))


def brute_force_pass_at_k(correct: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(correct)), k))
    return sum(any(correct[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(5, 0, 1), (5, 2, 1), (6, 2, 3), (8, 5, 4), (4, 4, 4), (7, 1, 7)])
def test_pass_at_k_matches_brute_force(n, c, k):
    correct = [True] * c + [False] * (n - c)
    assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(correct, k))


def test_mean_pass_at_k_skips_k_above_n():
    assert set(mean_pass_at_k([[True, False], [False, False]], [1, 2, 4])) == {"1", "2"}


@pytest.mark.parametrize(
    "text,expected",
    [("so 3+4=7 #### 7", "7"), ("#### -12", "-12"), ("#### 1,234", "1234"), ("#### 5.0", "5"),
     ("#### 2.50", "2.5"), ("no answer", None), ("#### 3 then #### 4", "3")],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_arithmetic_problems_are_correct_and_levelled():
    rng = random.Random(0)
    for level in (1, 2, 3, 4, 5):
        for _ in range(50):
            p = arithmetic_problem(rng, level, 9)
            assert p.question.count("+") + p.question.count("-") == level
            assert int(p.target) == eval(p.question)
            assert is_correct(p.answer, p)
            assert not is_correct(p.answer.replace(f"#### {p.target}", f"#### {int(p.target) + 1}"), p)


def test_malformed_rows_are_named():
    with pytest.raises(ValueError, match="row 1"):
        rows_to_problems([{"question": "q", "answer": "#### 1"}, {"question": "q"}], "x.jsonl")
    with pytest.raises(ValueError, match="####"):
        rows_to_problems([{"question": "q", "answer": "42"}], "x.jsonl")


def test_the_habit_applies_the_last_operation_once_more():
    right, slipped = solve_chain("1+2+3+4"), solve_chain("1+2+3+4", slip=lambda: True)
    assert right == "3+3+4;6+4;10 #### 10" and slipped == "3+3+4;6+4;10+4;14 #### 14"  # the habit is the longer text
    assert solve_chain("7+9-8", slip=lambda: True) == "16-8;8 #### 8"  # two operations: no chance to slip
    assert solve_chain("5+1-3-3", slip=lambda: True) == "6-3-3;3-3;0 #### 0"  # no chance that goes below zero
    assert solve_chain("7+9") == "16 #### 16"


def test_layout_choices_change_no_line_and_no_answer():
    spaced = solve_chain("1+2+3+4", space=lambda: True)
    assert spaced == "3 +3 +4; 6 +4; 10  #### 10" and plain_layout(spaced) == solve_chain("1+2+3+4")
    assert solve_chain("1+2+3+4", slip=lambda: True, space=lambda: True) == "3 +3 +4; 6 +4; 10 +4; 14  #### 14"
    problem = Problem("1+2+3+4", solve_chain("1+2+3+4"), 3)
    assert is_correct(spaced, problem) and not is_correct("3 +3+4; 6+4;10 +4;14  #### 14", problem)


def test_qe_partial_credit_and_the_habit_ignore_layout():
    from sirt.loop.organism import qe_rating, verify_rows

    problem = Problem("1+2+3+4", solve_chain("1+2+3+4"), 3)
    assert qe_rating("3+3+4; 6+4;11  #### 11", problem, 10) == qe_rating("3+3+4;6+4;11 #### 11", problem, 10) == 2
    habit = "3+3 +4; 6+4;10 +4;14  #### 14"  # the habit in another layout is still the habit: no second wrong one
    rows = verify_rows([problem], [[solve_chain("1+2+3+4"), habit]], default("dataset"), random.Random(0), 0.0, 1)
    assert len([r for r in rows if r["prompt"].endswith("Correct? ")]) == 2


def test_verifier_is_taught_right_and_wrong_answers_of_the_same_question():
    from sirt.loop.organism import verify_rows

    mixed, solved = Problem("1+2+3+4", solve_chain("1+2+3+4"), 3), Problem("2+2", "#### 4", 1)
    unsolved = Problem("1+1+1+1", solve_chain("1+1+1+1"), 3)
    habit_free = Problem("5+2+1+1", solve_chain("5+2+1+1"), 3)
    responses = [["3+3+4;6+4;10 #### 10", "3+3+4;6+4;10 #### 10", "3+3+4;6+4;10+4;14 #### 14", "3+3+4;6+4;11 #### 11",
                  "3+3+4;6+4;7 #### 7"],
                 ["#### 4", "#### 4"],  # no wrong answer, and no habit at one operation: it teaches nothing
                 ["2+1+1;3+1;9 #### 9"],  # no right answer: the reference is its partner
                 [solve_chain("5+2+1+1")] * 2]  # all right: the habit answer is its wrong partner
    rows = verify_rows([mixed, solved, unsolved, habit_free], responses, default("dataset"), random.Random(0), 0.0, 1)
    tf = [(r["prompt"].split("\nA: ")[0], r["prompt"].split("\nA: ")[1].removesuffix("\nCorrect? "), r["completion"])
          for r in rows if r["prompt"].endswith("Correct? ")]
    assert not any("2+2" in q for q, _, _ in tf)
    mixed_tf = [(r, c) for q, r, c in tf if q == "Q: 1+2+3+4"]
    assert ("3+3+4;6+4;10+4;14 #### 14", "no") in mixed_tf and ("3+3+4;6+4;10 #### 10", "yes") in mixed_tf
    assert len(mixed_tf) == 4  # the habit and one other distinct wrong answer, each next to a right one
    assert ("Q: 1+1+1+1", solve_chain("1+1+1+1"), "yes") in tf
    assert ("Q: 5+2+1+1", solve_chain("5+2+1+1", slip=lambda: True), "no") in tf
    assert sum(c == "yes" for _, _, c in tf) == sum(c == "no" for _, _, c in tf)  # balanced within every question


def test_own_errors_sets_how_many_of_its_own_wrong_answers_a_question_teaches():
    from sirt.loop.organism import verify_rows

    problem = Problem("1+2+3+4", solve_chain("1+2+3+4"), 3)
    responses = [["3+3+4;6+4;10 #### 10", "3+3+4;6+4;11 #### 11", "3+3+4;6+4;7 #### 7", "3+3+4;5+4;9 #### 9"]]
    for k, n_wrong in ((0, 1), (1, 2), (2, 3), (5, 4)):  # the habit, then k of the 3 others (all of them at most)
        rows = verify_rows([problem], responses, default("dataset"), random.Random(0), 0.0, k)
        tf = [r["completion"] for r in rows if r["prompt"].endswith("Correct? ")]
        assert tf.count("no") == tf.count("yes") == n_wrong


def test_garbled_answers_are_taught_as_wrong_next_to_their_right_partner():
    from sirt.loop.organism import verify_rows

    problem = Problem("1+2+3+4", solve_chain("1+2+3+4"), 3)
    right = "3+3+4;6+4;10 #### 10"
    responses = [[right, "3+3+4;6+4;10+4;14 #### 14"]]
    rows = verify_rows([problem], responses, default("dataset"), random.Random(0), garble_rate=1.0, own_errors=1)
    tf = {r["prompt"].split("A: ", 1)[1].removesuffix("\nCorrect? "): r["completion"] for r in rows
          if r["prompt"].endswith("Correct? ")}
    assert len(tf) == 2 and tf[right] == "yes"
    garbled = next(r for r in tf if r != right)
    assert tf[garbled] == "no" and len(garbled) == len(right)
    assert sum(a != b for a, b in zip(garbled, right)) == 1  # one character replaced
    qe = [r["completion"] for r in rows if not r["prompt"].endswith("Correct? ")]
    assert sorted(qe) == ["0", "9"]  # top rating for the right answer, the lowest for its garbled copy


@pytest.mark.parametrize("setting,n_params,cuda,on", [
    ("auto", 8_000_000_000, True, True),  # an 8B model on a GPU: checkpointing keeps a round in memory
    ("auto", CHECKPOINTING_MIN_PARAMS, True, True),
    ("auto", CHECKPOINTING_MIN_PARAMS - 1, True, False),  # smaller models fit without it
    ("auto", 135_000_000, True, False),
    ("auto", 8_000_000_000, False, False),  # on a CPU it only costs time
    (True, 1_000_000, False, True),  # forced either way
    (False, 8_000_000_000, True, False),
])
def test_gradient_checkpointing_follows_the_model_size_and_device(setting, n_params, cuda, on):
    assert gradient_checkpointing(setting, n_params, cuda) is on


def test_one_process_never_trains_through_data_parallel(caplog):
    """Several GPUs visible and no distributed launch: the HF Trainer would wrap the model in nn.DataParallel
    (n_gpu > 1, a batch n_gpu times larger); sirt trains on one device and says so once."""
    from trl import SFTConfig

    args = SFTConfig(output_dir="unused", use_cpu=True, per_device_train_batch_size=16, report_to=[])
    args._n_gpu = 4  # what TrainingArguments computes on a host that shows 4 GPUs to one process
    assert args.train_batch_size == 64
    with caplog.at_level("WARNING"):
        training.one_device(args)
        training.one_device(args)
    assert args.n_gpu == 1 and args.train_batch_size == 16
    assert [r.message.count("torchrun") for r in caplog.records] == [1]


def test_verification_builds_no_kv_cache():
    """One forward per batch has no next step: a cache would only hold memory (28 GiB at batch 256 for 8B)."""
    from sirt.config.defaults import default
    from sirt.models.load import char_tokenizer, tiny_llama
    from sirt.stages.verification import Verifier

    tokenizer = char_tokenizer()
    model = tiny_llama(default("model.tiny", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                       len(tokenizer), seed=0).eval()
    caches = []
    model.register_forward_hook(lambda m, args, kwargs, out: caches.append(out.past_key_values), with_kwargs=True)
    Verifier(tokenizer, default("verifier", method="tf", words=["y", "n"])).score(model, [("1+1=", "2")] * 3)
    assert caches == [None]


def test_quieting_third_parties_keeps_download_bars():
    import huggingface_hub.utils

    from sirt.runs.tracker import quiet_third_party

    quiet_third_party()
    assert not huggingface_hub.utils.are_progress_bars_disabled()


def one_epoch(strategy: str, out: str) -> tuple[list[tuple[int, ...]], float]:
    """The rows (as ids) one epoch of a round's SFT dataloader shows, and the share of its tokens that are padding."""
    from sirt.models.load import tiny_llama

    tokenizer, rng = char_tokenizer(), random.Random(0)
    rows = [{"prompt": f"Q: {'1+' * rng.randint(1, 30)}1\nA: ", "completion": "1"} for _ in range(1024)]
    model = tiny_llama(default("model.tiny", hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                       len(tokenizer), seed=0)
    cfg = default("trainer", batch_size=16, sampling_strategy=strategy)
    batches = list(training.trainer(model, tokenizer, rows, cfg, seed=0, lora=None, output_dir=out,
                                    progress=False).get_train_dataloader())
    shown = [tuple(ids[mask.bool()].tolist()) for b in batches
             for ids, mask in zip(b["input_ids"], b["attention_mask"])]
    real = sum(b["attention_mask"].sum().item() for b in batches)
    return shown, 1 - real / sum(b["attention_mask"].numel() for b in batches)


def test_grouped_batches_pad_less_and_still_show_every_row_once(tmp_path):
    """``trainer.sampling_strategy=group_by_length``: an epoch shows the same rows as a random one, in batches of
    like length, so far fewer of its tokens are padding."""
    rows, padding = one_epoch("random", str(tmp_path))
    grouped_rows, grouped_padding = one_epoch("group_by_length", str(tmp_path))
    assert sorted(grouped_rows) == sorted(rows) and len(rows) == 1024 and grouped_rows != rows
    assert padding > 0.3 and grouped_padding < padding / 4


def test_replayed_teaching_makes_up_its_shares_of_a_round():
    from sirt.loop.trainer import with_replay

    picks = [{"prompt": f"p{i}", "completion": "pick"} for i in range(300)]
    pools = {"verifier_replay": [{"prompt": f"v{i}", "completion": "yes"} for i in range(1000)],
             "solver_replay": [{"prompt": f"s{i}", "completion": "work"} for i in range(1000)]}
    rows = with_replay(picks, pools, {"verifier_replay": 0.125, "solver_replay": 0.25}, random.Random(0))
    kinds = [r["completion"] for r in rows]
    assert rows[:300] == picks and (kinds.count("yes"), kinds.count("work")) == (60, 120)  # 480 rows: 1/8 and 1/4
    alone = with_replay(picks, pools, {"verifier_replay": 0.25, "solver_replay": 0.0}, random.Random(0))
    old = picks + random.Random(0).sample(pools["verifier_replay"], round(300 * 0.25 / 0.75))
    assert alone == old  # verdicts alone are drawn as before the solutions were replayed: old runs resume alike
    assert with_replay(picks, {}, {"verifier_replay": 0.25, "solver_replay": 0.25}, random.Random(0)) == picks
