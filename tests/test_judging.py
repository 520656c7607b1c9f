"""Verifier quality (within-question AUC, pick precision, sample accuracy) and the standard errors of U."""

import math

import pytest

from sirt.stages.judging import verifier_quality, within_question_auc
from sirt.stages.samples import Sample
from sirt.stages.uncertainty import solver_verifier_gap, standard_error


def test_auc_counts_pairs_within_a_question_only():
    # question 1: right 0.9 beats both wrongs, right 0.2 beats none; question 2 ties once
    scores = [[0.9, 0.5, 0.2, 0.3], [0.4, 0.4], [0.1, 0.9]]
    correct = [[True, False, True, False], [True, False], [True, True]]  # question 3: all right, says nothing
    assert within_question_auc(scores, correct) == pytest.approx((2 + 0 + 0.5) / (4 + 1))


def test_auc_is_one_half_for_a_constant_verifier_and_nan_without_pairs():
    assert within_question_auc([[0.7] * 4], [[True, False, False, True]]) == 0.5
    assert math.isnan(within_question_auc([[0.7, 0.1]], [[True, True]]))


def test_a_verifier_that_ranks_across_questions_only_is_at_chance_within_them():
    # scores follow how easy the question is, not the answer: AUC over pooled samples would be high
    scores = [[0.9, 0.9], [0.1, 0.1]]
    correct = [[True, False], [False, True]]
    assert within_question_auc(scores, correct) == 0.5


def test_quality_reads_pick_and_sample_accuracy_from_records():
    records = [{"scores": [0.9, 0.2], "correct": [True, False], "pick": 0},
               {"scores": [0.6, 0.7], "correct": [False, False], "pick": 1},
               {"scores": [0.1, 0.2], "correct": [True, False], "pick": None}]
    q = verifier_quality(records)
    assert q["pick_precision"] == 0.5 and q["sample_acc"] == pytest.approx(2 / 6)
    assert q["verifier_auc"] == pytest.approx(1 / 2)  # question 1 right above wrong, question 3 wrong above right


def test_standard_errors_of_U_s_and_U_v_are_over_prompts():
    solver = [[Sample("a", 2, -1.0), Sample("b", 2, -3.0)], [Sample("c", 2, -4.0), Sample("d", 2, -6.0)]]
    gap = solver_verifier_gap(solver, [solver[0][0], solver[1][0]])
    assert gap["U_s_se"] == pytest.approx(standard_error([2.0, 5.0])) == pytest.approx(1.5)
    assert gap["U_v_se"] == pytest.approx(standard_error([1.0, 4.0])) == pytest.approx(1.5)
    assert math.isnan(standard_error([1.0]))
