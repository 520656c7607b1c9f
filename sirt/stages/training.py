"""Training: TRL's SFTTrainer on (prompt, completion) rows, with a LoRA adapter merged back.

Prompt/completion rows give completion-only loss, i.e. exactly "minimise U on the picks".
A round trains a fresh LoRA adapter and merges it, because TRL refuses a PeftModel together
with a new ``peft_config``; the merged weights carry the round's learning into the next.
"""

from __future__ import annotations

import logging
import os
import tempfile

import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from trl import SFTConfig, SFTTrainer

from sirt.config.schema import LoraSchema, TrainerSchema

log = logging.getLogger(__name__)


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


def sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: list[dict[str, str]],
    cfg: TrainerSchema,
    seed: int,
    lora: LoraSchema | None,
    dtype: str = "auto",
    progress: bool = True,
) -> tuple[PreTrainedModel, dict[str, float]]:
    """Fine-tune on ``rows`` ({prompt, completion}); returns the (merged) model and train stats.

    With ``lora`` the adapter is merged into the weights before returning, so the result is a
    plain model again; without it the whole model is trained (used to teach the organism).
    """
    if not rows:
        return model, {"train_loss": float("nan"), "train_steps": 0}
    checkpointing = gradient_checkpointing(cfg.gradient_checkpointing, model.num_parameters(),
                                           torch.cuda.is_available())
    with tempfile.TemporaryDirectory(prefix="sirt-sft-") as out:
        args = SFTConfig(
            output_dir=out,
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
            **device_settings(dtype, checkpointing),
        )
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=lora_config(lora) if lora is not None else None,
        )
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        result = trainer.train()
    trained = trainer.model
    if lora is not None:
        trained = trained.merge_and_unload()
    trained.eval()
    return trained, {"train_loss": float(result.training_loss), "train_steps": int(result.global_step)}
