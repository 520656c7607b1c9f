"""``python -m sirt.bench``: how fast a sampling-bound round runs, against a naive baseline and the machine.

Self-improvement spends its time sampling N answers per question and scoring them. In one run on
one machine this app times

* every stage of a round (generate, verify, select, train, eval) with the very functions
  ``sirt.train`` calls (the fast path: batched sampling with the KV cache, log-probs from the
  sampling pass or, for large logits, one batched pass in chunks of positions, verification as
  batched forward passes of the last position, length bucketing);
* the naive path on a subset of the questions: one ``model.generate`` per sample, the log-prob
  recomputed by a second forward pass, and a verdict generated as free text and parsed;
* the machine's limit: the fastest large matmul (float32 on CPU, bf16 on GPU), against which
  generation is reported as a fraction of the FLOP bound;
* how the fast path's cost grows with the number of questions, N and the response length;
* peak memory: this process, the GPU, and a child ``python -m sirt.train`` run.

FLOPs of a forward pass over a sequence of n positions (documented in ``bench.json``)::

    2 * P_matmul * n  +  4 * L * d_attn * (1 + 2 + ... + n)

P_matmul counts every weight a token is multiplied by (all Linear layers, the output head
included; the embedding lookup is free), and position i attends to i positions in QK^T and AV
(2 FLOPs per multiply-add each) in every one of L layers of width d_attn.
Only useful tokens count: padding and the steps a finished sequence waits for others are waste.

Writes ``bench.json`` and ``bench.md`` (the tables) in the run directory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.entry import HydraCommand, refusals
from sirt.config.errors import ConfigError
from sirt.config.schema import Config
from sirt.loop.checks import check_adapter, validated
from sirt.loop.organism import load_model
from sirt.loop.round import Stopwatch, one_round, round_row, seed_round, train_rows
from sirt.loop.trainer import train_model
from sirt.models.prompts import solver_prompt, verifier_schema
from sirt.perf import logprob_pass
from sirt.perf.flops import (
    FLOP_FORMULA,
    ModelShape,
    generation_flops,
    matmul_flops_per_s,
    prompt_lengths,
    rates,
    verification_flops,
)
from sirt.perf.memory import peak_rss_mb, train_rss
from sirt.perf.naive import logprob_agreement, naive_round, verdict_agreement
from sirt.plan.curriculum import round_problems
from sirt.runs.files import write_atomic
from sirt.runs.rundir import RunDir
from sirt.runs.tracker import quiet_third_party
from sirt.stages.backends import sampler
from sirt.stages.samples import Sample
from sirt.stages.verification import Verifier, verification_prompt
from sirt.tasks.problem import Problem
from sirt.tasks.registry import load_splits

log = logging.getLogger("sirt.bench")


@dataclass
class ScalingSchema:
    """Points of the scaling table: one axis varied at a time around the round's settings."""

    base_questions: int
    questions: list[int]
    n_samples: list[int]
    max_new_tokens: list[int]


@dataclass
class LogprobPassSchema:
    """The teacher-forced pass at Llama 3's vocabulary (sirt.perf.logprob_pass): rows per point, tokens per row."""

    rows: list[int]
    steps: int


@dataclass
class BenchSchema:
    """The bench-only fields of ``conf/bench.yaml`` (the rest is a run's Config)."""

    naive_prompts: int
    verify_tokens: int
    clear_margin: float
    matmul_size: int
    matmul_repeats: int
    scaling: ScalingSchema
    train_rss: bool
    rss_limit_gb: float
    threads: int
    logprob_pass: LogprobPassSchema


def split_config(cfg: DictConfig) -> tuple[Config, BenchSchema]:
    """(run config, bench fields), each checked by its schema; raises ConfigError naming the field."""
    run_keys = [k for k in cfg if k != "bench"]
    config = validated(OmegaConf.masked_copy(cfg, run_keys))
    try:
        bench: BenchSchema = OmegaConf.to_object(OmegaConf.merge(BenchSchema, cfg.get("bench", {})))
    except OmegaConfBaseException as err:
        raise ConfigError(f"bench: {err}") from None
    if bench.naive_prompts < 1 or bench.verify_tokens < 1 or bench.matmul_repeats < 1:
        raise ConfigError("bench.naive_prompts, bench.verify_tokens and bench.matmul_repeats must be >= 1")
    return config, bench


def scaling_points(config: Config, s: ScalingSchema) -> list[tuple[str, int, int, int]]:
    """(axis, questions, N, max_new_tokens): one axis varied at a time."""
    gen = config.generation
    return ([("questions", q, gen.n_samples, gen.max_new_tokens) for q in s.questions]
            + [("N", s.base_questions, n, gen.max_new_tokens) for n in s.n_samples]
            + [("length", s.base_questions, gen.n_samples, m) for m in s.max_new_tokens])


