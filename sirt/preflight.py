"""``python -m sirt.preflight <the overrides of sirt.train>``: check a model before a run spends hours on it.

Loads the config's tokenizer (and its model where that is cheap: :func:`sirt.loop.preflight.subject`)
and runs the checks ``sirt.train`` runs before round 0 (:mod:`sirt.loop.preflight`): token identity
across the stages, the verifier's answer tokens, BOS/EOS/pad, the estimated memory of a round, the
sequence lengths. Prints a table, writes ``preflight.json`` in the run directory
(``{"checks": {name: {"ok", "detail"}}, "ok"}``), exits 0 when every check passes and 2 otherwise,
naming the failing checks in one line on stderr.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sirt.config.entry import HydraCommand, refuse
from sirt.config.errors import InputError
from sirt.loop.checks import check_adapter, validated
from sirt.loop.preflight import failed, run_checks, subject
from sirt.models.prompts import few_shot_split, posed_config
from sirt.runs.tracker import quiet_third_party
from sirt.tasks.registry import load_splits

log = logging.getLogger("sirt.preflight")


def table(checks: dict[str, dict]) -> str:
    """One line per check: PASS/FAIL, its name and what it found."""
    width = max(map(len, checks))
    return "\n".join(f"{'PASS' if c['ok'] else 'FAIL'}  {name:<{width}}  {c['detail']}" for name, c in checks.items())


COMMAND = HydraCommand("preflight")


@hydra.main(version_base=None, config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    """Check the composed config's model; exit 2 naming the failing checks (or the bad input)."""
    COMMAND.started()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        config = validated(cfg)
        quiet_third_party()
        train, test = load_splits(config.dataset)
        shots, train = few_shot_split(train, config.dataset)  # as a run splits them: a base model's examples
        model, tokenizer, how = subject(config, {p.question for p in test})
        check_adapter(model, config)
        checks = run_checks(model, tokenizer, posed_config(config, tokenizer, shots), train)
    except InputError as err:
        refuse("preflight", err)
    bad = failed(checks)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "preflight.json").write_text(json.dumps({"checks": checks, "ok": not bad}, indent=2) + "\n")
    print(f"preflight of {config.model.name_or_path or 'the organism'} ({how}):\n{table(checks)}")
    if bad:
        print(f"sirt.preflight: failed: {', '.join(bad)} (details in {run_dir / 'preflight.json'})", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    COMMAND.run(main)
