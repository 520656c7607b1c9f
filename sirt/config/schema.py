"""Typed schemas of every config group.

Hydra composes YAML from ``conf/``; :func:`sirt.config.validate.validate` merges it into these
dataclasses, so an unknown or mistyped field fails before anything heavy starts. The schemas carry
types only: every default is written once, in the YAML (``tests/test_config.py`` holds both to that).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TinySchema:
    """Architecture of the embedded model organism (a LlamaForCausalLM built from config)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_position_embeddings: int


@dataclass
class TeachSchema:
    """How the organism is taught, once and cached: to solve imperfectly, then to verify well."""

    solve_problems: int
    slip_rate: float
    layout_rate: float
    solve_steps: int
    verify_problems: int
    verify_samples: int
    own_errors: int
    verify_steps: int
    garble_rate: float
    replay_fraction: float
    lr: float
    batch_size: int
    seed: int
    gate: bool
    gate_problems: int
    gate_samples: int
    gate_auc: float
    gate_lift: float
    gate_extensions: int
    gate_steps: int
    gate_lr_scale: float


@dataclass
class LoraSchema:
    r: int
    alpha: int
    dropout: float
    target_modules: list[str]


@dataclass
class ModelSchema:
    name: str
    name_or_path: str | None
    dtype: str
    attn_implementation: str | None
    chat_template: bool
    chat_template_kwargs: dict[str, Any]
    gguf_file: str | None
    random_init: bool  # the architecture of name_or_path's config with random weights (no weights read)
    tiny: TinySchema | None  # the organism only; null for a named model
    teach: TeachSchema | None  # the organism only; null for a named model
    lora: LoraSchema


@dataclass
class HubSchema:
    """A dataset on the Hugging Face hub, read with ``datasets.load_dataset``."""

    id: str | None
    configs: list[str]
    train_split: str
    test_split: str
    test_id: str | None  # the test split's own hub copy (MATH-500); null = id's test split


@dataclass
class ChatSchema:
    """Prompt texts for chat-template models: the user turn that poses a question, and the verifier's turns."""

    system: str | None
    user: str
    verify_tf: str
    verify_qe: str


@dataclass
class GraphSchema:
    """Graphs of the graph task (sirt.tasks.graph): one size for every level, so path length is the difficulty."""

    nodes: int
    chords: int


@dataclass
class DatasetSchema:
    name: str
    path: str | None
    hub: HubSchema
    prompt_template: str
    chat: ChatSchema
    levels: list[int]
    max_operand: int
    graph: GraphSchema
    n_train: int
    n_test: int
    seed: int
    few_shot: int  # worked examples before a plain (non-chat) prompt, held out of the train split
    stop: list[str]  # stop strings a plain model's answers end at when generation.stop is empty


@dataclass
class VerifierSchema:
    method: str
    sigma: float
    template: str
    words: list[str]
    ratings: list[str]
    batch_size: int


@dataclass
class VllmSchema:
    """Engine settings of the vLLM backend (used only with ``generation.backend=vllm``)."""

    gpu_memory_utilization: float
    max_model_len: int


@dataclass
class GenerationSchema:
    backend: str
    n_samples: int
    max_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    batch_size: int
    pass_k: list[int]
    vllm: VllmSchema
    stop: list[str]  # the response ends before the first of these
    probe_samples: int  # samples per round re-scored by the training model (sirt.stages.agreement)
    probe_tolerance: float | None  # largest per-token log-prob difference accepted; None: by dtype


@dataclass
class TrainerSchema:
    lr: float
    epochs: float
    max_steps: int
    batch_size: int
    grad_accum: int
    lr_scheduler: str
    warmup_steps: int
    weight_decay: float
    max_length: int
    logging_steps: int
    restart_from_base: bool
    lora: bool
    verifier_replay: float
    solver_replay: float
    gradient_checkpointing: bool | str  # auto | true | false
    master_device: str  # auto | cpu | same: where a bf16/fp16 model's fp32 master weights live
    sampling_strategy: str  # random | group_by_length: how rows are drawn into batches


@dataclass
class ScheduleSchema:
    name: str
    eta: list[float]
    round: int


@dataclass
class TeacherSchema:
    """``external.teacher``: the model that writes external targets, local or behind an HTTP API.

    Types only: every default is in ``conf/external/teacher.yaml``. ``ExternalSchema.teacher``
    stays a free-form dict (a gold or oracle run's identity does not carry the teacher's fields);
    :func:`sirt.config.validate.check_teacher` types and checks it when the source is teacher.
    """

    kind: str  # model | http
    model: ModelSchema
    base_url: str | None
    endpoint: str  # chat (/chat/completions) | completions (the legacy /completions)
    model_name: str | None
    wrap: bool
    api_key_env: str
    max_tokens: int
    concurrency: int
    timeout: float
    retries: int


@dataclass
class ExternalSchema:
    source: str
    budget: int
    teacher: dict[str, Any]


@dataclass
class CurriculumSchema:
    """Which levels a round's prompts come from (paper 2); the rules live in sirt.curriculum."""

    name: str
    weights: list[float]
    advance_every: int
    threshold: float | None
    replay: float
    per_round: list[Any]


@dataclass
class LoggerSchema:
    name: str
    project: str
    entity: str | None
    mode: str
    group: str | None
    table_rows: int
    system_stats: bool
    stats_interval: float
    log_adapters: bool


@dataclass
class FitSchema:
    enabled: bool
    forecast_k: int
    plots: bool


@dataclass
class Config:
    seed: int
    rounds: int
    prompts_per_round: int
    keep_models: str
    threads: int
    model: ModelSchema
    dataset: DatasetSchema
    verifier: VerifierSchema
    generation: GenerationSchema
    trainer: TrainerSchema
    schedule: ScheduleSchema
    external: ExternalSchema
    curriculum: CurriculumSchema
    logger: LoggerSchema
    fit: FitSchema
