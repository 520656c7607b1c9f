"""``python -m sirt.bench``: how fast a sampling-bound round runs, against a naive baseline and the machine.

Self-improvement spends its time sampling N answers per question and scoring them. In one run on
one machine this app times

* every stage of a round (generate, verify, select, train, eval) with the very functions
  ``sirt.train`` calls (the fast path: batched sampling with the KV cache, log-probs from the
  sampling pass, verification as batched forward passes, length bucketing);
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
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from sirt import data, models
from sirt.config import Config, ConfigError, GenerationSchema, VerifierSchema, validate
from sirt.curriculum import round_problems
from sirt.generation import Sample, sampler
from sirt.prompts import solver_prompt, verifier_schema
from sirt.tracking import RunDir, quiet_third_party, write_atomic
from sirt.train import Stopwatch, one_round, seed_round, train_model
from sirt.verification import Verifier, verification_prompt

log = logging.getLogger("sirt.bench")

FLOP_FORMULA = ("forward FLOPs over n positions = 2 * P_matmul * n + 4 * L * d_attn * n(n+1)/2; "
                "a sample costs its prompt + response positions, a verification its verification prompt")


@dataclass
class ScalingSchema:
    """Points of the scaling table: one axis varied at a time around the round's settings."""

    base_questions: int = 16
    questions: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    n_samples: list[int] = field(default_factory=lambda: [4, 16, 64])
    max_new_tokens: list[int] = field(default_factory=lambda: [16, 48, 96])


@dataclass
class BenchSchema:
    """The bench-only fields of ``conf/bench.yaml`` (the rest is a run's Config)."""

    naive_prompts: int = 8
    verify_tokens: int = 4
    clear_margin: float = 0.1
    matmul_size: int = 2048
    matmul_repeats: int = 5
    scaling: ScalingSchema = field(default_factory=ScalingSchema)
    train_rss: bool = True
    rss_limit_gb: float = 4.0
    threads: int = 0


def split_config(cfg: DictConfig) -> tuple[Config, BenchSchema]:
    """(run config, bench fields), each checked by its schema; raises ConfigError naming the field."""
    run_keys = [k for k in cfg if k != "bench"]
    config = validate(OmegaConf.masked_copy(cfg, run_keys))
    try:
        bench: BenchSchema = OmegaConf.to_object(OmegaConf.merge(BenchSchema, cfg.get("bench", {})))
    except OmegaConfBaseException as err:
        raise ConfigError(f"bench: {err}") from None
    if bench.naive_prompts < 1 or bench.verify_tokens < 1 or bench.matmul_repeats < 1:
        raise ConfigError("bench.naive_prompts, bench.verify_tokens and bench.matmul_repeats must be >= 1")
    return config, bench


# --- the machine's limit and the model's FLOPs ------------------------------------------------


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP formula needs from a causal LM."""

    matmul_params: int
    layers: int
    attn_dim: int

    @classmethod
    def of(cls, model: PreTrainedModel) -> ModelShape:
        """Every Linear weight (a tied output head is a Linear too; the embedding lookup is not)."""
        c = model.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
        return cls(linear, c.num_hidden_layers, c.num_attention_heads * head_dim)

    def forward_flops(self, positions: int) -> float:
        """FLOPs of a causal forward pass over ``positions`` tokens (with or without a KV cache)."""
        attended = positions * (positions + 1) / 2  # position i attends to i positions
        return 2.0 * self.matmul_params * positions + 4.0 * self.layers * self.attn_dim * attended


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so that a wall-clock time covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_s(size: int, repeats: int, device: torch.device, dtype: torch.dtype) -> dict:
    """The achievable dense-matmul rate: the fastest of ``repeats`` products of two size x size
    matrices in the model's dtype (by default float32 on CPU, bf16 on a GPU), the bound for its FLOPs."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up: allocation, kernel choice
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return {"flops_per_s": 2.0 * size**3 / best, "size": size, "dtype": str(dtype).removeprefix("torch."),
            "threads": torch.get_num_threads(), "device": str(device)}