def scaling_table(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, verifier: Verifier, prompts: list[str],
    config: Config, s: ScalingSchema,
) -> list[dict]:
    """Fast-path seconds of generate + verify at each point; a point shared by axes runs once.
    Questions beyond the split repeat it, so a point measures cost, not new data."""
    measured: dict[tuple[int, int, int], dict] = {}
    rows = []
    for axis, q, n, length in tqdm(scaling_points(config, s), desc="bench: scaling", leave=False):
        if (q, n, length) not in measured:
            gen = dataclasses.replace(config.generation, n_samples=n, max_new_tokens=length)
            qs = [prompts[i % len(prompts)] for i in range(q)]
            start = time.perf_counter()
            out = sampler(gen)(model, tokenizer, qs, gen, desc="scaling: generate")
            generate_s = time.perf_counter() - start
            verifier.score(model, [(p, x.text) for p, row in zip(qs, out) for x in row], desc="scaling: verify")
            verify_s = time.perf_counter() - start - generate_s
            tokens = sum(x.n_tokens for row in out for x in row)
            measured[q, n, length] = {
                "samples": q * n, "tokens": tokens, "mean_tokens": tokens / (q * n), "generate_s": generate_s,
                "verify_s": verify_s, "samples_per_s": q * n / (generate_s + verify_s),
                "tokens_per_s": tokens / generate_s}
        rows.append({"axis": axis, "questions": q, "N": n, "max_new_tokens": length, **measured[q, n, length]})
    return rows


