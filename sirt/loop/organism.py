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
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.defaults import option
from sirt.config.errors import InputError
from sirt.config.schema import DatasetSchema, GenerationSchema, ModelSchema, TeachSchema, TrainerSchema, VerifierSchema
from sirt.models.load import ALPHABET, char_tokenizer, load_named, load_pretrained, save, tiny_llama
from sirt.runs.files import read_jsonl, to_jsonl
from sirt.stages.generation import sample
from sirt.stages.judging import verifier_quality
from sirt.stages.selection import select
from sirt.stages.training import sft
from sirt.stages.verification import Verifier, verification_prompt
from sirt.tasks import graph
from sirt.tasks.arithmetic import arithmetic_split, plain_layout, solve_chain
from sirt.tasks.problem import Problem
from sirt.tasks.registry import is_correct

log = logging.getLogger(__name__)
VERSION = 13  # bump when the teaching recipe changes, to invalidate caches


@dataclass(frozen=True)
class TeachingTask:
    """What teaching takes from a synthetic task, so that one recipe teaches every task.

    ``problems(n, dataset, seed)`` generates questions, ``solve(question, slip, space)`` writes a worked
    solution in which ``slip()`` decides each chance of the task's typical mistake and ``space()`` each
    harmless layout choice (a task without a scratchpad has none), and ``fields`` names the dataset
    fields that shape both (they enter the cache key).
    """

    problems: Callable[[int, DatasetSchema, int], list[Problem]]
    solve: Callable[[str, Callable[[], bool], Callable[[], bool]], str]
    fields: tuple[str, ...]


TASKS = {
    "arithmetic": TeachingTask(lambda n, ds, seed: arithmetic_split(n, ds.levels, ds.max_operand, seed),
                               solve_chain, ("levels", "max_operand", "prompt_template", "n_test", "seed")),
    "graph": TeachingTask(lambda n, ds, seed: graph.graph_split(n, ds.levels, ds.graph, seed),
                          lambda question, slip, space: graph.solve_path(question, slip),
                          ("name", "levels", "graph", "prompt_template", "n_test", "seed")),
}


def teaching_task(dataset: DatasetSchema) -> TeachingTask:
    """The task the organism is taught: the dataset's own if synthetic, else arithmetic (as it always was)."""
    return TASKS.get(dataset.name, TASKS["arithmetic"])


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sirt"


def verifier_formats() -> dict[str, VerifierSchema]:
    """The TF and QE prompt formats, read from the same files a run composes."""
    return {name: option("verifier", name, VerifierSchema) for name in ("tf", "qe")}


def teaching_settings() -> tuple[TrainerSchema, GenerationSchema]:
    """The SFT and sampling settings teaching starts from: the default files of their groups, as a run reads them."""
    return option("trainer", "default", TrainerSchema), option("generation", "default", GenerationSchema)


def gate_sampling() -> GenerationSchema:
    """How the gate samples the answers it judges: as the organism's rounds sample them (``generation/organism``).

    Phase 2 is taught on the full distribution (every kind of error it can make), but the gate asks
    whether the verifier can pick among the answers a run will draw; judged on the full distribution,
    the arithmetic slips the nucleus leaves out decide the verdict, and the same model passes on one
    draw of 16 samples and fails on the next.
    """
    return option("generation", "organism", GenerationSchema)


