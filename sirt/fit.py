"""Refit a run: ``python -m sirt.fit RUN_DIR [--forecast-k K] [--no-plots]``.

Rewrites ``RUN_DIR/fit.json`` and ``RUN_DIR/plots`` and prints what a researcher checks
first. Exits 0 whenever the run could be read, even if no fit could be made (fit.json then
says why), and 2 in one line if RUN_DIR has no readable metrics.jsonl.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sirt.config.entry import Parser, int_at_least, refusals, refuse
from sirt.theory.report import fit_run
from sirt.theory.summary import summarize


def main(argv: list[str] | None = None) -> int:
    parser = Parser("fit", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="run directory holding metrics.jsonl")
    parser.add_argument("--forecast-k", type=int_at_least(3), default=5,
                        help="rounds the headline forecast is fitted on (default 5)")
    parser.add_argument("--no-plots", action="store_true", help="write fit.json only")
    args = parser.parse_args(argv)
    if not (args.run_dir / "metrics.jsonl").is_file():
        refuse("fit", f"{args.run_dir / 'metrics.jsonl'} does not exist")
    with refusals("fit"):
        report = fit_run(args.run_dir, forecast_k=args.forecast_k, make_plots=not args.no_plots)
    print(summarize(report, args.run_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