# --- the naive path -----------------------------------------------------------------------------


def prompt_ids(tokenizer: PreTrainedTokenizerBase, text: str, device: torch.device) -> torch.Tensor:
    """Token ids of one unpadded prompt, shape (1, length)."""
    return tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"].to(device)


def until_eos(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """A response's tokens up to and including the first EOS (the EOS belongs to the response)."""
    stops = (ids == eos_id).nonzero()
    return ids if len(stops) == 0 else ids[: int(stops[0]) + 1]


@torch.inference_mode()
def generate_one(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: torch.Tensor, cfg: GenerationSchema,
    max_new_tokens: int, greedy: bool,
) -> torch.Tensor:
    """One response to one prompt: the baseline's unbatched ``model.generate``."""
    sampling = {"do_sample": False} if greedy else {
        "do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": cfg.top_k}
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=max_new_tokens,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **sampling)
    return until_eos(out[0, prompt.shape[1] :], tokenizer.eos_token_id)


@torch.inference_mode()
def teacher_forced_logprob(model: PreTrainedModel, prompt: torch.Tensor, response: torch.Tensor) -> float:
    """log pi(y|x) by a second forward pass over prompt + response: the quantity the fast path reads
    from its sampling pass, computed the way a naive pipeline does."""
    ids = torch.cat([prompt[0], response]).unsqueeze(0)
    logits = model(ids).logits[0, prompt.shape[1] - 1 : -1].float()
    return float(torch.log_softmax(logits, dim=-1).gather(-1, response.unsqueeze(-1)).sum())


def parse_verdict(text: str, cfg: VerifierSchema) -> float | None:
    """The score a free-text verdict states: TF 1/0 by the first word, QE the leading rating scaled
    to [0, 1]; None when the text states neither (the naive path's parse failures)."""
    head = text.strip().lower()
    if cfg.method == "tf":
        true_word, false_word = (w.lower() for w in cfg.words)
        return 1.0 if head.startswith(true_word) else 0.0 if head.startswith(false_word) else None
    ratings = [(r, i) for i, r in enumerate(cfg.ratings) if head.startswith(r.lower())]
    if not ratings:
        return None
    _, index = max(ratings, key=lambda ri: len(ri[0]))  # "10" before "1"
    return index / (len(cfg.ratings) - 1)


def naive_verdict(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: VerifierSchema, prompt: str, response: str,
    tokens: int,
) -> float | None:
    """The verdict a naive pipeline gets: generate a few greedy tokens after the verification
    prompt and parse them (DESIGN.md's verifier reads the next-token distribution instead)."""
    ids = prompt_ids(tokenizer, verification_prompt(cfg, prompt, response), model.device)
    out = generate_one(model, tokenizer, ids, GenerationSchema(), tokens, greedy=True)
    return parse_verdict(tokenizer.decode(out, skip_special_tokens=True), cfg)


@dataclass
class NaiveRound:
    """The naive path's samples, verdicts (None = unparsable) and seconds per part."""

    samples: list[list[Sample]]
    verdicts: list[list[float | None]]
    seconds: dict[str, float]


def naive_round(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], gen: GenerationSchema,
    verifier_cfg: VerifierSchema, verify_tokens: int,
) -> NaiveRound:
    """N samples per prompt, one at a time, each with a recomputed log-prob and a generated verdict."""
    clock = Stopwatch()
    samples, verdicts = [], []
    with tqdm(total=len(prompts) * gen.n_samples, desc="naive: sample one at a time", leave=False) as bar:
        for prompt in prompts:
            ids = prompt_ids(tokenizer, prompt, model.device)
            row, row_verdicts = [], []
            for _ in range(gen.n_samples):
                with clock("generate"):
                    response = generate_one(model, tokenizer, ids, gen, gen.max_new_tokens, greedy=False)
                with clock("logprob"):
                    logprob = teacher_forced_logprob(model, ids, response)
                text = tokenizer.decode(response, skip_special_tokens=True)
                with clock("verify"):
                    row_verdicts.append(naive_verdict(model, tokenizer, verifier_cfg, prompt, text, verify_tokens))
                row.append(Sample(text, len(response), logprob))
                bar.update()
            samples.append(row)
            verdicts.append(row_verdicts)
    return NaiveRound(samples, verdicts, dict(clock.seconds))