def markdown(rows: list[dict], columns: list[str]) -> str:
    """A Markdown table; floats to 3 significant digits."""
    def cell(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    return "\n".join(lines + ["| " + " | ".join(cell(r[c]) for c in columns) + " |" for r in rows])


def summary_tables(report: dict) -> str:
    """bench.md: the stage seconds, the two paths side by side, and the scaling table."""
    stages = [{"stage": k, "seconds": v, "share": v / sum(report["stages"].values())}
              for k, v in report["stages"].items()]
    paths = [{"path": p, "samples": report[p]["samples"], "samples/s": report[p]["samples_per_s"],
              "tokens/s": report[p]["tokens_per_s"], "FLOP fraction": report[p]["flop_fraction"]}
             for p in ("fast", "naive")]
    return "\n\n".join([
        f"fast / naive samples/s = {report['speedup']:.1f}x; generation at {report['flop_bound_fraction']:.2%} "
        f"of {report['machine']['flops_per_s'] / 1e9:.1f} GFLOP/s ({report['machine']['dtype']} matmul)",
        markdown(stages, ["stage", "seconds", "share"]),
        markdown(paths, ["path", "samples", "samples/s", "tokens/s", "FLOP fraction"]),
        markdown(report["scaling"], ["axis", "questions", "N", "max_new_tokens", "samples", "mean_tokens",
                                     "generate_s", "verify_s", "samples_per_s", "tokens_per_s"]),
    ]) + "\n"


def fast_round(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, verifier: Verifier, problems: list[Problem],
    test: list[Problem], config: Config, clock: Stopwatch,
) -> tuple[dict, list[dict]]:
    """Round 0 of ``sirt.train`` itself (generate, verify, select, eval into ``clock``): (row, records)."""
    warm_up = [solver_prompt(problems[0].question, tokenizer, config)]  # first-call costs belong to neither path
    sampler(config.generation)(model, tokenizer, warm_up, config.generation, n=1, desc="warm-up")
    seed_round(config.seed, 0)
    return one_round(0, model, tokenizer, verifier, problems, test, config, clock)


def fast_rates(
    tokenizer: PreTrainedTokenizerBase, verifier: Verifier, shape: ModelShape, prompts: list[str],
    records: list[dict], seconds: dict[str, float], peak: float,
) -> tuple[dict, list[list[Sample]]]:
    """The fast path's rates from the round's records, and its samples (for the agreement check)."""
    samples = [[Sample(t, n, -u) for t, n, u in zip(r["samples"], r["n_tokens"], r["nll"])] for r in records]
    report = rates(samples, {k: seconds[k] for k in ("generate", "verify")},
                   generation_flops(shape, prompt_lengths(tokenizer, prompts), samples), peak)
    texts = [verification_prompt(verifier.cfg, p, s.text) for p, row in zip(prompts, samples) for s in row]
    report["verify_flop_fraction"] = verification_flops(shape, tokenizer, texts) / seconds["verify"] / peak
    return report, samples


def naive_rates(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, verifier: Verifier, shape: ModelShape,
    prompts: list[str], fast_samples: list[list[Sample]], config: Config, b: BenchSchema, peak: float,
) -> tuple[dict, dict]:
    """The naive path on the first ``naive_prompts`` questions, and its agreement with the fast path."""
    k = min(b.naive_prompts, len(prompts))
    log.info("naive path on %d of %d questions (N = %d each)", k, len(prompts), config.generation.n_samples)
    naive = naive_round(model, tokenizer, prompts[:k], config.generation, verifier.cfg, b.verify_tokens)
    report = rates(naive.samples, naive.seconds, generation_flops(shape, prompt_lengths(tokenizer, prompts[:k]),
                                                                  naive.samples), peak)
    pairs = [(p, s.text) for p, row in zip(prompts, naive.samples) for s in row]
    fast_verdicts = verifier.score(model, pairs, desc="agreement: fast verdicts")
    agreement = {
        **logprob_agreement(model, tokenizer, prompts[:k], fast_samples[:k], config.generation.max_new_tokens),
        **verdict_agreement(fast_verdicts, [v for row in naive.verdicts for v in row], verifier.cfg.sigma,
                            b.clear_margin)}
    return report, agreement


def train_stage(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, run_dir: Path, config: Config,
                round0: tuple[dict, list[dict]], clock: Stopwatch) -> None:
    """Round 1's training on round 0's picks, by ``sirt.train``'s own code (it reads a run directory)."""
    run = RunDir(run_dir)
    run.commit_round(0, round_row(0, round0[0], {"ext_used": 0}, 0.0, clock.seconds), round0[1], {})
    with clock("train"):
        rows, _, _ = train_rows(run, config, 1, [0], teacher=None)
        train_model(model, tokenizer, rows, config, 1, run.adapter_dir(1))


def memory_report(model: PreTrainedModel, run_dir: Path, overrides: list[str], config: Config,
                  b: BenchSchema) -> dict:
    """Peak memory of the bench (RSS, and the GPU's allocator) and of a child ``sirt.train`` run."""
    cuda = model.device.type == "cuda"
    memory = {"bench_peak_rss_mb": peak_rss_mb(), "cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20
              if cuda else None}
    if b.train_rss:
        memory.update(train_rss(run_dir / "train_rss", overrides, config.rounds, b.threads))
        memory["train_rss_limit_mb"] = b.rss_limit_gb * 1024
        memory["train_under_limit"] = memory["train_peak_rss_mb"] < memory["train_rss_limit_mb"]
    return memory


def bench(config: Config, b: BenchSchema, run_dir: Path, overrides: list[str]) -> dict:
    """Everything in one process on one machine, so that every ratio compares like with like."""
    if b.threads:
        torch.set_num_threads(b.threads)
    load = os.getloadavg()[0]  # other work on the machine skews every rate below; recorded beside them
    train, test = load_splits(config.dataset)
    model, tokenizer = load_model(config.model, config.dataset, {p.question for p in test})  # exactly as sirt.train
    check_adapter(model, config)  # a named model's LoRA targets, refused before the first stage (as sirt.train)
    shape, verifier = ModelShape.of(model), Verifier(tokenizer, verifier_schema(tokenizer, config))
    machine = {**matmul_flops_per_s(b.matmul_size, b.matmul_repeats, model.device, model.dtype),
               "load_average_1min_at_start": load, "cpu_count": os.cpu_count()}
    problems = round_problems(train, config, 0)
    prompts = [solver_prompt(p.question, tokenizer, config) for p in problems]  # as sirt.train poses them

    clock = Stopwatch()
    round0 = fast_round(model, tokenizer, verifier, problems, test, config, clock)
    fast, fast_samples = fast_rates(tokenizer, verifier, shape, prompts, round0[1], clock.seconds,
                                    machine["flops_per_s"])
    naive, agreement = naive_rates(model, tokenizer, verifier, shape, prompts, fast_samples, config, b,
                                   machine["flops_per_s"])
    scaling = scaling_table(model, tokenizer, verifier, prompts, config, b.scaling)
    train_stage(model, tokenizer, run_dir / "round", config, round0, clock)  # last: it changes the model
    stages = {s: clock.seconds[s] for s in ("generate", "verify", "select", "train", "eval")}
    k = naive["samples"] // config.generation.n_samples
    return {
        "model": {"name": config.model.name, "parameters": sum(p.numel() for p in model.parameters()),
                  **dataclasses.asdict(shape)},
        "workload": {"questions": len(prompts), "N": config.generation.n_samples,
                     "max_new_tokens": config.generation.max_new_tokens, "naive_questions": k,
                     "note": f"the naive path runs on the first {k} questions only (it is slow); fast and naive "
                             "are compared per sample: samples_per_s = samples / (generate + log-prob + verify "
                             "seconds) of each path"},
        "stages": stages,
        "largest_stage": max(stages, key=stages.get),
        "fast": fast,
        "naive": naive,
        "speedup": fast["samples_per_s"] / naive["samples_per_s"],
        "machine": machine,
        "flop_bound_fraction": fast["flop_fraction"],
        "flop_formula": FLOP_FORMULA,
        "agreement": agreement,
        "scaling": scaling,
        "memory": memory_report(model, run_dir, overrides, config, b),
        "logprob_pass": [logprob_pass.compare(rows, b.logprob_pass.steps) for rows in b.logprob_pass.rows],
    }


COMMAND = HydraCommand("bench")


@hydra.main(version_base=None, config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    COMMAND.started()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    with refusals("bench"):
        config, b = split_config(cfg)
        quiet_third_party()
        report = bench(config, b, run_dir, list(hydra_cfg.overrides.task))
    write_atomic(run_dir / "bench.json", json.dumps(report, indent=2))
    tables = summary_tables(report)
    write_atomic(run_dir / "bench.md", tables)
    print(tables)
    log.info("bench: %s", run_dir / "bench.json")


if __name__ == "__main__":
    COMMAND.run(main)
