"""``python -m sirt.gpu_check [OVERRIDES] [--out DIR]``: does sirt run right on this GPU, and how fast?

Runs the organism (``model=tiny``, ``debug=micro`` with 64 prompts x N = 16) in bf16 for 2 rounds,
in this process through :func:`sirt.loop.run.run`, and reports:

- tokens/s of generation and of verification per round: ``tokens_generated`` of metrics.jsonl over
  its ``seconds["generate"]`` and ``seconds["verify"]`` (verification reads the same responses again,
  with their prompts: a lower bound on the tokens it processes);
- peak GPU memory (``torch.cuda.max_memory_allocated``) over the run;
- the merge precision check: a LoRA update of std 1e-5 per weight (paper 1's lr, below bf16's step)
  merged into the bf16 model through :func:`sirt.stages.training.merge_lora`, against the same
  adapter merged into an fp32 copy: the relative error of the update the merge applied, in the fp32
  master weights (what later rounds build on) and in the bf16 weights the model computes with.

Writes ``DIR/gpu_check.json`` (default ``outputs/gpu_check``; the run itself goes to ``DIR/run``,
replaced on every call) and prints a table. Hydra overrides go to the run, e.g.
``generation.backend=vllm`` to time vLLM. Without CUDA it exits 2 in one line. Never needed by CI.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import torch

SETTINGS = ["debug=micro", "model=tiny", "model.dtype=bfloat16", "rounds=2", "dataset.n_train=64",
            "generation.n_samples=16", "logger=none", "fit.enabled=false"]
ETA = 1e-5  # std per weight of the merge check's update: paper 1's lr, where bf16's step near 0.02 is 1.2e-4


def throughput(rows: list[dict]) -> list[dict]:
    """Per round: generated tokens, and tokens/s of generation and of verification."""
    out = []
    for row in rows:
        tokens, sec = row["tokens_generated"], row["seconds"]
        out.append({"round": row["round"], "tokens": tokens,
                    "generate_tok_s": tokens / max(sec.get("generate", 0.0), 1e-9),
                    "verify_tok_s": tokens / max(sec.get("verify", 0.0), 1e-9)})
    return out


def run_loop(out: Path, overrides: list[str]) -> tuple[list[dict], dict]:
    """The organism's 2 bf16 rounds in this process: (metrics rows, peak memory in GiB)."""
    from sirt.config.compose import compose
    from sirt.loop.checks import validated
    from sirt.loop.run import run

    config = validated(compose(*SETTINGS, *overrides))
    run_dir = out / "run"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run every time: a finished one would only refit
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        rows = run(config, run_dir, "gpu_check")
    finally:
        if config.generation.backend == "vllm":
            from sirt.stages.generation_vllm import teardown

            teardown()
    peak = {"allocated_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0,
            "reserved_gib": torch.cuda.max_memory_reserved() / 2**30 if cuda else 0.0}
    return rows, {**peak, "config": {"backend": config.generation.backend, "dtype": config.model.dtype}}


def merge_check(overrides: list[str], device: str = "cuda") -> dict:
    """Relative error of a small LoRA update merged in bf16 (master and bf16 weights) vs the fp32 merge."""
    from peft import get_peft_model

    from sirt.config.compose import compose
    from sirt.loop.checks import validated
    from sirt.models.load import char_tokenizer, tiny_llama
    from sirt.stages import training

    config = validated(compose(*SETTINGS, *overrides))
    base = tiny_llama(config.model.tiny, vocab_size=len(char_tokenizer()), seed=0).to(device, torch.bfloat16)
    reference = copy.deepcopy(base).float()  # the same starting weights, exactly, in fp32
    start = {w: p.detach().float().clone() for w, p in reference.named_parameters()}
    lora = training.lora_config(config.model.lora)
    low, high = get_peft_model(base, lora), get_peft_model(reference, copy.deepcopy(lora))
    gen = torch.Generator().manual_seed(1)
    high_layers = training.lora_layers(high)
    for name, layer in training.lora_layers(low).items():
        A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        A.data = torch.randn(A.shape, generator=gen).to(A.device)
        B.data = torch.randn(B.shape, generator=gen).to(B.device)
        B.data *= ETA / float(training.lora_delta(layer, "default").std())
        high_layers[name].lora_A["default"].weight.data.copy_(A.data)
        high_layers[name].lora_B["default"].weight.data.copy_(B.data)
    names = {n: n.removeprefix("base_model.model.") + ".weight" for n in high_layers}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    clock = time.perf_counter()
    merged_low = training.merge_lora(low)
    sync()
    seconds = time.perf_counter() - clock
    merged_high = dict(training.merge_lora(high).named_parameters())
    master = getattr(merged_low, training.MASTER).weights
    low_params = dict(merged_low.named_parameters())

    def rel_error(weights: dict[str, torch.Tensor]) -> float:
        want = torch.cat([(merged_high[w].detach().float() - start[w]).flatten() for w in names.values()])
        got = torch.cat([(weights[w].detach().float() - start[w]).flatten() for w in names.values()])
        return float((got - want).norm() / want.norm())

    return {"update_std": ETA, "weights": len(names), "merge_seconds": seconds,
            "master_rel_error": rel_error({names[n]: w for n, w in master.items()}),
            "bf16_rel_error": rel_error(low_params)}


def table(report: dict) -> str:
    """The report as a few aligned lines."""
    lines = [f"gpu_check on {report['device']} (torch {report['torch']}, {report['loop']['config']['backend']}, "
             f"{report['loop']['config']['dtype']}, {report['seconds']:.0f}s)",
             f"{'round':>5} {'tokens':>8} {'generate tok/s':>15} {'verify tok/s':>13}"]
    lines += [f"{r['round']:>5} {r['tokens']:>8} {r['generate_tok_s']:>15.0f} {r['verify_tok_s']:>13.0f}"
              for r in report["throughput"]]
    peak, merge = report["loop"], report["merge"]
    lines.append(f"peak GPU memory: {peak['allocated_gib']:.2f} GiB allocated, {peak['reserved_gib']:.2f} GiB reserved")
    lines.append(f"merge of a std {merge['update_std']:g} LoRA update in bf16 vs fp32: relative error "
                 f"{merge['master_rel_error']:.2e} in the fp32 master, {merge['bf16_rel_error']:.2e} in the bf16 "
                 f"weights ({merge['weights']} weights)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sirt.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the run (after the check's settings)")
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_check"), help="where gpu_check.json goes")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine",
              file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    clock = time.perf_counter()
    rows, loop = run_loop(args.out, args.overrides)
    report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "settings": SETTINGS,
              "overrides": args.overrides, "loop": loop, "throughput": throughput(rows),
              "merge": merge_check(args.overrides)}
    report["seconds"] = time.perf_counter() - clock
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"written: {args.out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