# --- agreement of the two paths -----------------------------------------------------------------


def response_ids(tokenizer: PreTrainedTokenizerBase, s: Sample, max_new_tokens: int) -> list[int] | None:
    """A sample's response tokens back from its text, or None where the text cannot tell them.

    The text drops special tokens while ``n_tokens`` counts them. One token more than the text
    below the length cap can only be the closing EOS (a response without EOS runs to the cap);
    at the cap it could also be a special token mid-text, so such samples are skipped.
    """
    ids = tokenizer(s.text, add_special_tokens=False)["input_ids"]
    if s.n_tokens == len(ids):
        return ids
    if s.n_tokens == len(ids) + 1 and s.n_tokens < max_new_tokens:
        return [*ids, tokenizer.eos_token_id]
    return None


def logprob_agreement(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], samples: list[list[Sample]],
    max_new_tokens: int,
) -> dict[str, float | int]:
    """Largest |fast log-prob - teacher-forced log-prob| over the fast path's own samples: the
    sampling pass and a second forward pass must give the same U on the same sequences."""
    diffs, skipped = [], 0
    for prompt, row in zip(prompts, samples):
        ids = prompt_ids(tokenizer, prompt, model.device)
        for s in row:
            response = response_ids(tokenizer, s, max_new_tokens)
            if response is None:
                skipped += 1
                continue
            tokens = torch.tensor(response, device=model.device)
            diffs.append(abs(s.logprob - teacher_forced_logprob(model, ids, tokens)))
    return {"logprob_max_abs_diff": max(diffs, default=float("nan")), "logprob_sequences": len(diffs),
            "logprob_skipped": skipped}


def verdict_agreement(fast: list[float], naive: list[float | None], sigma: float, margin: float) -> dict[str, float]:
    """Share of clear cases (fast score at least ``margin`` from sigma, naive verdict parsed) on
    which both paths accept or both reject."""
    clear = [(f >= sigma, n >= sigma) for f, n in zip(fast, naive) if n is not None and abs(f - sigma) >= margin]
    return {"verdict_clear_cases": len(clear),
            "verdict_agreement": sum(a == b for a, b in clear) / len(clear) if clear else float("nan"),
            "naive_unparsed": sum(n is None for n in naive) / max(len(naive), 1)}


# --- rates --------------------------------------------------------------------------------------


def prompt_lengths(tokenizer: PreTrainedTokenizerBase, prompts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]


def generation_flops(shape: ModelShape, lengths: list[int], samples: list[list[Sample]]) -> float:
    """Useful FLOPs of sampling: every sample's prompt + response positions."""
    return sum(shape.forward_flops(p + s.n_tokens) for p, row in zip(lengths, samples) for s in row)


def verification_flops(shape: ModelShape, tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> float:
    """Useful FLOPs of verification: one forward pass over every verification prompt."""
    return sum(shape.forward_flops(n) for n in prompt_lengths(tokenizer, texts))


def rates(samples: list[list[Sample]], seconds: dict[str, float], gen_flops: float, peak: float) -> dict:
    """samples/s of the sampling-bound work (sample + log-prob + verdict), tokens/s of generation,
    and generation's achieved FLOP/s as a fraction of the machine's matmul rate."""
    n = sum(map(len, samples))
    tokens = sum(s.n_tokens for row in samples for s in row)
    total = sum(seconds.values())
    return {"samples": n, "tokens": tokens, "seconds": seconds, "samples_per_s": n / total,
            "tokens_per_s": tokens / seconds["generate"], "generate_samples_per_s": n / seconds["generate"],
            "generate_flops_per_s": gen_flops / seconds["generate"],
            "flop_fraction": gen_flops / seconds["generate"] / peak}


# --- scaling ------------------------------------------------------------------------------------


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


# --- memory -------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Starts a command and writes its peak RSS (KiB) to a file. The command must not be forked from
# the bench itself: Linux carries a process's pre-exec high-water mark into ru_maxrss, so a
# child of a 900 MB parent reports at least 900 MB. Forked from this small interpreter, it is exact.
RSS_PROBE = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
             "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
             "sys.exit(rc)")


