"""Typed schemas of every config group, and the check that runs before anything heavy.

Hydra composes YAML from ``conf/``; :func:`validate` merges it into these dataclasses (so an
unknown or mistyped field fails) and checks ranges, raising :class:`ConfigError` with one
message that names the field. ``sirt.train`` turns that into an exit code, not a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class InputError(ValueError):
    """Bad input from the user (a config value, a data file, a missing model): one clear message."""


class ConfigError(InputError):
    """A config value that cannot run; the message names the field."""


@dataclass
class TinySchema:
    """Architecture of the embedded model organism (a LlamaForCausalLM built from config)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 256


@dataclass
class TeachSchema:
    """How the organism is taught, once and cached: to solve imperfectly, then to verify well."""

    solve_problems: int = 6000
    slip_rate: float = 0.6
    solve_steps: int = 500
    verify_problems: int = 3000
    verify_samples: int = 8
    verify_steps: int = 500
    garble_rate: float = 0.25
    replay_fraction: float = 0.25
    lr: float = 3e-3
    batch_size: int = 64
    seed: int = 0
    gate: bool = True
    gate_problems: int = 128
    gate_samples: int = 16
    gate_auc: float = 0.75
    gate_lift: float = 0.10
    gate_extensions: int = 2
    gate_steps: int = 200
    gate_lr_scale: float = 0.5


@dataclass
class LoraSchema:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class ModelSchema:
    name: str = "tiny"
    name_or_path: str | None = None
    dtype: str = "auto"
    attn_implementation: str | None = None
    chat_template: bool = False
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    gguf_file: str | None = None
    tiny: TinySchema = field(default_factory=TinySchema)
    teach: TeachSchema = field(default_factory=TeachSchema)
    lora: LoraSchema = field(default_factory=LoraSchema)


@dataclass
class HubSchema:
    """A dataset on the Hugging Face hub, read with ``datasets.load_dataset``."""

    id: str | None = None
    configs: list[str] = field(default_factory=list)
    train_split: str = "train"
    test_split: str = "test"


@dataclass
class ChatSchema:
    """Prompt texts for chat-template models: the user turn that poses a question, and the verifier's turns."""

    system: str | None = None
    user: str = "{question}"
    verify_tf: str = "Is the answer above correct? Answer {true} or {false}."
    verify_qe: str = ("Rate the answer above from {low} (certainly wrong) to {high} (certainly right). "
                      "Answer with the number only.")


@dataclass
class GraphSchema:
    """Graphs of the graph task (sirt.graph): one size for every level, so path length is the difficulty."""

    nodes: int = 6
    chords: int = 1


@dataclass
class DatasetSchema:
    name: str = "arithmetic"
    path: str | None = None
    hub: HubSchema = field(default_factory=HubSchema)
    prompt_template: str = "Q: {question}\nA: "
    chat: ChatSchema = field(default_factory=ChatSchema)
    levels: list[int] = field(default_factory=lambda: [2, 3, 4])
    max_operand: int = 5
    graph: GraphSchema = field(default_factory=GraphSchema)
    n_train: int = 256
    n_test: int = 200
    seed: int = 1234


@dataclass
class VerifierSchema:
    method: str = "tf"
    sigma: float = 0.5
    template: str = "{prompt}{response}\nCorrect? "
    words: list[str] = field(default_factory=lambda: ["yes", "no"])
    ratings: list[str] = field(default_factory=lambda: [str(i) for i in range(10)])
    batch_size: int = 256


@dataclass
class VllmSchema:
    """Engine settings of the vLLM backend (used only with ``generation.backend=vllm``)."""

    gpu_memory_utilization: float = 0.35
    max_model_len: int = 4096


@dataclass
class GenerationSchema:
    backend: str = "transformers"
    n_samples: int = 32
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    batch_size: int = 1024
    pass_k: list[int] = field(default_factory=lambda: [1, 4, 16])
    vllm: VllmSchema = field(default_factory=VllmSchema)


@dataclass
class TrainerSchema:
    lr: float = 3e-4
    epochs: float = 1.0
    max_steps: int = 0
    batch_size: int = 16
    grad_accum: int = 1
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_length: int = 256
    logging_steps: int = 10
    restart_from_base: bool = False
    lora: bool = True
    verifier_replay: float = 0.0


@dataclass
class ScheduleSchema:
    name: str = "none"
    eta: list[float] = field(default_factory=list)
    round: int = 8


@dataclass
class ExternalSchema:
    source: str = "gold"
    budget: int = 0
    teacher: dict[str, Any] = field(default_factory=dict)


@dataclass
class CurriculumSchema:
    """Which levels a round's prompts come from (paper 2); the rules live in sirt.curriculum."""

    name: str = "none"
    weights: list[float] = field(default_factory=list)
    advance_every: int = 0
    threshold: float | None = None
    replay: float = 0.0
    per_round: list[Any] = field(default_factory=list)


@dataclass
class LoggerSchema:
    name: str = "wandb"
    project: str = "sirt"
    entity: str | None = None
    mode: str = "offline"
    group: str | None = None
    table_rows: int = 8
    system_stats: bool = True
    stats_interval: float = 15.0


@dataclass
class FitSchema:
    enabled: bool = True
    forecast_k: int = 5
    plots: bool = True


