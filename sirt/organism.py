"""The embedded model organism: a tiny LM taught to solve imperfectly and to verify well.

Self-improvement needs a model whose verifier is better than its solver. We build one
deliberately, in two phases with the same SFT code a round uses: a short course of worked
solutions (so solving stays imperfect), then verdicts on the model's *own* answers, labelled
by the ground truth, in the TF and QE formats of ``conf/verifier`` (so it learns to judge the
very mistakes it makes). The result is
cached by a hash of everything that shapes it, in ``$XDG_CACHE_HOME/sirt`` (else
``~/.cache/sirt``), so every later run starts in seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt import data, graph, models
from sirt.config import DatasetSchema, GenerationSchema, ModelSchema, TrainerSchema, VerifierSchema
from sirt.generation import sample
from sirt.training import sft
from sirt.verification import verification_prompt

log = logging.getLogger(__name__)
CONF = Path(__file__).resolve().parent.parent / "conf"
VERSION = 7  # bump when the teaching recipe changes, to invalidate caches


@dataclass(frozen=True)
class TeachingTask:
    """What teaching takes from a synthetic task, so that one recipe teaches every task.

    ``problems(n, dataset, seed)`` generates questions, ``solve(question, slip)`` writes a worked
    solution in which ``slip()`` decides each chance of the task's typical mistake, and
    ``fields`` names the dataset fields that shape both (they enter the cache key).
    """

    problems: Callable[[int, DatasetSchema, int], list[data.Problem]]
    solve: Callable[[str, Callable[[], bool]], str]
    fields: tuple[str, ...]


TASKS = {
    "arithmetic": TeachingTask(lambda n, ds, seed: data.arithmetic_split(n, ds.levels, ds.max_operand, seed),
                               data.solve_chain, ("levels", "max_operand", "prompt_template", "n_test", "seed")),
    "graph": TeachingTask(lambda n, ds, seed: graph.graph_split(n, ds.levels, ds.graph, seed),
                          graph.solve_path, ("name", "levels", "graph", "prompt_template", "n_test", "seed")),
}


def teaching_task(dataset: DatasetSchema) -> TeachingTask:
    """The task the organism is taught: the dataset's own if synthetic, else arithmetic (as it always was)."""
    return TASKS.get(dataset.name, TASKS["arithmetic"])


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sirt"


def verifier_formats() -> dict[str, VerifierSchema]:
    """The TF and QE prompt formats, read from the same files a run composes."""
    return {
        name: OmegaConf.to_object(OmegaConf.merge(VerifierSchema, OmegaConf.load(CONF / "verifier" / f"{name}.yaml")))
        for name in ("tf", "qe")
    }