def qe_rating(response: str, problem: Problem, n_ratings: int) -> int:
    """QE label: the top rating for a correct answer; partial credit, below the middle, for
    a wrong one, by the share of its lines that agree with the reference scratchpad."""
    if is_correct(response, problem):
        return n_ratings - 1
    ours, ref = plain_layout(response).split(";"), problem.answer.split(";")
    agree = sum(a == b for a, b in zip(ours, ref))
    return int((n_ratings // 2 - 1) * agree / len(ref))


def solve_rows(
    problems: list[Problem], dataset: DatasetSchema, t: TeachSchema, rng: random.Random
) -> list[dict[str, str]]:
    """Worked solutions with a bad habit: each chance of the task's typical mistake (an arithmetic
    chain that applies its last operation once more, a graph path that jumps to the goal) is taken with
    probability ``t.slip_rate``, and each harmless layout choice (one more space) with probability ``t.layout_rate``.

    With a rate above 1/2 the mistake is the model's most likely continuation, so its
    greedy answers are wrong wherever the chance occurs, while correct steps stay among its
    samples — a solver that is systematically weak where a verifier can see the error.
    """
    slip = lambda: rng.random() < t.slip_rate  # noqa: E731
    space = lambda: rng.random() < t.layout_rate  # noqa: E731
    solve = teaching_task(dataset).solve
    return [{"prompt": dataset.prompt_template.format(question=p.question),
             "completion": solve(p.question, slip, space)} for p in problems]


def garble(response: str, rng: random.Random) -> str:
    """The response with one character replaced by a random printable one: the kind of rare,
    low-probability sample (``8- 8 #### 4``, ``#### J5``) a temperature-1 solver emits now and then."""
    i = rng.randrange(len(response))
    return response[:i] + rng.choice([c for c in ALPHABET if c != response[i]]) + response[i + 1 :]


def verify_rows(
    problems: list[Problem], responses: list[list[str]], dataset: DatasetSchema, rng: random.Random,
    garble_rate: float, own_errors: int,
) -> list[dict[str, str]]:
    """TF and QE verdicts on the model's own responses, in pairs from the same question.

    Training the verifier on its own solver's mistakes (labelled by the ground truth) is what
    makes it a better judge than a solver: it learns the errors it actually makes. Each question
    teaches up to ``1 + own_errors`` pairs: its habit answer (the task's typical mistake, whether or not
    this draw made it) and ``own_errors`` other wrong answers of its own samples, each next to a right answer of
    the same question (its own, else the reference solution). So the question alone (how hard it
    looks) tells the verdict nothing: only the response does, which is what Best-of-N needs to tell
    its N apart. With probability ``garble_rate`` a wrong answer is replaced by a garbled copy of
    its right partner (:func:`garble`, the lowest rating whatever its last number): a verifier never
    shown such samples scores them at random, and Best-of-N then trains on garbage.
    """
    formats = verifier_formats()
    solve = teaching_task(dataset).solve
    chosen = []
    for problem, rs in zip(problems, responses):
        verdicts = {r: is_correct(r, problem) for r in sorted(set(rs))}  # grade each distinct answer once
        good = [r for r, ok in verdicts.items() if ok] or [problem.answer]
        habit = solve(problem.question, lambda: True, lambda: False)
        others = [r for r, ok in verdicts.items() if not ok and plain_layout(r) != habit]
        bad = ([habit] if not is_correct(habit, problem) else []) + rng.sample(others, min(own_errors, len(others)))
        for wrong in bad:
            right = rng.choice(good)
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
    settings = [asdict(s) for s in (*teaching_settings(), gate_sampling())]
    blob = json.dumps([VERSION, asdict(model_cfg.tiny), asdict(model_cfg.teach), task, formats, settings, unseen],
                      sort_keys=True, default=asdict)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def gate_problems(n: int, dataset: DatasetSchema, seed: int, held_out: set[str]) -> list[Problem]:
    """The gate's questions: ``n`` fresh draws of the teaching task (its own seed stream), outside the test split.

    Drawn like the run's train split, so the gate measures the verifier where the run will use it;
    the task's space is small, so a question may also have been a teaching question, but every
    sample the gate judges is new.
    """
    return [p for p in teaching_task(dataset).problems(2 * n + 64, dataset, seed + 1_000_003)
            if p.question not in held_out][:n]


def judge(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problems: list[Problem],
          dataset: DatasetSchema, n: int) -> dict[str, dict[str, float]]:
    """Verifier quality (:mod:`sirt.stages.judging`) of both formats on ``n`` fresh samples of each question."""
    prompts = [dataset.prompt_template.format(question=p.question) for p in problems]
    samples = sample(model, tokenizer, prompts, gate_sampling(), n=n, desc="teach: gate")
    quality = {}
    for name, fmt in verifier_formats().items():
        flat = Verifier(tokenizer, fmt).score(model, [(p, s.text) for p, row in zip(prompts, samples) for s in row],
                                              desc=f"teach: gate {name}")
        scores = [flat[i * n : (i + 1) * n] for i in range(len(prompts))]
        quality[name] = verifier_quality(select(prompts, problems, samples, scores, fmt.sigma))
    return quality


def gate_failures(quality: dict[str, dict[str, float]], t: TeachSchema) -> list[str]:
    """What keeps a taught verifier out of a run: a within-question AUC or a Best-of-N lift below the bar."""
    failures = []
    for name, q in quality.items():
        lift = q["pick_precision"] - q["sample_acc"]
        if not q["verifier_auc"] >= t.gate_auc:  # nan (no question with right and wrong answers) fails too
            failures.append(f"{name} within-question AUC {q['verifier_auc']:.3f} < {t.gate_auc}")
        if not lift >= t.gate_lift:
            failures.append(f"{name} pick precision {q['pick_precision']:.3f} is {lift:+.3f} over sample accuracy "
                            f"{q['sample_acc']:.3f} (needs {t.gate_lift:+.2f})")
    return failures


def verification_course(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, verify_set: list[Problem],
                        solve_set: list[Problem], dataset: DatasetSchema, generation: GenerationSchema,
                        t: TeachSchema, rng: random.Random) -> tuple[list[dict], list[dict], float]:
    """Phase 2's rows: verdicts on the model's own sampled answers, with worked solutions replayed among them
    (``teach.replay_fraction``); also the verdicts alone and the solver's accuracy on those samples."""
    prompts = [dataset.prompt_template.format(question=p.question) for p in verify_set]
    samples = sample(model, tokenizer, prompts, generation, n=t.verify_samples, desc="teach: sample")
    responses = [[s.text for s in row] for row in samples]
    verdicts = verify_rows(verify_set, responses, dataset, rng, t.garble_rate, t.own_errors)
    n_replay = int(len(verdicts) * t.replay_fraction / (1 - t.replay_fraction))
    rows = verdicts + solve_rows(rng.choices(solve_set, k=n_replay), dataset, t, rng)
    accuracy = sum(is_correct(r, p) for p, rs in zip(verify_set, responses) for r in rs) / (
        len(responses) * t.verify_samples)
    return rows, verdicts, accuracy


def teaching_sets(dataset: DatasetSchema, t: TeachSchema, held_out: set[str]) -> tuple[list[Problem], list[Problem]]:
    """Phase 1's and phase 2's questions: the teaching seed's draws of the task, less the run's own questions."""
    n_teach = t.solve_problems + t.verify_problems
    pool = [p for p in teaching_task(dataset).problems(n_teach, dataset, t.seed) if p.question not in held_out]
    if len(pool) <= t.solve_problems:
        raise InputError(f"model.teach.solve_problems={t.solve_problems}: of {n_teach} teaching draws only {len(pool)} "
                         "fall outside the run's train and test questions, none left for phase 2's verify_problems; "
                         "draw from a larger task (dataset.levels, dataset.max_operand) or teach on fewer problems")
    return pool[: t.solve_problems], pool[t.solve_problems :]


def teach(model_cfg: ModelSchema, dataset: DatasetSchema,
          held_out: set[str]) -> tuple[PreTrainedModel, dict, dict[str, list[dict[str, str]]]]:
    """Build the tiny LM, teach it to solve (phase 1), to judge its own answers (phase 2), and gate
    the verifier on held-out teaching questions (more phase-2 steps while it falls short).

    Returns the model, the teaching stats (``gate`` holds every measurement, ``passed`` the verdict)
    and the rows the rounds may replay (:data:`REPLAYS`): phase 1's worked solutions and phase 2's verdicts.
    """
    t = model_cfg.teach
    rng = random.Random(t.seed)
    tokenizer = char_tokenizer()
    model = tiny_llama(model_cfg.tiny, len(tokenizer), seed=t.seed)
    solve_set, verify_set = teaching_sets(dataset, t, held_out)
    gate_set = gate_problems(t.gate_problems, dataset, t.seed, held_out)
    trainer, generation = teaching_settings()

    def phase(rows: list[dict[str, str]], steps: int, lr: float) -> dict:
        schedule = replace(trainer, lr=lr, max_steps=steps, batch_size=t.batch_size, lr_scheduler="cosine",
                           warmup_steps=max(1, steps // 20), weight_decay=0.01, logging_steps=50)
        nonlocal model
        model, stats = sft(model, tokenizer, rows, schedule, seed=t.seed, lora=None)
        return stats

    log.info("teaching the organism to solve: %d problems, %d steps (once; cached)", len(solve_set), t.solve_steps)
    solutions = solve_rows(solve_set, dataset, t, rng)
    stats = {"solve": phase(solutions, t.solve_steps, t.lr)}
    rows, verdicts, stats["solver_accuracy_on_teaching_samples"] = verification_course(
        model, tokenizer, verify_set, solve_set, dataset, generation, t, rng)
    log.info("teaching the organism to verify: %d verdicts on its own answers, %d steps", len(verdicts),
             t.verify_steps)
    stats["verify"], stats["gate"], failures = [phase(rows, t.verify_steps, t.lr)], [], []
    for extension in range(t.gate_extensions + 1 if t.gate else 0):
        if extension:
            log.info("verifier below the gate (%s): %d more steps", "; ".join(failures), t.gate_steps)
            stats["verify"].append(phase(rows, t.gate_steps, t.lr * t.gate_lr_scale))
        quality = judge(model, tokenizer, gate_set, dataset, t.gate_samples)
        failures = gate_failures(quality, t)
        stats["gate"].append(quality)
        if not failures:
            break
    stats["passed"], stats["failures"] = not failures, failures
    return model, stats, {"solver_replay": solutions, "verifier_replay": verdicts}


def gate_message(stats: dict, path: Path) -> str:
    """The one line that refuses an organism whose verifier did not pass the gate."""
    return (f"the organism's verifier failed its teaching gate after {len(stats['gate']) - 1} extension(s): "
            f"{'; '.join(stats['failures'])}. A verifier at chance would train its own mistakes in. Try another "
            f"model.teach.seed or more model.teach.verify_steps (the failed organism is kept at {path})")


def organism_path(model_cfg: ModelSchema, dataset: DatasetSchema, held_out: set[str]) -> Path:
    return cache_root() / "organism" / organism_key(model_cfg, dataset, held_out)


def teaching_stats(path: Path) -> dict:
    """What teaching measured (``teaching.json`` of a cached organism): the gate's figures among them."""
    return json.loads((path / "teaching.json").read_text())


def gate_summary(path: Path) -> dict[str, float]:
    """The gate's last measurement of a cached organism, as W&B summary keys (``organism/qe/verifier_auc``, ...)."""
    gate = teaching_stats(path)["gate"] or [{}]
    return {f"organism/{fmt}/{k}": v for fmt, q in gate[-1].items() for k, v in q.items()}


REPLAYS = {"solver_replay": "solutions.jsonl", "verifier_replay": "verdicts.jsonl"}  # trainer field: cached rows


def replay_rows(path: Path, field: str) -> list[dict[str, str]]:
    """The teaching rows of a cached organism that ``trainer.<field>`` replays (:data:`REPLAYS`)."""
    return read_jsonl(path / REPLAYS[field])


def load_model(
    cfg: ModelSchema, dataset: DatasetSchema, held_out: set[str]
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The round-0 model of a run: a checkpoint by name/path, or the taught organism."""
    return load_named(cfg) if cfg.name_or_path else load_organism(cfg, dataset, held_out)


def load_organism(
    model_cfg: ModelSchema, dataset: DatasetSchema, held_out: set[str]
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The taught organism from the cache, teaching it first if this config has never been seen.

    An organism whose verifier failed the gate is cached too (teaching is minutes of work) but
    never enters a run: loading it raises the gate's message again, at once.
    """
    path = organism_path(model_cfg, dataset, held_out)
    if not (path / "config.json").exists():
        model, stats, replays = teach(model_cfg, dataset, held_out)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save(model, char_tokenizer(), tmp)
        (tmp / "teaching.json").write_text(json.dumps(stats, indent=2))
        for field, rows in replays.items():
            (tmp / REPLAYS[field]).write_text(to_jsonl(rows))
        shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)  # atomic: a killed teaching never leaves a half-written cache entry
        log.info("organism cached at %s", path)
    stats = teaching_stats(path)
    if not stats.get("passed", False):
        raise InputError(gate_message(stats, path))
    for name, q in (stats["gate"] or [{}])[-1].items():
        log.info("organism's %s verifier on held-out teaching questions: within-question AUC %.3f, pick precision "
                 "%.3f vs sample accuracy %.3f", name, q["verifier_auc"], q["pick_precision"], q["sample_acc"])
    return load_pretrained(path, model_cfg)
