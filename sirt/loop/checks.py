"""The checks before compute: the config, then what the config means for the plan and the world.

:func:`~sirt.config.validate.validate` reads the config alone; the checks here need the domain: a schedule
that must sum to 1 over the rounds, a curriculum that must fit them, weights that must be reachable. Every
command that starts work goes through :func:`validated`, so all of them fail the same way, in seconds.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from sirt.config.errors import ConfigError
from sirt.config.schema import Config, LoraSchema
from sirt.config.validate import teacher_schema, validate
from sirt.models.load import tiny_llama
from sirt.models.weights import WeightsUnavailable, check_available
from sirt.plan.curriculum import check_curriculum
from sirt.plan.schedule import eta_schedule
from sirt.stages.generation_vllm import require_vllm


def check_plan(config: Config) -> None:
    """The schedule and the curriculum fit the rounds (ConfigError naming the field otherwise)."""
    eta_schedule(config.schedule, config.rounds)
    check_curriculum(config.curriculum, config.rounds)


def check_teacher_weights(raw: dict) -> None:
    """A local teacher's weights can be loaded here (WeightsUnavailable naming ``external.teacher.model``)."""
    teacher = teacher_schema(raw)
    if teacher.kind != "model" or not teacher.model.name_or_path:
        return
    try:
        check_available(teacher.model.name_or_path, teacher.model.gguf_file)
    except WeightsUnavailable as err:
        raise WeightsUnavailable(f"external.teacher.{err}") from None


def lora_targets(model: torch.nn.Module) -> set[str]:
    """The names ``model.lora.target_modules`` can take: the last part of each linear layer's name (PEFT
    adapts a module whose name is, or ends with ``.``, an entry)."""
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)}


def check_lora_targets(model: torch.nn.Module, lora: LoraSchema) -> None:
    """Every ``model.lora.target_modules`` entry names a linear layer of the model (ConfigError otherwise), so a
    typo is refused when the model loads, not by PEFT at round 1's training."""
    linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    unknown = [t for t in lora.target_modules
               if t != "all-linear" and not any(n == t or n.endswith(f".{t}") for n in linear)]
    if unknown:
        raise ConfigError(f"model.lora.target_modules={list(lora.target_modules)}: the model has no linear layer "
                          f"named {', '.join(unknown)}; its linear layers: {', '.join(sorted(lora_targets(model)))}")


def check_organism_lora(config: Config) -> None:
    """The organism's LoRA targets, on its architecture built on the meta device (no weights, milliseconds)."""
    if config.model.name_or_path or not config.trainer.lora:
        return
    with torch.random.fork_rng(devices=[]), torch.device("meta"):  # tiny_llama seeds torch: keep its state
        check_lora_targets(tiny_llama(config.model.tiny, 8, config.model.teach.seed), config.model.lora)


def validated(cfg: DictConfig) -> Config:
    """The typed config of a composed one, checked against the plan and the world before any model loads."""
    config = validate(cfg)
    check_plan(config)
    check_organism_lora(config)  # a named model's are checked once it loads (sirt.loop.run)
    if config.model.name_or_path:  # fail in seconds, before data loading, when the weights cannot be loaded here
        check_available(config.model.name_or_path, config.model.gguf_file)
    if config.external.source == "teacher":
        check_teacher_weights(config.external.teacher)
    if config.generation.backend == "vllm":  # a missing optional extra is named now, not at round 0's first sample
        require_vllm()
    return config
