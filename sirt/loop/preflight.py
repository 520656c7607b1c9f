"""Preflight: what a new model can get wrong, checked in seconds before GPU hours are spent on it.

Each check returns ``{"ok": bool, "detail": str}``; none raises on a bad model or tokenizer (a
tokenizer whose verifier words share a first token fails ``verifier_tokens``, it does not crash).

* ``token_identity``: generation, verification and training see the same ids for a real prompt and its
  reference answer (:mod:`sirt.stages.identity`);
* ``verifier_tokens``: the TF words / QE ratings have distinct first tokens, so the verdict is readable;
* ``special_tokens``: one BOS where the model wants it, an EOS (the chat template's end of turn) that
  closes every training target, a pad token and left padding;
* ``memory``: the estimated peak of a round for the configured batch sizes against the device's memory;
* ``max_length``: the longest prompt plus ``max_new_tokens`` fits the model's positions and the SFT rows.

``python -m sirt.preflight`` runs them on a config's model; ``sirt.train`` runs them before round 0.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
from collections.abc import Iterator
from math import prod
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from sirt.config.errors import ConfigError, InputError
from sirt.config.schema import Config
from sirt.loop.organism import load_model, organism_path
from sirt.models import weights
from sirt.models.load import char_tokenizer, end_at_turn_end, prepare_tokenizer, tiny_llama, torch_dtype
from sirt.models.prompts import bos_text, end_of_turn, solver_prompt, uses_chat, verifier_schema
from sirt.models.tokens import encode, encode_all, training_row, verification_ids
from sirt.stages.backends import backend
from sirt.stages.generation import LOGIT_BUDGET, pass_plan
from sirt.stages.identity import stage_ids, token_identity
from sirt.stages.training import gradient_checkpointing
from sirt.stages.verification import Verifier
from sirt.tasks.problem import Problem

CHECKS = ("token_identity", "verifier_tokens", "special_tokens", "memory", "max_length")
CHEAP_BYTES = 2 * 2**30  # a local checkpoint up to this size is loaded whole by the CLI; a larger one on "meta"
GiB = 2**30

Check = dict[str, bool | str]


def result(ok: bool, detail: str) -> Check:
    return {"ok": bool(ok), "detail": detail}


@contextlib.contextmanager
def rng_kept() -> Iterator[None]:
    """Leave Python's, NumPy's and torch's random state as it was: TRL's trainer seeds them when built."""
    py, np_state = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


def check_token_identity(tokenizer: PreTrainedTokenizerBase, config: Config, problem: Problem) -> Check:
    """The three stages see identical ids for the first train question's prompt and reference answer."""
    prompt = solver_prompt(problem.question, tokenizer, config)
    try:
        stages = stage_ids(tokenizer, prompt, problem.answer, verifier_schema(tokenizer, config), config.trainer)
        return result(*token_identity(tokenizer, stages, prompt, problem.answer))
    except (ConfigError, ValueError, IndexError, KeyError) as err:
        return result(False, f"the stages cannot be built: {err}")


def check_verifier_tokens(tokenizer: PreTrainedTokenizerBase, config: Config) -> Check:
    """The configured verifier's answer words (TF) or ratings (QE) start with distinct tokens."""
    verifier = config.verifier
    try:
        built = Verifier(tokenizer, verifier_schema(tokenizer, config))
    except ConfigError as err:
        return result(False, str(err))
    show, answers, groups = tokenizer.convert_ids_to_tokens, built.method.answers(verifier), built.groups
    for (a, ga), (b, gb) in itertools.combinations(zip(answers, groups), 2):
        if shared := sorted(set(ga) & set(gb)):
            return result(False, f"{built.method.field}: {[a, b]} share the first token(s) {show(shared)}; "
                                 "choose answers that start differently")
    found = ", ".join(f"{a!r} -> {show(g)}" for a, g in zip(answers, groups))
    return result(True, f"{verifier.method.upper()} {found}")


