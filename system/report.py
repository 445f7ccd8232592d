#!/usr/bin/env python
"""Paper-style tables and accuracy curves from the result files of a sweep.

    python system/report.py results/ [more_results/ ...] --out report/ [--metric rs_test_acc]

Writes table.md and table.csv (best accuracy, mean ± std over repetitions or one run's
value, in percent, with the number of runs and the rounds they trained), comm.md (mean
million floats up / down per round) and curves_<setting>.png per setting. Cells, rows or
columns that set runs of different lengths side by side get a warning under the table and
on stderr; files left out (diverged or unreadable runs) are listed under it too.
How runs are grouped into settings is described in system/utils/report_utils.py.
"""
import argparse
import os
import sys

SYSTEM_DIR = os.path.dirname(os.path.abspath(__file__))
if SYSTEM_DIR not in sys.path:
    sys.path.insert(0, SYSTEM_DIR)

from utils.errors import UserError  # noqa: E402
from utils.report_utils import load_runs, write_report  # noqa: E402


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python system/report.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="+", help="folders holding *.h5 result files")
    parser.add_argument("--out", required=True, help="folder for the tables and plots")
    parser.add_argument("--metric", default="rs_test_acc",
                        help="series of fractions to report, higher is better (default rs_test_acc)")
    return parser.parse_args(argv)


def warn(line: str) -> None:
    print(line, file=sys.stderr)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        skipped = []
        runs = load_runs(args.results, args.metric, warn=warn, skipped=skipped)
        written = write_report(runs, args.out, args.metric, skipped=skipped, warn=warn)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    settings = sorted({run.setting for run in runs})
    print(f"{len(runs)} run(s), {len(settings)} setting(s): {', '.join(settings)}")
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
