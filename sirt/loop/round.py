"""One round of paper 1's loop: train model_t on round t-1's picks, then measure it and pick round t's data.

    model    = SFT(model, picks of round t-1 + external items of round t)   (t >= 1)
    samples  = N samples per prompt, with log-probs         -> U_s (mean over the N)
    scores   = the model verifies its own samples (TF or QE)
    picks    = Best-of-N among s >= sigma, lowest NLL/token -> U_v, acceptance
    accuracy = greedy on the test split; pass@k from the samples
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import defaultdict

import torch

from sirt.config.schema import Config
from sirt.models.prompts import solver_prompt
from sirt.plan.seeds import round_seed
from sirt.runs.records import MetricsRow, SelectionRecord
from sirt.runs.rundir import RunDir
from sirt.stages import evaluation, training
from sirt.stages.external import training_rows
from sirt.stages.generation import sampler
from sirt.stages.judging import verifier_quality
from sirt.stages.selection import select
from sirt.stages.uncertainty import solver_verifier_gap
from sirt.stages.verification import Verifier
from sirt.tasks.problem import Problem
from sirt.tasks.registry import is_correct


class Stopwatch:
    """Seconds per stage of a round (the ``seconds`` dict of metrics.jsonl)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        yield
        self.seconds[stage] += time.perf_counter() - start


def seed_round(seed: int, t: int) -> None:
    """Seed every generator from (seed, round), so a resumed round repeats an uninterrupted one."""
    s = round_seed(seed, t, "torch")
    random.seed(s)
    torch.manual_seed(s)


def one_round(t: int, model, tokenizer, verifier: Verifier, problems: list[Problem], test: list[Problem],
              config: Config, clock: Stopwatch) -> tuple[MetricsRow, list[SelectionRecord]]:
    """Measure model_t on the round's prompts and pick next round's data: (row, selections)."""
    gen = config.generation
    prompts = [solver_prompt(p.question, tokenizer, config) for p in problems]
    with clock("generate"):
        samples = sampler(gen)(model, tokenizer, prompts, gen, desc=f"round {t}: generate")
    with clock("verify"):
        pairs = [(p, s.text) for p, row in zip(prompts, samples) for s in row]
        flat = verifier.score(model, pairs, desc=f"round {t}: verify")
        N = gen.n_samples
        scores = [flat[i * N : (i + 1) * N] for i in range(len(prompts))]
    with clock("select"):
        records = select(prompts, problems, samples, scores, config.verifier.sigma)
        picks = [r for r in records if r["pick"] is not None]
    with clock("eval"):
        greedy = sampler(gen)(model, tokenizer, [solver_prompt(p.question, tokenizer, config) for p in test],
                        gen, n=1, greedy=True, desc=f"round {t}: eval")
        correct = [is_correct(g[0].text, p) for g, p in zip(greedy, test)]
    gap = solver_verifier_gap(samples, [row[r["verifier_choice"]] for row, r in zip(samples, records)])
    levels = [r["level"] for r in records]
    row: MetricsRow = {
        "round": t,
        "acc": evaluation.accuracy(correct),
        **evaluation.harness_accuracy([g[0].text for g in greedy], test),  # acc_strict, acc_flexible
        "acc_level": evaluation.level_accuracy(correct, [p.level for p in test]),
        "acceptance_level": evaluation.level_accuracy([r["pick"] is not None for r in records], levels),
        "n_selected_level": {str(lv): sum(r["pick"] is not None for r in records if r["level"] == lv)
                             for lv in sorted(set(levels))},
        "pass_at_k": evaluation.mean_pass_at_k([r["correct"] for r in records], gen.pass_k),
        **gap,
        "acceptance": len(picks) / len(records),
        **verifier_quality(records),
        "n_selected": len(picks),
        "tokens_generated": sum(s.n_tokens for row in samples for s in row),
    }
    return row, records


def round_rows(run: RunDir, config: Config, t: int, n_external: int, teacher) -> tuple[list[dict], int, random.Random]:
    """Round t's own SFT rows (round t-1's picks, ``n_external`` of them with external targets), the
    items used, and the round's rng. The rng comes from (seed, t) alone, so the rows of an earlier round
    can be rebuilt exactly as that round trained on them."""
    rng = random.Random(round_seed(config.seed, t, "train_rows"))
    rows, used = training_rows(run.selections(t - 1), n_external, config.external.source, rng, teacher)
    return rows, used, rng


def train_rows(run: RunDir, config: Config, t: int, ext: list[int], teacher) -> tuple[list[dict], int, random.Random]:
    """The rows that train model_t, round t's external items used, and round t's rng (it goes on to draw
    the replay). ``ext[s - 1]``: the external items of round s. With ``trainer.restart_from_base`` the rows
    of every earlier round come first, each with its own external items, as that round trained on them."""
    rows, used, rng = round_rows(run, config, t, ext[t - 1], teacher)
    if config.trainer.restart_from_base:  # STaR style: every round restarts on everything so far
        rows = [r for s in range(1, t) for r in round_rows(run, config, s, ext[s - 1], teacher)[0]] + rows
    return rows, used, rng


def train_model(model, tokenizer, run: RunDir, config: Config, t: int, ext: list[int], load_base, teacher,
                replay: list[dict[str, str]] = ()):
    """model_t: SFT on round t-1's picks (+ external items), or from the base on all rounds' rows so far.

    ``ext``: the external items of every round (``ext[t - 1]`` for round t); ``replay``: verdict rows
    mixed in as a share ``trainer.verifier_replay`` of the round's rows (the organism only; a deviation
    from paper 1, which trains on the picks alone).
    """
    rows, used, rng = train_rows(run, config, t, ext, teacher)
    if config.trainer.restart_from_base:
        model, _ = load_base()  # (model, tokenizer): the tokenizer is the run's own
    share = config.trainer.verifier_replay
    if share > 0 and rows and replay:
        rows = rows + rng.sample(list(replay), min(len(replay), round(len(rows) * share / (1 - share))))
    lora = config.model.lora if config.trainer.lora else None
    model, stats = training.sft(model, tokenizer, rows, config.trainer, seed=round_seed(config.seed, t, "sft"),
                                lora=lora, dtype=config.model.dtype, adapter_dir=run.adapter_dir(t))
    return model, {**stats, "ext_used": used, "n_train_rows": len(rows)}