def check_special_tokens(tokenizer: PreTrainedTokenizerBase, config: Config, prompt: str, response: str) -> Check:
    """BOS once where the model wants it, EOS (the template's end of turn) closing targets, pad set."""
    ids, bos, eos = encode(tokenizer, prompt), tokenizer.bos_token_id, tokenizer.eos_token_id
    problems = []
    if bos is not None and ids[:2] == [bos, bos]:
        problems.append(f"the prompt opens with two BOS {tokenizer.bos_token!r}")
    elif bos_text(tokenizer) and ids[:1] != [bos]:
        problems.append(f"the tokenizer adds BOS {tokenizer.bos_token!r} but the prompt does not open with it")
    if eos is None:
        problems.append("the tokenizer has no EOS: samples cannot stop and targets cannot teach stopping")
    else:
        labels = training_row(tokenizer, prompt, response)["labels"]
        if labels[-1:] != [eos]:
            problems.append(f"a training target ends with {tokenizer.convert_ids_to_tokens(labels[-1:])}, not EOS")
        turn_end = end_of_turn(tokenizer, config.model) if uses_chat(tokenizer, config.model) else None
        if turn_end is not None and turn_end != tokenizer.eos_token:
            problems.append(f"EOS is {tokenizer.eos_token!r} but the chat template ends a turn with {turn_end!r}")
    if tokenizer.pad_token_id is None:
        problems.append("no pad token")
    elif tokenizer.padding_side != "left":
        problems.append(f"padding_side={tokenizer.padding_side!r}; batched generation needs left padding")
    if problems:
        return result(False, "; ".join(problems))
    opens = f"one BOS {tokenizer.bos_token!r}" if bos is not None and ids[:1] == [bos] else "no BOS"
    return result(True, f"prompt opens with {opens}; targets end with {tokenizer.eos_token!r}; "
                        f"pad {tokenizer.pad_token!r}")


def longest_prompt(tokenizer: PreTrainedTokenizerBase, config: Config, problems: list[Problem]) -> int:
    """Tokens of the longest solver prompt of ``problems``."""
    return max((len(ids) for ids in encode_all(tokenizer, [solver_prompt(p.question, tokenizer, config)
                                                          for p in problems])), default=0)


