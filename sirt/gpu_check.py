"""``python -m sirt.gpu_check [--dry-run] [--backends B ...] [--out DIR] [OVERRIDES]``: sirt at the paper's scale.

A Llama-3.1-8B-architecture model (its published config; random bf16 weights made on the GPU, no
download: ``model.random_init``) with a tokenizer of its 128,256 ids (:func:`sirt.models.load.wide_char_tokenizer`)
runs two rounds of the loop (rounds 0, 1, 2) in this process through :func:`sirt.loop.trainer.run`, at paper 1's
settings on a subset: 64 prompts x N = 16 x 512 new tokens (``generation=paper``, ``trainer=paper``, LoRA r 16 on
every projection). A random model never ends a response early, so every sample takes all 512 tokens: the
worst case of a round. It runs once per backend: ``transformers``, and ``vllm`` when vLLM is installed.

Per backend it reports the seconds of every stage per round, tokens/s of sampling and of verification
(``tokens_generated`` over the stage's seconds), ``backend_logprob_err`` of every round (the sampler agreement
probe: rounds 1 and 2 are the ones a stale vLLM engine would get wrong), and peak GPU memory two ways:
torch's allocator (``max_memory_allocated``) and the device as a whole (``total - free`` sampled every
0.2 s, which counts vLLM's pool). Then the merge precision check: a LoRA update of std 1e-5 per weight
(paper 1's lr, below bf16's step) merged in bf16 by :func:`sirt.stages.training.merge_lora`, against the
same update in fp32: the relative error in the fp32 master weights (about 0) and in the bf16 weights.

Writes ``DIR/gpu_check.json`` (default ``outputs/gpu_check``; each backend's run under ``DIR/<backend>``,
replaced on every call) and prints a table. Sized to finish within about 8 minutes on one H100/H200
(estimated, not yet measured). ``--dry-run`` prints the plan and the round's memory estimate (the
arithmetic of ``sirt.preflight``) on any machine; without ``--dry-run`` and without CUDA it exits 2 in
one line. Hydra overrides go to every run.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import shutil
import sys
import threading
import time
from pathlib import Path

import torch
from transformers import LlamaConfig

from sirt.stages.backends import BACKENDS

LLAMA_3_1_8B = {  # meta-llama/Llama-3.1-8B's config.json (the architecture; weights are random here)
    "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072, "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0, "tie_word_embeddings": False, "hidden_act": "silu",
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192},
}
SETTINGS = ["model=hf", "model.random_init=true", "model.dtype=bfloat16", "model.chat_template=false",
            "dataset=arithmetic", "dataset.n_train=64", "dataset.n_test=8", "generation=paper", "trainer=paper",
            "generation.batch_size=256", "verifier.batch_size=64", "trainer.batch_size=4", "trainer.grad_accum=4",
            "rounds=2", "logger=none", "fit.enabled=false"]
ETA = 1e-5  # std per weight of the merge check's update: paper 1's lr, where bf16's step near 0.02 is 1.2e-4


def write_model_dir(path: Path, architecture: dict = LLAMA_3_1_8B) -> Path:
    """An architecture's config.json (the 8B one by default) and a tokenizer of its vocabulary's ids in ``path``
    (no weights: ``model.random_init`` makes them)."""
    from sirt.models.load import wide_char_tokenizer

    tokenizer = wide_char_tokenizer(architecture["vocab_size"])
    path.mkdir(parents=True, exist_ok=True)
    LlamaConfig(**architecture, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                bos_token_id=None).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def settings(model_dir: Path, backend: str, overrides: list[str]) -> list[str]:
    return [*SETTINGS, f"model.name_or_path={model_dir}", f"generation.backend={backend}", *overrides]


class DevicePeak:
    """The most device memory in use (``total - free``, all allocators: torch's and vLLM's) while it runs."""

    def __init__(self, every: float = 0.2):
        self.every, self.peak, self._stop = every, 0, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            free, total = torch.cuda.mem_get_info()
            self.peak = max(self.peak, total - free)
            self._stop.wait(self.every)

    def __enter__(self) -> DevicePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def per_round(rows: list[dict]) -> list[dict]:
    """Per round: seconds per stage, generated tokens, tokens/s of sampling and verification, the probe."""
    out = []
    for row in rows:
        tokens, sec = row["tokens_generated"], row["seconds"]
        out.append({"round": row["round"], "tokens": tokens, "seconds": sec,
                    "generate_tok_s": tokens / max(sec.get("generate", 0.0), 1e-9),
                    "verify_tok_s": tokens / max(sec.get("verify", 0.0), 1e-9),
                    "backend_logprob_err": row["backend_logprob_err"]})
    return out


def run_backend(out: Path, model_dir: Path, backend: str, overrides: list[str]) -> dict:
    """Rounds 0..2 on ``backend`` in this process: per-round figures and peak memory in GiB."""
    from sirt.config.compose import compose
    from sirt.loop.checks import validated
    from sirt.loop.trainer import run

    config = validated(compose(*settings(model_dir, backend, overrides)))
    run_dir = out / backend
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run every time: a finished one would only refit
    torch.cuda.reset_peak_memory_stats()
    clock = time.perf_counter()
    with DevicePeak() as device:
        rows = run(config, run_dir, f"gpu_check_{backend}")
    return {"backend": backend, "seconds": time.perf_counter() - clock, "rounds": per_round(rows),
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
            "peak_device_gib": device.peak / 2**30}


def merge_check(device: str = "cuda") -> dict:
    """Relative error of a small LoRA update merged in bf16 (master and bf16 weights) vs the fp32 merge."""
    from peft import get_peft_model

    from sirt.config.defaults import default
    from sirt.models.load import char_tokenizer, tiny_llama
    from sirt.stages import training

    base = tiny_llama(default("model.tiny"), vocab_size=len(char_tokenizer()), seed=0).to(device, torch.bfloat16)
    reference = copy.deepcopy(base).float()  # the same starting weights, exactly, in fp32
    start = {w: p.detach().float().clone() for w, p in reference.named_parameters()}
    lora = training.lora_config(default("model.lora", r=16, alpha=32,
                                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
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
    merged_low, merged_high = training.merge_lora(low), dict(training.merge_lora(high).named_parameters())
    master, low_params = getattr(merged_low, training.MASTER).weights, dict(merged_low.named_parameters())

    def rel_error(weights: dict[str, torch.Tensor]) -> float:
        want = torch.cat([(merged_high[w].detach().float() - start[w]).flatten() for w in names.values()])
        got = torch.cat([(weights[w].detach().float().to(start[w].device) - start[w]).flatten()
                         for w in names.values()])
        return float((got - want).norm() / want.norm())

    return {"update_std": ETA, "weights": len(names),
            "master_rel_error": rel_error({names[n]: w for n, w in master.items()}),
            "bf16_rel_error": rel_error(low_params)}


def backends(asked: list[str] | None) -> list[str]:
    """The backends to time: those asked for, else transformers and (when installed) vLLM."""
    if asked:
        return asked
    return ["transformers", *(["vllm"] if importlib.util.find_spec("vllm") else [])]


def plan(model_dir: Path, names: list[str], overrides: list[str]) -> str:
    """The check's settings, the model's size and the estimated memory of a round (sirt.preflight's arithmetic)."""
    from sirt.config.compose import compose
    from sirt.loop.checks import validated
    from sirt.loop.preflight import GiB, device_peak, longest_prompt, memory_estimate, subject
    from sirt.models.prompts import verifier_schema
    from sirt.models.tokens import verification_ids
    from sirt.tasks.registry import load_splits

    config = validated(compose(*settings(model_dir, names[0], overrides)))
    train, test = load_splits(config.dataset)
    model, tokenizer, _ = subject(config, {p.question for p in test})
    prompt_len = longest_prompt(tokenizer, config, train)
    template = verifier_schema(tokenizer, config).template
    verify_len = prompt_len + config.generation.max_new_tokens + len(verification_ids(tokenizer, template, "", ""))
    n_params = sum(p.numel() for p in model.parameters())
    est = memory_estimate(model, config, prompt_len, verify_len)
    peak = device_peak(est, config, cuda=True)
    g = config.generation
    lines = [f"gpu_check plan: Llama-3.1-8B architecture ({n_params / 1e9:.2f}B parameters, random bf16 weights, "
             f"vocabulary {LLAMA_3_1_8B['vocab_size']}), backends: {', '.join(names)}",
             f"  rounds 0..{config.rounds}: {len(train)} prompts x N = {g.n_samples} x {g.max_new_tokens} new tokens "
             f"= {len(train) * g.n_samples * g.max_new_tokens} sampled tokens a round; greedy eval on "
             f"{len(test)} questions; LoRA r {config.model.lora.r} on {len(config.model.lora.target_modules)} "
             f"projections, lr {config.trainer.lr:g}",
             f"  settings: {' '.join(settings(model_dir, '<backend>', overrides))}",
             "  memory of a round, estimated (GiB): " + ", ".join(f"{k} {v / GiB:.1f}" for k, v in est.items()),
             f"  on one GPU: {peak / GiB:.1f} GiB at the peak (weights + the largest phase; the fp32 master weights "
             f"in pinned host memory): {'within' if peak < 80 * GiB else 'above'} an 80 GiB H100; "
             f"the vLLM run's engine takes generation.vllm.gpu_memory_utilization = {g.vllm.gpu_memory_utilization} "
             "of the GPU in its phase"]
    return "\n".join(lines)


def table(report: dict) -> str:
    """The report as a few aligned lines."""
    lines = [f"gpu_check on {report['device']} (torch {report['torch']}, {report['seconds']:.0f}s)"]
    for b in report["backends"]:
        lines.append(f"{b['backend']}: {b['seconds']:.0f}s, peak GPU memory {b['peak_allocated_gib']:.1f} GiB "
                     f"(torch) / {b['peak_device_gib']:.1f} GiB (device)")
        lines.append(f"{'round':>5} {'tokens':>8} {'generate tok/s':>15} {'verify tok/s':>13} {'logprob_err':>12}  "
                     "seconds per stage")
        lines += [f"{r['round']:>5} {r['tokens']:>8} {r['generate_tok_s']:>15.0f} {r['verify_tok_s']:>13.0f} "
                  f"{r['backend_logprob_err']:>12.3g}  " + " ".join(f"{k} {v:.1f}" for k, v in r["seconds"].items())
                  for r in b["rounds"]]
    merge = report["merge"]
    lines.append(f"merge of a std {merge['update_std']:g} LoRA update in bf16 vs fp32: relative error "
                 f"{merge['master_rel_error']:.2e} in the fp32 master, {merge['bf16_rel_error']:.2e} in the bf16 "
                 f"weights ({merge['weights']} weights)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sirt.gpu_check", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the runs (after the check's settings)")
    parser.add_argument("--out", type=Path, default=Path("outputs/gpu_check"), help="where gpu_check.json goes")
    parser.add_argument("--backends", nargs="+", choices=sorted(BACKENDS),
                        help="backends to time (default: transformers, and vllm when installed)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and the memory estimate, run nothing")
    args = parser.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("sirt.gpu_check: no CUDA device (torch.cuda.is_available() is False); run it on a GPU machine, "
              "or add --dry-run for the plan", file=sys.stderr)
        return 2
    from sirt.config.errors import InputError

    names = backends(args.backends)
    model_dir = write_model_dir(args.out / "model")
    try:
        if args.dry_run:
            print(plan(model_dir, names, args.overrides))
            return 0
        clock = time.perf_counter()
        report = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "settings": SETTINGS,
                  "overrides": args.overrides, "architecture": LLAMA_3_1_8B,
                  "backends": [run_backend(args.out, model_dir, b, args.overrides) for b in names],
                  "merge": merge_check()}
    except InputError as err:
        print(f"sirt.gpu_check: {err}", file=sys.stderr)
        return 2
    report["seconds"] = time.perf_counter() - clock
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(table(report))
    print(f"written: {args.out / 'gpu_check.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
