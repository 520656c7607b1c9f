"""The checks before compute: the config, then what the config means for the plan and the world.

:func:`~sirt.config.validate.validate` reads the config alone; the checks here need the domain: a schedule
that must sum to 1 over the rounds, a curriculum that must fit them, weights that must be reachable. Every
command that starts work goes through :func:`validated`, so all of them fail the same way, in seconds.
"""

from __future__ import annotations

import hashlib
import json

import torch
from omegaconf import DictConfig, OmegaConf

from sirt.config.errors import ConfigError, InputError
from sirt.config.schema import Config, LoraSchema
from sirt.config.validate import teacher_schema, validate
from sirt.models.load import tiny_llama
from sirt.models.weights import WeightsUnavailable, check_available
from sirt.plan.curriculum import check_curriculum
from sirt.plan.schedule import eta_schedule
from sirt.runs.rundir import RunDir
from sirt.stages.backends import BACKENDS, backend
from sirt.stages.external import SOURCES


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


def check_adapter(model: torch.nn.Module, config: Config) -> None:
    """A loaded model's LoRA targets, when the rounds train an adapter: what every command that loads one checks."""
    if config.trainer.lora:
        check_lora_targets(model, config.model.lora)


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
    if SOURCES[config.external.source].needs_teacher:
        check_teacher_weights(config.external.teacher)
    if config.generation.backend not in BACKENDS:
        raise ConfigError(f"generation.backend={config.generation.backend!r}: one of {', '.join(BACKENDS)}")
    backend(config.generation).check_available()  # a missing optional extra is named now, not at round 0
    return config


def config_hash(config: Config) -> str:
    """Identity of what a run computes (logging excluded), to refuse resuming a different run."""
    blob = OmegaConf.to_container(OmegaConf.structured(config))
    blob.pop("logger")
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def resume_state(run: RunDir, config: Config) -> dict:
    """The committed state a run goes on from ({} for a new run), once the directory is checked.

    Raises InputError (one message, before any model loads) for a directory this config cannot
    continue: another config's run, a damaged state.json or metrics.jsonl, or a missing file the
    next round needs (the newest checkpoint and its picks). A finished run needs neither.
    """
    state = run.state()
    if not state:
        return {}
    if state.get("config_hash") != config_hash(config):
        raise ConfigError(f"{run.root} holds a run with a different config; resume it unchanged or use a new "
                          "hydra.run.dir")
    last = state["round"]
    rounds = [row.get("round") for row in run.metrics()]
    if rounds != list(range(last + 1)):
        raise InputError(f"{run.metrics_path} holds rounds {rounds}, but state.json commits rounds 0..{last}; "
                         "restore the file or start again in a new hydra.run.dir")
    if last < config.rounds:  # round last+1 starts from round last's checkpoint and trains on its picks
        picks = range(last + 1) if config.trainer.restart_from_base else [last]
        for path in [run.model_dir(last), *(run.round_dir(t) / "selections.jsonl" for t in picks)]:
            if not path.exists():
                raise InputError(f"{path} is missing: round {last + 1} resumes from it; restore it or start again "
                                 "in a new hydra.run.dir")
    return state
