"""The check that runs before anything heavy: merge into the schema, then range checks.

Only the config is read here; checks that need the domain (a schedule's sum, a curriculum, weights on
disk) run in :mod:`sirt.loop.checks`. Each failure is one :class:`ConfigError` naming the field.
"""

from __future__ import annotations

import copy
import string
from dataclasses import fields
from typing import Any
from urllib.parse import urlsplit

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from sirt.config.compose import CONF_DIR
from sirt.config.errors import ConfigError
from sirt.config.schema import Config, ModelSchema, TeacherSchema

SAMPLING_STRATEGIES = ("random", "group_by_length")  # how SFT draws rows into batches (the HF Trainer's names)
CHOICES = {  # fields whose values are a fixed set; the group fields below take conf/'s option names
    "trainer.sampling_strategy": SAMPLING_STRATEGIES,
    "logger.mode": ("offline", "online", "disabled"),
    "keep_models": ("last", "all"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
}
GROUP_FIELDS = {"verifier.method": "verifier", "schedule.name": "schedule", "external.source": "external",
                "logger.name": "logger", "curriculum.name": "curriculum"}  # field -> the conf/ group naming its values


def options(group: str) -> tuple[str, ...]:
    """The option names of a config group: its YAML files, shared bases (``_*.yaml``) left out."""
    return tuple(sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if not p.stem.startswith("_")))


def choices() -> dict[str, tuple[str, ...]]:
    return {**CHOICES, **{name: options(group) for name, group in GROUP_FIELDS.items()}}
TEACHER_CHOICES = {"kind": ("model", "http"), "endpoint": ("chat", "completions")}
MAX_SEED = 2**32 - 1  # numpy's seed range (torch's is wider): seeds are in [0, MAX_SEED]
MAX_ROUNDS = 10_000  # a sane upper bound: a run of more rounds is a typo (and a schedule of that length fills memory)
MAX_SIZE = 1_000_000  # questions of a split, problems of a teaching phase: more is a typo (they are drawn up front)
PLACEHOLDERS = {  # template -> (the fields the code fills, those it needs)
    "dataset.prompt_template": ({"question"}, {"question"}),
    "dataset.chat.user": ({"question"}, {"question"}),
    "dataset.chat.verify_tf": ({"true", "false"}, set()),
    "dataset.chat.verify_qe": ({"low", "high"}, set()),
    "verifier.template": ({"prompt", "response"}, {"prompt", "response"}),
}


def _check(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r}: {why}")


def _check_dataset(c: Config) -> None:
    """The dataset's sizes, files, hub copies, levels and graph."""
    for name in ("n_train", "n_test"):
        value = getattr(c.dataset, name)
        _check(1 <= value <= MAX_SIZE, f"dataset.{name}", value, f"must be in 1..{MAX_SIZE} (questions of the split)")
    _check(c.dataset.path is None or "{split}" in c.dataset.path, "dataset.path", c.dataset.path,
           "a pattern with {split} (e.g. DIR/gsm8k_{split}.jsonl): train and test are read from two files")
    hub = c.dataset.hub
    _check(hub is None or hub.test_id is None or hub.id is not None, "dataset.hub.test_id", hub and hub.test_id,
           "a test split's own hub copy needs dataset.hub.id (the train split's copy)")
    _check(bool(c.dataset.levels) and min(c.dataset.levels) >= 1, "dataset.levels", c.dataset.levels, "levels >= 1")
    if c.dataset.name == "graph":
        _check(max(c.dataset.levels) < c.dataset.graph.nodes <= 26, "dataset.graph.nodes", c.dataset.graph.nodes,
               f"must be in max(dataset.levels)+1..26 (one letter a node, {max(c.dataset.levels)} hops)")
        _check(c.dataset.graph.chords >= 0, "dataset.graph.chords", c.dataset.graph.chords, "must be >= 0")