def max_positions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The longest sequence the model takes (its config's positions, else the tokenizer's limit)."""
    text = model.config.get_text_config()
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(getattr(text, name, None), int):
            return getattr(text, name)
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and limit < 10**9 else None


def check_max_length(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: Config,
                     prompt_len: int) -> Check:
    """The longest prompt plus ``generation.max_new_tokens`` fits the model and ``trainer.max_length``."""
    need, gen = prompt_len + config.generation.max_new_tokens, config.generation
    limits = {"the model's max positions": max_positions(model, tokenizer),
              "trainer.max_length": config.trainer.max_length}
    if extra := backend(gen).length_limit(gen):
        limits[extra[0]] = extra[1]
    over = [f"{name} {limit}" for name, limit in limits.items() if limit is not None and need > limit]
    what = f"longest prompt {prompt_len} + generation.max_new_tokens {gen.max_new_tokens} = {need} tokens"
    if over:
        return result(False, f"{what} exceeds {', '.join(over)}")
    return result(True, f"{what} within " + ", ".join(f"{k} {v}" for k, v in limits.items() if v is not None))


def device_memory() -> tuple[int, str]:
    """Bytes of the device a run computes on: the GPU's total, else the machine's RAM."""
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.total_memory, props.name
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "CPU RAM"


def lora_sizes(model: PreTrainedModel, config: Config) -> tuple[int, int]:
    """(LoRA parameters, parameters of the weights they adapt) for ``model.lora.target_modules``."""
    targets, r, lora, adapted = set(config.model.lora.target_modules), config.model.lora.r, 0, 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            lora += r * (module.in_features + module.out_features)
            adapted += module.in_features * module.out_features
    return lora, adapted


def memory_estimate(model: PreTrainedModel, config: Config, prompt_len: int, verify_len: int) -> dict[str, int]:
    """Estimated bytes of a round, phase by phase (one is held at a time, beside the weights).

    Generation: the KV cache of ``generation.batch_size`` sequences of prompt + max_new_tokens, the
    prefill's activations of one layer and the logits (``generate``'s kept ones, stacked and turned
    into log-probs, within LOGIT_BUDGET; else the pass's chunk). Verification (no KV cache): one layer's
    keys and values, one layer's activations and the last logits. SFT: LoRA's fp32 weights, grads and Adam states (all
    weights' for ``trainer.lora=false``), the activations kept for backward, the fp32 logits and their grad.
    """
    text, gen, ver, tr = model.config.get_text_config(), config.generation, config.verifier, config.trainer
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    width = params[0].element_size() if params else 4
    hidden, layers, vocab = text.hidden_size, text.num_hidden_layers, text.vocab_size
    inter = getattr(text, "intermediate_size", None) or 4 * hidden
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    kv_per_token = 2 * layers * kv_heads * head_dim * width
    layer_act = (4 * hidden + 3 * inter) * width  # one layer's transient activations per token
    lora_params, adapted = lora_sizes(model, config)
    out = {"weights": sum(p.numel() * p.element_size() for p in params)}
    if tr.lora and width < 4:
        out["master_weights"] = 4 * adapted  # fp32 copies of the adapted bf16/fp16 weights (training.MasterWeights)
    rows = max(1, gen.batch_size // gen.n_samples) * gen.n_samples
    kept = rows * gen.max_new_tokens * vocab * 4
    passed = 2 * prod(pass_plan(model, rows, gen.max_new_tokens, LOGIT_BUDGET)) * vocab * 4
    logits = 3 * kept if kept <= LOGIT_BUDGET else passed
    prefill = (rows // gen.n_samples) * prompt_len * layer_act
    kv_cache = rows * (prompt_len + gen.max_new_tokens) * kv_per_token
    pool = backend(gen).pool_bytes(gen, device_memory()[0])  # an engine's own reservation, if it makes one
    out["generation"] = pool if pool is not None else kv_cache + logits + 2 * rows * vocab * 4 + prefill
    v_tokens = ver.batch_size * verify_len
    out["verification"] = v_tokens * (kv_per_token // layers + layer_act) + 2 * ver.batch_size * vocab * 4
    length = min(tr.max_length, prompt_len + gen.max_new_tokens)
    tokens = tr.batch_size * length
    checkpointing = gradient_checkpointing(tr.gradient_checkpointing, n_params, torch.cuda.is_available())
    kept_act = tokens * (layers * hidden * width + layer_act) if checkpointing else tokens * layers * (
        (10 * hidden + 4 * inter) * width)
    states = 16 * lora_params if tr.lora else n_params * (width + 8)  # fp32 LoRA + grad + Adam; full: grad + Adam
    out["sft"] = states + kept_act + 3 * tokens * vocab * 4
    return out


def device_peak(est: dict[str, int], config: Config, cuda: bool) -> int:
    """The device's share of a round's estimate: the weights and the largest phase, and the fp32 master
    weights unless they live in host memory (``trainer.master_device`` auto or cpu on a GPU)."""
    on_host = cuda and config.trainer.master_device != "same"
    master = 0 if on_host else est.get("master_weights", 0)
    return est["weights"] + master + max(est[p] for p in ("generation", "verification", "sft"))


def check_memory(model: PreTrainedModel, config: Config, prompt_len: int, verify_len: int) -> Check:
    """The estimated peak of a round (the weights and the largest phase; a vLLM engine sleeps outside its
    phase, its KV cache freed) fits the device."""
    est = memory_estimate(model, config, prompt_len, verify_len)
    peak = device_peak(est, config, torch.cuda.is_available())
    total, name = device_memory()
    parts = ", ".join(f"{k} {v / GiB:.2f}" for k, v in est.items())
    detail = f"estimated peak {peak / GiB:.2f} GiB of {total / GiB:.1f} GiB ({name}); GiB: {parts}"
    if peak > total:
        return result(False, detail + "; lower generation.batch_size, verifier.batch_size or trainer.batch_size")
    return result(True, detail)


def run_checks(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: Config,
               train: list[Problem]) -> dict[str, Check]:
    """Every check on the round-0 model, random state left as it was."""
    if not train:
        raise InputError("preflight: the train split has no question")
    first = train[0]
    prompt = solver_prompt(first.question, tokenizer, config)
    with rng_kept():
        prompt_len = longest_prompt(tokenizer, config, train)
        template = verifier_schema(tokenizer, config).template
        verify_len = prompt_len + config.generation.max_new_tokens + len(verification_ids(tokenizer, template, "", ""))
        return {
            "token_identity": check_token_identity(tokenizer, config, first),
            "verifier_tokens": check_verifier_tokens(tokenizer, config),
            "special_tokens": check_special_tokens(tokenizer, config, prompt, first.answer),
            "memory": check_memory(model, config, prompt_len, verify_len),
            "max_length": check_max_length(model, tokenizer, config, prompt_len),
        }


def failed(checks: dict[str, Check]) -> list[str]:
    return [name for name, c in checks.items() if not c["ok"]]


def require(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, config: Config, train: list[Problem]) -> None:
    """Run the checks; one InputError naming every failing check (and why) if any fails."""
    checks = run_checks(model, tokenizer, config, train)
    if bad := failed(checks):
        reasons = "; ".join(f"{name}: {checks[name]['detail']}" for name in bad)
        raise InputError(f"preflight failed ({', '.join(bad)}): {reasons}; see python -m sirt.preflight")


def checkpoint_bytes(path: Path) -> int:
    """Bytes of a local checkpoint's weight files."""
    files = [*path.glob("*.safetensors"), *path.glob("*.bin"), *path.glob("*.gguf")] if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files if f.is_file())