def passthrough(overrides: list[str], own: set[str]) -> list[str]:
    """The bench's command-line overrides a child ``sirt.train`` understands: all but ``bench.*``
    and the keys the child run sets itself."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.input_line for o in parsed if not o.key_or_group.startswith("bench") and o.key_or_group not in own]


def child_peak_rss_mb(cmd: list[str], log_file: Path, env: dict[str, str] | None = None) -> float:
    """Run ``cmd`` to the end (output to ``log_file``) and return its peak RSS in MiB, through
    :data:`RSS_PROBE` so that this process's own size does not leak into the number."""
    peak_file = log_file.with_suffix(".rss")
    with open(log_file, "w") as out:
        result = subprocess.run([sys.executable, "-c", RSS_PROBE, str(peak_file), *cmd], stdout=out,
                                stderr=subprocess.STDOUT, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:4])} ... failed ({result.returncode}); see {log_file}")
    return int(peak_file.read_text()) / 1024


def train_rss(run_dir: Path, overrides: list[str], rounds: int, threads: int) -> dict[str, float | int]:
    """Peak RSS of a ``python -m sirt.train`` child of ``rounds`` rounds on the bench's config (W&B
    and the fit off, the bench's thread count): the memory a default run needs, measured."""
    own = {"logger": "none", "fit.enabled": "false", "rounds": str(rounds), "hydra.run.dir": str(run_dir)}
    train = [sys.executable, "-m", "sirt.train", *(f"{k}={v}" for k, v in own.items()),
             *passthrough(overrides, set(own))]
    log.info("memory: %s", " ".join(train[1:]))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    start = time.perf_counter()
    peak = child_peak_rss_mb(train, run_dir.with_suffix(".log"), env)
    return {"train_peak_rss_mb": peak, "train_rounds": rounds, "train_seconds": time.perf_counter() - start}


# --- the report ---------------------------------------------------------------------------------


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
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, verifier: Verifier, problems: list[data.Problem],
    test: list[data.Problem], config: Config, clock: Stopwatch,
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
                round0: tuple[dict, list[dict]], clock: Stopwatch, held_out: set[str]) -> None:
    """Round 1's training on round 0's picks, by ``sirt.train``'s own code (it reads a run directory)."""
    run = RunDir(run_dir)
    run.commit_round(0, *round0, {})
    with clock("train"):
        train_model(model, tokenizer, run, config, t=1, ext_items=0, teacher=None,
                    load_base=lambda: models.load(config.model, config.dataset, held_out))


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
    train, test = data.load_splits(config.dataset)
    held_out = {p.question for p in test}
    model, tokenizer = models.load(config.model, config.dataset, held_out)  # exactly as sirt.train
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
    train_stage(model, tokenizer, run_dir / "round", config, round0, clock, held_out)  # last: it changes the model
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
    }


@hydra.main(version_base=None, config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    try:
        config, b = split_config(cfg)
    except ConfigError as err:
        print(f"sirt.bench: config error: {err}", file=sys.stderr)
        sys.exit(2)
    quiet_third_party()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    report = bench(config, b, run_dir, list(hydra_cfg.overrides.task))
    write_atomic(run_dir / "bench.json", json.dumps(report, indent=2))
    tables = summary_tables(report)
    write_atomic(run_dir / "bench.md", tables)
    print(tables)
    log.info("bench: %s", run_dir / "bench.json")


if __name__ == "__main__":
    main()