def _checks(c: Config) -> None:
    """Range checks that a dataclass type cannot express."""
    for name, allowed in choices().items():
        value = OmegaConf.select(OmegaConf.structured(c), name)
        _check(value in allowed, name, value, f"must be one of {', '.join(allowed)}")
    _check(1 <= c.rounds <= MAX_ROUNDS, "rounds", c.rounds, f"must be in 1..{MAX_ROUNDS}")
    _check(0 <= c.seed <= MAX_SEED - c.rounds, "seed", c.seed,
           f"must be in 0..2**32-1-rounds = {MAX_SEED - c.rounds} (numpy's seed range; round t seeds with seed + t)")
    _check(c.threads >= 0, "threads", c.threads, "must be >= 0 (0 = torch's default)")
    _check(c.prompts_per_round >= 0, "prompts_per_round", c.prompts_per_round, "must be >= 0 (0 = all)")
    _check(c.generation.n_samples >= 1, "generation.n_samples", c.generation.n_samples, "N must be >= 1")
    _check(c.generation.max_new_tokens >= 1, "generation.max_new_tokens", c.generation.max_new_tokens, "must be >= 1")
    _check(c.generation.temperature > 0, "generation.temperature", c.generation.temperature, "must be > 0")
    _check(0 < c.generation.top_p <= 1, "generation.top_p", c.generation.top_p, "must be in (0, 1]")
    _check(all(k >= 1 for k in c.generation.pass_k), "generation.pass_k", c.generation.pass_k, "all k >= 1")
    _check(all(k <= c.generation.n_samples for k in c.generation.pass_k), "generation.pass_k", c.generation.pass_k,
           f"pass@k needs k <= generation.n_samples={c.generation.n_samples}")
    _check(0.0 <= c.verifier.sigma <= 1.0, "verifier.sigma", c.verifier.sigma, "sigma must be in [0, 1]")
    _check(len(c.verifier.words) == 2, "verifier.words", c.verifier.words, "need [true_word, false_word]")
    _check(len(c.verifier.ratings) >= 2, "verifier.ratings", c.verifier.ratings, "need >= 2 rating tokens")
    _check(c.trainer.lr > 0, "trainer.lr", c.trainer.lr, "learning rate must be > 0")
    _check(c.trainer.epochs > 0 or c.trainer.max_steps > 0, "trainer.epochs", c.trainer.epochs, "must be > 0")
    _check(c.trainer.batch_size >= 1, "trainer.batch_size", c.trainer.batch_size, "must be >= 1")
    _check_ranges(c)
    checkpointing = c.trainer.gradient_checkpointing
    _check(checkpointing == "auto" or isinstance(checkpointing, bool), "trainer.gradient_checkpointing",
           checkpointing, "must be auto, true or false")
    _check(c.model.lora.r >= 1, "model.lora.r", c.model.lora.r, "LoRA rank must be >= 1")
    _check(c.external.budget >= 0, "external.budget", c.external.budget, "must be >= 0")
    _check_dataset(c)
    _check_replay(c)
    if not c.model.name_or_path:
        _check_organism(c.model)
    _check(c.fit.forecast_k >= 3, "fit.forecast_k", c.fit.forecast_k, "must be >= 3")
    _check(c.logger.stats_interval > 0, "logger.stats_interval", c.logger.stats_interval, "seconds, must be > 0")
    _check(0 < c.generation.vllm.gpu_memory_utilization <= 1, "generation.vllm.gpu_memory_utilization",
           c.generation.vllm.gpu_memory_utilization, "must be in (0, 1]")
    if c.external.teacher:  # the teacher source's block (empty for the others)
        check_teacher(c.external.teacher)
    _check_base_model_prompts(c)


def _check_ranges(c: Config) -> None:
    """Values a library divides by, indexes with or seeds from: refused here, not deep inside it."""
    g, v, tr = c.generation, c.verifier, c.trainer
    _check(g.top_k >= 0, "generation.top_k", g.top_k, "must be >= 0 (0 = no top-k filter)")
    for name, value in (("generation.batch_size", g.batch_size), ("verifier.batch_size", v.batch_size),
                        ("trainer.grad_accum", tr.grad_accum), ("trainer.max_length", tr.max_length),
                        ("trainer.logging_steps", tr.logging_steps)):
        _check(value >= 1, name, value, "must be >= 1")
    for name, value in (("trainer.max_steps", tr.max_steps), ("trainer.warmup_steps", tr.warmup_steps),
                        ("trainer.weight_decay", tr.weight_decay), ("logger.table_rows", c.logger.table_rows)):
        _check(value >= 0, name, value, "must be >= 0")
    lora = c.model.lora
    _check(0 <= lora.dropout < 1, "model.lora.dropout", lora.dropout, "a probability, must be in [0, 1)")
    _check(lora.alpha > 0, "model.lora.alpha", lora.alpha, "must be > 0")
    _check(bool(lora.target_modules) and all(lora.target_modules), "model.lora.target_modules", lora.target_modules,
           "must name at least one module (e.g. [q_proj, v_proj])")
    _check(0 <= c.dataset.seed <= MAX_SEED, "dataset.seed", c.dataset.seed, f"must be in 0..{MAX_SEED}")
    if c.dataset.name == "arithmetic" and c.dataset.path is None:
        _check(c.dataset.max_operand >= 1, "dataset.max_operand", c.dataset.max_operand,
               "must be >= 1 (operands are drawn from 1..max_operand)")
    for name, (fills, needs) in PLACEHOLDERS.items():
        _check_template(name, OmegaConf.select(OmegaConf.structured(c), name), fills, needs)


