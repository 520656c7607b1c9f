"""One round of paper 1's loop: measure model_t and pick round t's data (the trainer, :mod:`sirt.loop.trainer`,
trains model_t on round t-1's picks first).

    samples  = N samples per prompt, with log-probs         -> U_s (mean over the N)
    probe    = a few samples re-scored by the model itself  -> backend_logprob_err (stops the run if too large)
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

from sirt.config.schema import Config, GenerationSchema
from sirt.loop.ranks import SOLO, World
from sirt.models.prompts import solver_prompt
from sirt.plan.seeds import round_seed
from sirt.runs.records import MetricsRow, SelectionRecord
from sirt.runs.rundir import RunDir
from sirt.stages import agreement, evaluation
from sirt.stages.backends import backend, sampler
from sirt.stages.external import training_rows
from sirt.stages.judging import verifier_quality
from sirt.stages.samples import Sample
from sirt.stages.selection import select
from sirt.stages.uncertainty import solver_verifier_gap
from sirt.stages.verification import Verifier, verification_prompt
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


def generate(t: int, model, tokenizer, prompts: list[str], gen: GenerationSchema, world: World, seed: int,
             n: int | None = None, greedy: bool = False, desc: str = "generate") -> list[list[Sample]]:
    """The backend's samples of ``prompts``, over the ranks in the fixed chunks the backend asks for (so a
    prompt's samples depend on (seed, round, its chunk), never on the number of ranks)."""
    size = backend(gen).chunk_size(gen, len(prompts), world.size, n or gen.n_samples)

    def chunk(part: list[str], c: int) -> list[list[Sample]]:
        return sampler(gen)(model, tokenizer, part, gen, n=n, greedy=greedy, seed=seed, desc=f"round {t}: {desc}")

    return world.chunked(chunk, prompts, size, key=len, desc=f"round {t}: {desc} (chunks)")


def verify(t: int, model, verifier: Verifier, prompts: list[str], samples: list[list[Sample]],
           world: World) -> list[list[float]]:
    """The self-verifier's score of every sample, per prompt; ranks take whole batches of the one-process
    order (by length), so every batch, and every score, is the one a single process computes."""
    pairs = [(p, s.text) for p, row in zip(prompts, samples) for s in row]
    flat = world.chunked(lambda part, c: verifier.score(model, part, desc=f"round {t}: verify"), pairs,
                         verifier.cfg.batch_size, key=lambda pair: len(verification_prompt(verifier.cfg, *pair)),
                         desc=f"round {t}: verify (batches)")
    N = len(samples[0]) if samples else 0
    return [flat[i * N : (i + 1) * N] for i in range(len(prompts))]


def one_round(t: int, model, tokenizer, verifier: Verifier, problems: list[Problem], test: list[Problem],
              config: Config, clock: Stopwatch, world: World = SOLO) -> tuple[dict, list[SelectionRecord]]:
    """Measure model_t on the round's prompts and pick next round's data: (measurements, selections)."""
    gen, seed = config.generation, round_seed(config.seed, t, "generate")
    prompts = [solver_prompt(p.question, tokenizer, config) for p in problems]
    with clock("generate"):
        samples = generate(t, model, tokenizer, prompts, gen, world, seed)
    with clock("probe"):  # the sampler's log-probs against the training model's, before anything reads them
        probe_err = agreement.logprob_err(model, tokenizer, prompts, samples, gen.probe_samples)
        agreement.check(t, probe_err, agreement.tolerance(gen.probe_tolerance, model.dtype), gen.backend)
    with clock("verify"):
        scores = verify(t, model, verifier, prompts, samples, world)
    with clock("select"):
        records = select(prompts, problems, samples, scores, config.verifier.sigma)
    with clock("eval"):
        questions = [solver_prompt(p.question, tokenizer, config) for p in test]
        greedy = [g[0].text for g in generate(t, model, tokenizer, questions, gen, world, seed, n=1, greedy=True,
                                              desc="eval")]
    return measurements(records, samples, greedy, test, gen.pass_k, probe_err), records


def measurements(records: list[SelectionRecord], samples: list[list[Sample]], greedy: list[str],
                 test: list[Problem], pass_k: list[int], probe_err: float) -> dict:
    """What a round measures of model_t: accuracy (of the greedy answers to the test questions), pass@k,
    U_s, U_v, G, acceptance, the verifier's quality."""
    correct = [is_correct(text, p) for text, p in zip(greedy, test)]
    gap = solver_verifier_gap(samples, [row[r["verifier_choice"]] for row, r in zip(samples, records)])
    levels, picked = [r["level"] for r in records], [r["pick"] is not None for r in records]
    return {
        "acc": evaluation.accuracy(correct),
        **evaluation.harness_accuracy(greedy, test),  # acc_strict, acc_flexible
        "acc_level": evaluation.level_accuracy(correct, [p.level for p in test]),
        "acceptance_level": evaluation.level_accuracy(picked, levels),
        "n_selected_level": {str(lv): sum(p for p, lvl in zip(picked, levels) if lvl == lv)
                             for lv in sorted(set(levels))},
        "pass_at_k": evaluation.mean_pass_at_k([r["correct"] for r in records], pass_k),
        **gap,
        "acceptance": sum(picked) / len(records),
        **verifier_quality(records),
        "n_selected": sum(picked),
        "tokens_generated": sum(s.n_tokens for row in samples for s in row),
        "backend_logprob_err": probe_err,
    }


def round_row(t: int, measured: dict, trained: dict, eta: float, seconds: dict[str, float]) -> MetricsRow:
    """Round t's row of metrics.jsonl, the one place it is put together: what round t measured of model_t,
    what trained model_t (its share eta_t of the external budget, rows, loss), and the seconds per stage."""
    return {"round": t, **measured, "eta": eta, **trained, "seconds": dict(seconds)}  # type: ignore[typeddict-item]


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