@dataclass
class Config:
    seed: int = 0
    rounds: int = 10
    prompts_per_round: int = 0
    eval_every: int = 1
    keep_models: str = "last"
    threads: int = 0
    model: ModelSchema = field(default_factory=ModelSchema)
    dataset: DatasetSchema = field(default_factory=DatasetSchema)
    verifier: VerifierSchema = field(default_factory=VerifierSchema)
    generation: GenerationSchema = field(default_factory=GenerationSchema)
    trainer: TrainerSchema = field(default_factory=TrainerSchema)
    schedule: ScheduleSchema = field(default_factory=ScheduleSchema)
    external: ExternalSchema = field(default_factory=ExternalSchema)
    curriculum: CurriculumSchema = field(default_factory=CurriculumSchema)
    logger: LoggerSchema = field(default_factory=LoggerSchema)
    fit: FitSchema = field(default_factory=FitSchema)


CHOICES = {
    "verifier.method": ("tf", "qe"),
    "generation.backend": ("transformers", "vllm"),
    "schedule.name": ("none", "early", "uniform", "late", "custom"),
    "external.source": ("gold", "teacher", "oracle"),
    "logger.name": ("wandb", "none"),
    "logger.mode": ("offline", "online", "disabled"),
    "keep_models": ("last", "all"),
    "curriculum.name": ("none", "mixture", "easy_to_hard", "hard_only", "custom"),
    "model.dtype": ("auto", "float32", "bfloat16", "float16"),
}


def _check(ok: bool, name: str, value: Any, why: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r}: {why}")


def _checks(c: Config) -> None:
    """Range checks that a dataclass type cannot express."""
    for name, allowed in CHOICES.items():
        value = OmegaConf.select(OmegaConf.structured(c), name)
        _check(value in allowed, name, value, f"must be one of {', '.join(allowed)}")
    _check(c.rounds >= 1, "rounds", c.rounds, "must be >= 1")
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
    _check(c.model.lora.r >= 1, "model.lora.r", c.model.lora.r, "LoRA rank must be >= 1")
    _check(c.external.budget >= 0, "external.budget", c.external.budget, "must be >= 0")
    _check(c.dataset.n_train >= 1, "dataset.n_train", c.dataset.n_train, "must be >= 1")
    _check(c.dataset.n_test >= 1, "dataset.n_test", c.dataset.n_test, "must be >= 1")
    _check(c.dataset.path is None or "{split}" in c.dataset.path, "dataset.path", c.dataset.path,
           "a pattern with {split} (e.g. DIR/gsm8k_{split}.jsonl): train and test are read from two files")
    _check(bool(c.dataset.levels) and min(c.dataset.levels) >= 1, "dataset.levels", c.dataset.levels, "levels >= 1")
    if c.dataset.name == "graph":
        _check(max(c.dataset.levels) < c.dataset.graph.nodes <= 26, "dataset.graph.nodes", c.dataset.graph.nodes,
               f"must be in max(dataset.levels)+1..26 (one letter a node, {max(c.dataset.levels)} hops)")
        _check(c.dataset.graph.chords >= 0, "dataset.graph.chords", c.dataset.graph.chords, "must be >= 0")
    _check(0 <= c.model.teach.replay_fraction < 1, "model.teach.replay_fraction", c.model.teach.replay_fraction,
           "must be in [0, 1)")
    _check(0 <= c.trainer.verifier_replay < 1, "trainer.verifier_replay", c.trainer.verifier_replay,
           "must be in [0, 1)")
    _check(c.trainer.verifier_replay == 0 or not c.model.name_or_path, "trainer.verifier_replay",
           c.trainer.verifier_replay, "replays the organism's teaching verdicts; must be 0 for a named model")
    t = c.model.teach
    _check(t.gate_problems >= 1 and t.gate_samples >= 2, "model.teach.gate_problems", t.gate_problems,
           "the gate needs >= 1 problem and gate_samples >= 2")
    _check(t.gate_extensions >= 0, "model.teach.gate_extensions", t.gate_extensions, "must be >= 0")
    _check(c.fit.forecast_k >= 3, "fit.forecast_k", c.fit.forecast_k, "must be >= 3")
    _check(c.logger.stats_interval > 0, "logger.stats_interval", c.logger.stats_interval, "seconds, must be > 0")
    _check(0 < c.generation.vllm.gpu_memory_utilization <= 1, "generation.vllm.gpu_memory_utilization",
           c.generation.vllm.gpu_memory_utilization, "must be in (0, 1]")
    if c.model.name_or_path:  # fail in seconds, before data loading, when the weights cannot be loaded here
        from sirt.weights import check_available

        check_available(c.model.name_or_path, c.model.gguf_file)
    from sirt.curriculum import check_curriculum  # curriculum rules live with the curricula
    from sirt.external import eta_schedule  # schedule rules live with the allocation
    from sirt.teacher import teacher_schema

    eta_schedule(c.schedule, c.rounds)
    check_curriculum(c.curriculum, c.rounds)
    if c.external.source == "teacher":
        try:
            teacher_schema(c.external.teacher)
        except OmegaConfBaseException as err:
            raise ConfigError(f"external.teacher: {err}") from None


def validate(cfg: DictConfig) -> Config:
    """Merge the composed config into the schema and check it; raises ConfigError."""
    missing = sorted(OmegaConf.missing_keys(cfg))  # checked first: merging '???' keeps the schema default
    if missing:
        raise ConfigError(f"{missing[0]}: a value is required (e.g. {missing[0]}=...)")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "config"
        raise ConfigError(f"{key}: {err.msg if hasattr(err, 'msg') else err}") from None
    config: Config = OmegaConf.to_object(merged)
    _checks(config)
    return config