def _check_template(name: str, template: str | None, fills: set[str], needs: set[str]) -> None:
    """A ``str.format`` template whose placeholders are those the code fills (and the ones it needs)."""
    if template is None:
        return
    try:
        found = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as err:  # a lone brace
        raise ConfigError(f"{name}={template!r}: not a template ({err}; a literal brace is {{{{ or }}}})") from None
    allowed = ", ".join(f"{{{f}}}" for f in sorted(fills))
    _check(found <= fills, name, template, f"has {', '.join(f'{{{f}}}' for f in sorted(found - fills))}; "
           f"the placeholders filled in are {allowed} (a literal brace is {{{{ or }}}})")
    _check(needs <= found, name, template, f"must contain {', '.join(f'{{{f}}}' for f in sorted(needs))}")


def _check_base_model_prompts(c: Config) -> None:
    """Few-shot prompts and stop strings (what a base model needs to answer and to stop)."""
    shots = c.dataset.few_shot
    _check(shots == 0 or 2 <= shots < c.dataset.n_train, "dataset.few_shot", shots,
           f"0, or 2..{c.dataset.n_train - 1} (held out of dataset.n_train; the verifier's wrong example of a "
           "shot is another shot's solution)")
    for name, stop in (("generation.stop", c.generation.stop), ("dataset.stop", c.dataset.stop)):
        _check(all(stop), name, stop, "stop strings must not be empty")
    _check(c.generation.probe_samples >= 0, "generation.probe_samples", c.generation.probe_samples, "must be >= 0")
    tol = c.generation.probe_tolerance
    _check(tol is None or tol > 0, "generation.probe_tolerance", tol, "null (by dtype) or > 0")
    _check(c.trainer.master_device in ("auto", "cpu", "same"), "trainer.master_device", c.trainer.master_device,
           "auto, cpu or same")


def teacher_schema(raw: dict) -> TeacherSchema:
    """The free-form ``external.teacher`` block typed as :class:`TeacherSchema`; ConfigError names the field.

    The schema has no defaults: a block not composed by ``external=teacher`` lacks fields, and is refused.
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TeacherSchema), raw)
        order = [f.name for f in fields(TeacherSchema)]
        missing = sorted(OmegaConf.missing_keys(merged), key=lambda k: (order.index(k.split(".")[0]), k))
        if missing:
            raise ConfigError(f"external.teacher.{missing[0]}: a value is required (external=teacher composes "
                              "every teacher field from conf/external/teacher.yaml)")
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        why = str(getattr(err, "msg", err)).splitlines()[0]  # OmegaConf appends full_key/object_type lines
        raise ConfigError(f"external.teacher{'.' + key if key else ''}: {why}") from None


def _check_url(url: str | None) -> None:
    """An http(s) URL with a host (and a valid port, if any): anything else cannot be requested."""
    parts = urlsplit(url or "")
    try:
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
    _check(parts.scheme in ("http", "https") and bool(parts.hostname) and port_ok, "external.teacher.base_url", url,
           "an http teacher needs an http(s)://host[:port]/... URL, e.g. http://127.0.0.1:8000/v1")


def check_teacher(raw: dict) -> TeacherSchema:
    """The teacher typed and checked as far as the config alone allows (a local teacher's weights are
    checked in sirt.loop.checks); refused before any model loads when it cannot run."""
    cfg = teacher_schema(raw)

    def need(ok: bool, name: str, why: str) -> None:
        _check(ok, f"external.teacher.{name}", getattr(cfg, name), why)

    for name, allowed in TEACHER_CHOICES.items():
        need(getattr(cfg, name) in allowed, name, f"must be one of {', '.join(allowed)}")
    if cfg.kind == "model":
        return cfg
    _check_url(cfg.base_url)
    need(cfg.max_tokens >= 1, "max_tokens", "must be >= 1")
    need(cfg.concurrency >= 1, "concurrency", "must be >= 1 (requests in flight at once)")
    need(cfg.timeout > 0, "timeout", "seconds per request, must be > 0")
    need(cfg.retries >= 0, "retries", "must be >= 0 (0 = one try)")
    return cfg


def _check_replay(c: Config) -> None:
    """The shares of a round that replay the organism's teaching: each in [0, 1), room left for the picks."""
    for name, what in (("verifier_replay", "verdicts"), ("solver_replay", "worked solutions")):
        share = getattr(c.trainer, name)
        _check(0 <= share < 1, f"trainer.{name}", share, "must be in [0, 1)")
        _check(share == 0 or not c.model.name_or_path, f"trainer.{name}", share,
               f"replays the organism's teaching {what}; must be 0 for a named model")
    replay = c.trainer.verifier_replay + c.trainer.solver_replay
    _check(replay < 1, "trainer.solver_replay", c.trainer.solver_replay,
           f"with trainer.verifier_replay {c.trainer.verifier_replay} the replays must leave room for the picks "
           "(their sum below 1)")


