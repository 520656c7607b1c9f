"""Refit a run: ``python -m sirt.fit RUN_DIR [--forecast-k K] [--no-plots] [--figure PATH [--title T]]``.

Rewrites ``RUN_DIR/fit.json`` and ``RUN_DIR/plots`` and prints what a researcher checks
first. Exits 0 whenever the run could be read, even if no fit could be made (fit.json then
says why), and 2 in one line if RUN_DIR has no readable metrics.jsonl. ``--figure PATH`` also copies the trajectory plot
(U_s, U_v, G, acc with their fitted curves; titled ``--title``, else the run's folder name) to PATH:
``make figure RUN=...`` makes the README's figure this way; it exits 2 when there is no curve to draw.
"""

from __future__ import annotations

import shutil
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
    parser.add_argument("--figure", type=Path, default=None,
                        help="also copy the trajectory plot (data and fitted curves) to this path")
    parser.add_argument("--title", default=None, help="the plots' title (default: the run's folder name)")
    args = parser.parse_args(argv)
    if not (args.run_dir / "metrics.jsonl").is_file():
        refuse("fit", f"{args.run_dir / 'metrics.jsonl'} does not exist")
    plots = not args.no_plots or args.figure is not None
    with refusals("fit"):
        report = fit_run(args.run_dir, forecast_k=args.forecast_k, make_plots=plots, title=args.title)
    print(summarize(report, args.run_dir))
    if args.figure is not None:
        drawn = args.run_dir / "plots" / "trajectories.png"
        if "plots/trajectories.png" not in report["plots"]["files"]:
            print(f"sirt.fit: no trajectory plot for {args.run_dir} ({report['status']})", file=sys.stderr)
            return 2
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(drawn, args.figure)
        print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
