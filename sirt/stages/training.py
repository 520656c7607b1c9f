"""Training: TRL's SFTTrainer on (prompt, completion) rows, with a LoRA adapter merged back.

Prompt/completion rows give completion-only loss, i.e. exactly "minimise U on the picks"; they
reach TRL as ids (:mod:`sirt.models.tokens`), tokenized as sampling and verification tokenize them.
A round trains a fresh LoRA adapter and merges it, because TRL refuses a PeftModel together
with a new ``peft_config``; the merged weights carry the round's learning into the next.
In a bf16/fp16 model the merge goes through fp32 master weights (:class:`MasterWeights`), so
updates below the weights' rounding step add up over rounds instead of being rounded away.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel
from peft.tuners import lora as peft_lora
from peft.utils import transpose
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from sirt.config.schema import LoraSchema, TrainerSchema
from sirt.models.tokens import training_row
from sirt.models.version import bump

log = logging.getLogger(__name__)
MASTER = "sirt_master"  # the attribute of a bf16/fp16 model that holds its MasterWeights


CHECKPOINTING_MIN_PARAMS = 1_000_000_000
"""``trainer.gradient_checkpointing=auto`` turns checkpointing on for a CUDA model of at least this many
parameters: from about 1B parameters (Llama-3.2-3B, Phi-3) a batch's activations weigh as much as the
weights, so recomputing them in the backward pass (about a third more compute) is what lets a round fit on
one GPU; a smaller model fits without it and would only run slower."""


def gradient_checkpointing(setting: bool | str, n_params: int, cuda: bool) -> bool:
    """Whether SFT recomputes activations instead of keeping them (``trainer.gradient_checkpointing``):
    ``auto`` for a model of :data:`CHECKPOINTING_MIN_PARAMS` or more on a GPU, never on a CPU (where
    memory is not the limit and checkpointing only costs time); ``true``/``false`` force it."""
    if setting == "auto":
        return cuda and n_params >= CHECKPOINTING_MIN_PARAMS
    return bool(setting)


def device_settings(dtype: str, checkpointing: bool = False) -> dict:
    """Settings that are right for the device: TRL defaults bf16 and gradient checkpointing on,
    which on a CPU is ~20x slower, so both follow the hardware unless the config insists."""
    cuda = torch.cuda.is_available()
    bf16 = cuda and dtype in ("auto", "bfloat16") and torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": False, "gradient_checkpointing": checkpointing, "use_cpu": not cuda}


def lora_config(cfg: LoraSchema) -> LoraConfig:
    """The PEFT adapter of one round."""
    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )


def trainer(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, str]],
    cfg: TrainerSchema,
    seed: int,
    lora: LoraSchema | None,
    output_dir: str,
    dtype: str = "auto",
    progress: bool = True,
) -> SFTTrainer:
    """TRL's SFTTrainer on ``rows`` ({prompt, completion}), handed as ids
    (:func:`sirt.models.tokens.training_row`) so it trains on the very tokens generation and
    verification saw. TRL treats rows with ``input_ids`` as pre-tokenized and uses their ``labels``."""
    args = SFTConfig(
        output_dir=output_dir,
        learning_rate=cfg.lr,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        seed=seed,
        data_seed=seed,
        logging_steps=max(1, cfg.logging_steps),
        save_strategy="no",
        report_to=[],
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        train_sampling_strategy=cfg.sampling_strategy,
        **device_settings(dtype, gradient_checkpointing(cfg.gradient_checkpointing, model.num_parameters(),
                                                        torch.cuda.is_available())),
    )
    one_device(args)
    dataset = Dataset.from_list([training_row(tokenizer, r["prompt"], r["completion"]) for r in rows])
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(lora) if lora is not None else None,
    )


_warned_gpus: set[int] = set()  # GPU counts already reported by one_device (one line per process)


def one_device(args: SFTConfig) -> SFTConfig:
    """One process trains on one device. With several GPUs visible and no distributed launch, the HF Trainer
    would wrap the model in ``nn.DataParallel`` (n_gpu > 1): a larger effective batch, fewer steps, and
    another result than the vLLM backend's or a one-GPU run's. sirt trains on the first GPU instead, and
    says so once; data-parallel rounds are started with ``torchrun``."""
    if args.n_gpu > 1:
        if args.n_gpu not in _warned_gpus:
            _warned_gpus.add(args.n_gpu)
            log.warning("%d GPUs are visible to this process: SFT runs on one (%s), not through DataParallel; "
                        "for data-parallel rounds start the run with torchrun --nproc_per_node %d", args.n_gpu,
                        args.device, args.n_gpu)
        args._n_gpu = 1  # what the Trainer itself does for a model-parallel model
    return args


def sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, str]],
    cfg: TrainerSchema,
    seed: int,
    lora: LoraSchema | None,
    dtype: str = "auto",
    progress: bool = True,
    adapter_dir: Path | None = None,
) -> tuple[PreTrainedModel, dict[str, float]]:
    """Fine-tune on ``rows`` ({prompt, completion}); returns the (merged) model and train stats.

    With ``lora`` the adapter is merged into the weights before returning (:func:`merge_lora`),
    so the result is a plain model again, and saved first to ``adapter_dir`` if given; without
    ``lora`` the whole model is trained (used to teach the organism).
    """
    if not rows:
        return model, {"train_loss": float("nan"), "train_steps": 0}
    with tempfile.TemporaryDirectory(prefix="sirt-sft-") as out:
        sft_trainer = trainer(model, tokenizer, rows, cfg, seed, lora, out, dtype, progress)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        result = sft_trainer.train()
    trained = sft_trainer.model
    if lora is not None:
        if adapter_dir is not None:
            save_adapter(trained, adapter_dir)
        trained = merge_lora(trained, cfg.master_device)
    else:
        bump(trained)  # new weights: a sampler holding a copy (vLLM) pushes them before it samples again
    trained.eval()
    return trained, {"train_loss": float(result.training_loss), "train_steps": int(result.global_step)}


def save_adapter(model: PeftModel, path: Path) -> None:
    """The round's LoRA adapter in PEFT format (``adapter_config.json``, ``adapter_model.safetensors``).

    A small share of a merged checkpoint (0.5% of Llama-3-8B at r=16): with every round's adapter
    kept, model_t is the base model with the adapters of rounds 1..t merged in order by
    :func:`merge_lora` (round t's alone with ``trainer.restart_from_base``; a round without rows
    trains nothing and has none), so full checkpoints are needed only to resume and where
    ``keep_models=all`` asks for them.
    """
    model.save_pretrained(path)


def merge_lora(model: PeftModel, master_device: str = "auto") -> PreTrainedModel:
    """The base model with ``model``'s active adapter merged in, and the adapter removed.

    fp32 weights merge with PEFT's ``merge_and_unload``, as always. bf16/fp16 weights merge
    through the model's :class:`MasterWeights` (made on the first merge), because adding the
    fp32 delta into them in place rounds most of a small update away.
    """
    layers = lora_layers(model)
    if all(layer.get_base_layer().weight.dtype == torch.float32 for layer in layers.values()):
        merged = model.merge_and_unload()
        bump(merged)  # new weights, written through .data: a sampler holding a copy (vLLM) must hear of it
        return merged
    base = model.get_base_model()
    master = getattr(base, MASTER, None) or MasterWeights(master_device)
    adapter = model.active_adapter
    for name, layer in layers.items():
        master.add(name, layer.get_base_layer().weight, lora_delta(layer, adapter))
    merged = model.unload()
    setattr(merged, MASTER, master)
    bump(merged)
    return merged


def lora_layers(model: PeftModel) -> dict[str, peft_lora.LoraLayer]:
    """The LoRA layers of ``model`` by module name (the same names every round)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, peft_lora.LoraLayer)}