def subject(config: Config, held_out: set[str]) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, str]:
    """The model and tokenizer the checks run on, as cheaply as they are true to a run's.

    A cached organism or a local checkpoint up to :data:`CHEAP_BYTES` loads as a run loads it; an organism
    not yet taught is built untaught (same tokenizer and shapes); a larger or hub model gets its own
    tokenizer and its architecture on the "meta" device (shapes, no weights).
    """
    cfg = config.model
    if not cfg.name_or_path:
        if (organism_path(cfg, config.dataset, held_out) / "config.json").exists():
            return (*load_model(cfg, config.dataset, held_out), "the taught organism")
        tokenizer = char_tokenizer()
        return tiny_llama(cfg.tiny, len(tokenizer), cfg.teach.seed), tokenizer, "the organism's shapes (untaught)"
    if cfg.random_init:  # random weights: the architecture is all there is to check
        source = weights.resolve(cfg.name_or_path)
    else:
        source = weights.check_available(cfg.name_or_path, cfg.gguf_file)
    cheap = source.local and checkpoint_bytes(Path(source.path) / (source.gguf_file or "")) <= CHEAP_BYTES
    if cheap and not cfg.random_init:
        return (*load_model(cfg, config.dataset, held_out), "loaded as a run loads it")
    tokenizer = end_at_turn_end(prepare_tokenizer(AutoTokenizer.from_pretrained(source.path,
                                                                               gguf_file=source.gguf_file)), cfg)
    arch = AutoConfig.from_pretrained(source.path, gguf_file=source.gguf_file)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(arch, dtype=torch_dtype(cfg.dtype))
    return model, tokenizer, "its architecture on the meta device (no weights loaded)"