def qe_rating(response: str, problem: data.Problem, n_ratings: int) -> int:
    """QE label: the top rating for a correct answer; partial credit, below the middle, for
    a wrong one, by the share of its lines that agree with the reference scratchpad."""
    if data.is_correct(response, problem):
        return n_ratings - 1
    ours, ref = response.split(";"), problem.answer.split(";")
    agree = sum(a == b for a, b in zip(ours, ref))
    return int((n_ratings // 2 - 1) * agree / len(ref))


def solve_rows(
    problems: list[data.Problem], dataset: DatasetSchema, slip_rate: float, rng: random.Random
) -> list[dict[str, str]]:
    """Worked solutions with a bad habit: each chance of the task's typical mistake (an arithmetic
    chain whose last operation is skipped, a graph path that jumps to the goal) is taken with probability ``slip_rate``.

    With a rate above 1/2 the mistake is the model's most likely continuation, so its
    greedy answers are wrong wherever the chance occurs, while correct steps stay among its
    samples — a solver that is systematically weak where a verifier can see the error.
    """
    slip = lambda: rng.random() < slip_rate  # noqa: E731
    solve = teaching_task(dataset).solve
    return [{"prompt": dataset.prompt_template.format(question=p.question),
             "completion": solve(p.question, slip)} for p in problems]


def garble(response: str, rng: random.Random) -> str:
    """The response with one character replaced by a random printable one: the kind of rare,
    low-probability sample (``8- 8 #### 4``, ``#### J5``) a temperature-1 solver emits now and then."""
    i = rng.randrange(len(response))
    return response[:i] + rng.choice([c for c in models.ALPHABET if c != response[i]]) + response[i + 1 :]


def verify_rows(
    problems: list[data.Problem], responses: list[list[str]], dataset: DatasetSchema, rng: random.Random,
    garble_rate: float = 0.0,
) -> list[dict[str, str]]:
    """TF and QE verdicts on the model's own responses, in pairs from the same question.

    Training the verifier on its own solver's mistakes (labelled by the ground truth) is what
    makes it a better judge than a solver: it learns the errors it actually makes. Each question
    gives as many right as wrong answers, so the question alone (how hard it looks) tells the
    verdict nothing: only the response does, which is what Best-of-N needs to tell its N apart.
    With probability ``garble_rate`` a wrong answer of a pair is replaced by a garbled copy of its
    right partner (:func:`garble`, the lowest rating whatever its last number): a verifier never
    shown such samples scores them at random, and Best-of-N, which takes the one accepted sample
    of a question, then trains on garbage.
    """
    formats = verifier_formats()
    chosen = []
    for problem, rs in zip(problems, responses):
        verdicts = {r: data.is_correct(r, problem) for r in sorted(set(rs))}  # grade each distinct answer once
        good, bad = [r for r, ok in verdicts.items() if ok], [r for r, ok in verdicts.items() if not ok]
        n = min(len(good), len(bad))
        for right, wrong in zip(rng.sample(good, n), rng.sample(bad, n)):
            garbled = rng.random() < garble_rate
            wrong = garble(right, rng) if garbled else wrong
            chosen += [(problem, right, True, False), (problem, wrong, False, garbled)]
    rows = []
    tf, qe = formats["tf"], formats["qe"]
    for problem, response, correct, garbled in chosen:
        prompt = dataset.prompt_template.format(question=problem.question)
        rating = 0 if garbled else qe_rating(response, problem, len(qe.ratings))
        rows.append({"prompt": verification_prompt(tf, prompt, response),
                     "completion": tf.words[0] if correct else tf.words[1]})
        rows.append({"prompt": verification_prompt(qe, prompt, response), "completion": qe.ratings[rating]})
    return rows


def organism_key(model_cfg: ModelSchema, dataset: DatasetSchema, held_out: set[str]) -> str:
    """Hash of everything that shapes the taught organism, the questions it must never see included."""
    formats = {k: asdict(v) for k, v in verifier_formats().items()}
    task = {k: getattr(dataset, k) for k in teaching_task(dataset).fields}
    unseen = hashlib.sha256("\n".join(sorted(held_out)).encode()).hexdigest()
    blob = json.dumps([VERSION, asdict(model_cfg.tiny), asdict(model_cfg.teach), task, formats, unseen],
                      sort_keys=True, default=asdict)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def teach(model_cfg: ModelSchema, dataset: DatasetSchema, held_out: set[str]) -> tuple[PreTrainedModel, dict]:
    """Build the tiny LM, teach it to solve (phase 1) and then to judge its own answers (phase 2),
    with the round's own SFT code."""
    t = model_cfg.teach
    rng = random.Random(t.seed)
    tokenizer = models.char_tokenizer()
    model = models.tiny_llama(model_cfg.tiny, len(tokenizer), seed=t.seed)
    pool = [p for p in teaching_task(dataset).problems(t.solve_problems + t.verify_problems, dataset, t.seed)
            if p.question not in held_out]
    solve_set, verify_set = pool[: t.solve_problems], pool[t.solve_problems :]

    def phase(rows: list[dict[str, str]], steps: int) -> dict:
        schedule = TrainerSchema(lr=t.lr, max_steps=steps, batch_size=t.batch_size, lr_scheduler="cosine",
                                 warmup_steps=max(1, steps // 20), weight_decay=0.01, logging_steps=50)
        nonlocal model
        model, stats = sft(model, tokenizer, rows, schedule, seed=t.seed, lora=None)
        return stats

    log.info("teaching the organism to solve: %d problems, %d steps (once; cached)", len(solve_set), t.solve_steps)
    stats = {"solve": phase(solve_rows(solve_set, dataset, t.slip_rate, rng), t.solve_steps)}
    prompts = [dataset.prompt_template.format(question=p.question) for p in verify_set]
    samples = sample(model, tokenizer, prompts, GenerationSchema(), n=t.verify_samples, desc="teach: sample")
    responses = [[s.text for s in row] for row in samples]
    rows = verify_rows(verify_set, responses, dataset, rng, t.garble_rate)
    n_replay = int(len(rows) * t.replay_fraction / (1 - t.replay_fraction))
    replay = solve_rows(rng.choices(solve_set, k=n_replay), dataset, t.slip_rate, rng)
    log.info("teaching the organism to verify: %d verdicts on its own answers, %d steps", len(rows), t.verify_steps)
    stats["verify"] = phase(rows + replay, t.verify_steps)
    stats["solver_accuracy_on_teaching_samples"] = sum(
        data.is_correct(r, p) for p, rs in zip(verify_set, responses) for r in rs) / (len(responses) * t.verify_samples)
    return model, stats


def load_organism(
    model_cfg: ModelSchema, dataset: DatasetSchema, held_out: set[str]
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The taught organism from the cache, teaching it first if this config has never been seen."""
    path = cache_root() / "organism" / organism_key(model_cfg, dataset, held_out)
    if not (path / "config.json").exists():
        model, stats = teach(model_cfg, dataset, held_out)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        models.save(model, models.char_tokenizer(), tmp)
        (tmp / "teaching.json").write_text(json.dumps(stats, indent=2))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)  # atomic: a killed teaching never leaves a half-written cache entry
        log.info("organism cached at %s", path)
    return models.load_pretrained(path, model_cfg)