def _check_organism(model: ModelSchema) -> None:
    """The organism (no ``model.name_or_path``) is built from ``model.tiny`` and taught by ``model.teach``."""
    _check(model.tiny is not None and model.teach is not None, "model.name_or_path", None,
           "a named model is needed when model.tiny or model.teach is null")
    tiny, t = model.tiny, model.teach
    for name in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings"):
        value = getattr(tiny, name)
        _check(1 <= value <= MAX_SIZE, f"model.tiny.{name}", value, f"must be in 1..{MAX_SIZE}")
    head_dim = tiny.hidden_size / tiny.num_heads
    _check(head_dim == int(head_dim) and head_dim % 2 == 0, "model.tiny.hidden_size", tiny.hidden_size,
           f"must be an even multiple of model.tiny.num_heads={tiny.num_heads} (each head's width is even for RoPE)")
    for name in ("slip_rate", "layout_rate", "garble_rate"):
        _check(0 <= getattr(t, name) <= 1, f"model.teach.{name}", getattr(t, name), "a probability, must be in [0, 1]")
    for name in ("solve_problems", "verify_problems", "verify_samples", "batch_size"):
        _check(1 <= getattr(t, name) <= MAX_SIZE, f"model.teach.{name}", getattr(t, name), f"must be in 1..{MAX_SIZE}")
    _check(t.own_errors >= 0, "model.teach.own_errors", t.own_errors, "must be >= 0")
    for name in ("solve_steps", "verify_steps", "gate_steps"):
        _check(getattr(t, name) >= 0, f"model.teach.{name}", getattr(t, name), "must be >= 0")
    _check(t.lr > 0 and t.gate_lr_scale > 0, "model.teach.lr", t.lr, "must be > 0 (and gate_lr_scale too)")
    _check(0 <= t.seed <= MAX_SEED, "model.teach.seed", t.seed, f"must be in 0..{MAX_SEED}")
    _check(0 <= t.replay_fraction < 1, "model.teach.replay_fraction", t.replay_fraction, "must be in [0, 1)")
    _check(t.gate_problems >= 1 and t.gate_samples >= 2, "model.teach.gate_problems", t.gate_problems,
           "the gate needs >= 1 problem and gate_samples >= 2")
    _check(t.gate_extensions >= 0, "model.teach.gate_extensions", t.gate_extensions, "must be >= 0")


def _without_organism(cfg: DictConfig) -> DictConfig:
    """A named model has no organism: ``model.tiny`` and ``model.teach`` that ``debug=micro`` (or an experiment)
    shrank do not apply to it, and are nulled (on a copy) rather than refused as half-set organism fields."""
    model = cfg.get("model")
    named = isinstance(model, DictConfig) and not OmegaConf.is_missing(model, "name_or_path")
    if not named or not model.get("name_or_path"):
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.model.tiny, cfg.model.teach = None, None
    return cfg


def validate(cfg: DictConfig) -> Config:
    """Merge the composed config into the schema and check it; raises ConfigError."""
    cfg = _without_organism(cfg)
    missing = sorted(OmegaConf.missing_keys(cfg))  # checked first: merging '???' keeps the schema default
    if missing:
        raise ConfigError(f"{missing[0]}: a value is required (e.g. {missing[0]}=...)")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(f"{key}: {err.msg if hasattr(err, 'msg') else err}") from None
    missing = sorted(OmegaConf.missing_keys(merged))  # a schema field without a default that no YAML sets
    if missing:
        raise ConfigError(f"{missing[0]}: a value is required (e.g. {missing[0]}=...)")
    config: Config = OmegaConf.to_object(merged)
    _checks(config)
    return config
