"""Training: TRL's SFTTrainer on (prompt, completion) rows, with a LoRA adapter merged back.

Prompt/completion rows give completion-only loss, i.e. exactly "minimise U on the picks"; they
reach TRL as ids (:mod:`sirt.models.tokens`), tokenized as sampling and verification tokenize them.
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
from sirt.models.tokens import training_row

log = logging.getLogger(__name__)


def device_settings(dtype: str) -> dict:
    """Settings that are right for the device: TRL defaults bf16 and gradient checkpointing on,
    which on a CPU is ~20x slower, so both follow the hardware unless the config insists."""
    cuda = torch.cuda.is_available()
    bf16 = cuda and dtype in ("auto", "bfloat16") and torch.cuda.is_bf16_supported()
    return {"bf16": bf16, "fp16": False, "gradient_checkpointing": False, "use_cpu": not cuda}


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
        **device_settings(dtype),
    )
    dataset = Dataset.from_list([training_row(tokenizer, r["prompt"], r["completion"]) for r in rows])
    return SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(lora) if lora is not None else None,
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
    with tempfile.TemporaryDirectory(prefix="sirt-sft-") as out:
        sft_trainer = trainer(model, tokenizer, rows, cfg, seed, lora, out, dtype, progress)
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        result = sft_trainer.train()
    trained = sft_trainer.model
    if lora is not None:
        trained = trained.merge_and_unload()
    trained.eval()
    return trained, {"train_loss": float(result.training_loss), "train_steps": int(result.global_step)}