@torch.no_grad()
def lora_delta(layer: peft_lora.LoraLayer, adapter: str) -> torch.Tensor:
    """The update ``adapter`` makes to ``layer``'s weight, B @ A * scaling, computed in fp32.

    PEFT's own product is in the adapter's dtype; TRL keeps adapters in fp32 over a bf16 base
    (PEFT's ``autocast_adapter_dtype``), and the cast here holds even where it does not.
    Layers other than Linear (a LoRA on embeddings) fall back to PEFT's product.
    """
    if not isinstance(layer, peft_lora.Linear):
        return layer.get_delta_weight(adapter).float()
    A, B = layer.lora_A[adapter].weight.float(), layer.lora_B[adapter].weight.float()
    return transpose(B @ A, layer.fan_in_fan_out) * layer.scaling[adapter]


class MasterWeights:
    """fp32 copies of the weights LoRA trains in a bf16/fp16 model, so that rounds' updates add up.

    Near a weight of 0.02 the bf16 step is 2^-13 (1.2e-4): an update of 1e-5 (paper 1's lr) merged
    into bf16 rounds away, and round after round stays lost. Here each round's delta is added to
    the weight's fp32 copy and the model gets that copy rounded once, so the bf16 model is always
    the nearest one to the fp32 sum of all rounds. Costs 4 bytes per trained weight: in pinned host
    memory for a model on a GPU (``trainer.master_device=auto`` or ``cpu``; 27.9 GB for Llama-3-8B's
    adapted weights, which the GPU then keeps for the KV cache), on the weight's device with ``same``.

    The copies live on the model (attribute ``sirt_master``) and end with it: a model loaded
    again (``trainer.restart_from_base``, or a run resumed from a saved checkpoint, which holds
    bf16 weights only) starts new copies from its bf16 weights, losing what earlier rounds left
    below the rounding step (at most half a step per weight). A weight that no longer equals its
    copy rounded (changed elsewhere, e.g. fully fine-tuned) also restarts its copy from itself.
    """

    def __init__(self, device: str = "auto") -> None:
        self.device = device  # trainer.master_device: auto | cpu | same
        self.weights: dict[str, torch.Tensor] = {}

    def home(self, weight: torch.Tensor) -> torch.device:
        """Where the copy of ``weight`` lives: the host for ``cpu`` (and ``auto`` on a GPU), else its device."""
        host = self.device == "cpu" or (self.device == "auto" and weight.device.type != "cpu")
        return torch.device("cpu") if host else weight.device

    def fresh(self, weight: torch.Tensor) -> torch.Tensor:
        """A new fp32 copy of ``weight`` at :meth:`home`, pinned on the host when the weight is on a GPU
        (a pinned copy moves at full bandwidth)."""
        master = weight.detach().to(self.home(weight), torch.float32, copy=True)
        return master.pin_memory() if master.device.type == "cpu" and weight.device.type == "cuda" else master

    @torch.no_grad()
    def add(self, name: str, weight: torch.Tensor, delta: torch.Tensor) -> None:
        """Add ``delta`` to the copy of ``weight`` (named ``name``) and write the copy into ``weight``."""
        master = self.weights.get(name)
        if master is None or not torch.equal(master.to(weight.device, weight.dtype), weight):
            master = self.fresh(weight)
        master += delta.to(master.device)
        weight.data.copy_(master)
        self.weights[name] = master
