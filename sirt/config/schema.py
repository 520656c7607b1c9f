"""Typed schemas of every config group.

Hydra composes YAML from ``conf/``; :func:`sirt.config.validate.validate` merges it into these
dataclasses, so an unknown or mistyped field fails before anything heavy starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING  # a field without a default: its value comes from the YAML


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
    test_id: str | None = MISSING  # the test split's own hub copy (MATH-500); null = id's test split


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
    """Graphs of the graph task (sirt.tasks.graph): one size for every level, so path length is the difficulty."""

    nodes: int = 6
    chords: int = 1


@dataclass
class DatasetSchema:
    name: str = "arithmetic"
    path: str | None = None
    hub: HubSchema | None = None  # None: a dataset generated in code (its YAML has no hub block)
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
    gradient_checkpointing: bool | str = MISSING  # auto | true | false


@dataclass
class ScheduleSchema:
    name: str = "none"
    eta: list[float] = field(default_factory=list)
    round: int = 8


@dataclass
class TeacherSchema:
    """``external.teacher``: where teacher responses come from."""

    kind: str = "model"  # model | http
    model: ModelSchema = field(default_factory=ModelSchema)
    base_url: str | None = None
    model_name: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 30.0
    retries: int = 3
    max_tokens: int = 256


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
