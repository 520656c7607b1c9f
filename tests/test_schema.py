"""One source of defaults: the schemas carry types only, the YAML every value, and the two agree for every option."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from sirt.config import schema
from sirt.config.compose import compose
from sirt.config.validate import GROUP_FIELDS, options, validate
from sirt.plan.curriculum import CURRICULA
from sirt.plan.schedule import SCHEDULES
from sirt.tasks.registry import DATASETS

SCHEMAS = [cls for _, cls in inspect.getmembers(schema, dataclasses.is_dataclass)]
GROUPS = ["dataset", "verifier", "generation", "trainer", "schedule", "external", "curriculum", "logger", "fit",
          "model"]
EXTRA = {"model=hf": ["model.name_or_path=/tmp"]}  # a required value the option leaves to the user


def test_the_schemas_carry_no_default_values():
    with_default = [f"{cls.__name__}.{f.name}" for cls in SCHEMAS for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert len(SCHEMAS) > 10 and not with_default, f"defaults written in the schema, not the YAML: {with_default}"


@pytest.mark.parametrize("override", [f"{g}={o}" for g in GROUPS for o in options(g)])
def test_every_option_gives_every_schema_field_a_value(override):
    """Merging into a schema without defaults fails on any field the YAML leaves out, and on any it adds."""
    config = validate(compose(override, *EXTRA.get(override, [])))
    group = override.split("=")[0]
    assert dataclasses.is_dataclass(getattr(config, group))


def test_registries_are_keyed_by_the_conf_option_names():
    assert sorted(DATASETS) == sorted(options("dataset"))
    assert sorted(SCHEDULES) == sorted(options("schedule"))
    assert sorted(CURRICULA) == sorted(options("curriculum"))
    assert set(GROUP_FIELDS.values()) <= set(GROUPS)
