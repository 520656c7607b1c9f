"""The checks before compute: the config, then what the config means for the plan and the world.

:func:`~sirt.config.validate.validate` reads the config alone; the checks here need the domain: a schedule
that must sum to 1 over the rounds, a curriculum that must fit them, weights that must be reachable. Every
command that starts work goes through :func:`validated`, so all of them fail the same way, in seconds.
"""

from __future__ import annotations

from omegaconf import DictConfig

from sirt.config.schema import Config
from sirt.config.validate import teacher_schema, validate
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


def validated(cfg: DictConfig) -> Config:
    """The typed config of a composed one, checked against the plan and the world before any model loads."""
    config = validate(cfg)
    check_plan(config)
    if config.model.name_or_path:  # fail in seconds, before data loading, when the weights cannot be loaded here
        check_available(config.model.name_or_path, config.model.gguf_file)
    if config.external.source == "teacher":
        check_teacher_weights(config.external.teacher)
    if config.generation.backend == "vllm":  # a missing optional extra is named now, not at round 0's first sample
        require_vllm()
    return config
