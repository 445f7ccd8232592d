#!/usr/bin/env python
"""Seconds per round, split by phase, for FedKTL (and Local for comparison).

    python scripts/benchmark_round.py                 # default config, 6 rounds each
    python scripts/benchmark_round.py -gr 10 -m HtFE-cpu --threads 2
    python scripts/benchmark_round.py --algorithms FedKTL,FedKTL-stylegan-3=G.pkl --stylegan_utils DIR

Any flag of main.py can be passed; `ALGO=PATH` in `--algorithms` gives that algorithm its
own `-GPath`. Round 0 is left out of the medians: FedKTL has no
generated images to train on yet, so it is not a representative round.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

SYSTEM_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "system")
if SYSTEM_DIR not in sys.path:
    sys.path.insert(0, SYSTEM_DIR)

import main  # noqa: E402
from utils.result_utils import read_results, result_name  # noqa: E402

PHASES = ("client_training", "prototype_collection", "alignment", "generation", "evaluation", "communication")


def run_and_read_series(argv: list) -> dict:
    """Run main.py with `argv` (which names --out) and return its first repetition's series."""
    if main.main(argv) != 0:
        raise SystemExit(f"run failed: {' '.join(argv)}")
    args = main.parse_args(argv)
    path = os.path.join(args.out, result_name(args.dataset, args.algorithm, args.goal, 0) + ".h5")
    return read_results(path)[0]


def run_and_read(algorithm: str, flags: list, out: str) -> dict:
    algorithm, _, generator_path = algorithm.partition("=")
    if generator_path:
        flags = [*flags, "-GPath", generator_path]
    return run_and_read_series(["-algo", algorithm, "--out", out, "--save_generated_every", "0", *flags])


def median_after_first(values) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.median(values[1:] if len(values) > 1 else values))


def main_cli(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", default="Local,FedKTL",
                        help="comma-separated; ratios are against the first (default Local,FedKTL)")
    known, flags = parser.parse_known_args(argv)
    if "-gr" not in flags:
        flags += ["-gr", "6"]
    rows = {}
    with tempfile.TemporaryDirectory() as out:
        for algorithm in known.algorithms.split(","):
            rows[algorithm.partition("=")[0]] = run_and_read(algorithm, flags, os.path.join(out, str(len(rows))))
    print("\nmedian seconds per round (rounds 1.., round 0 excluded)")
    widths = [max(12, len(name) + 2) for name in rows]
    print(f"{'phase':<24}" + "".join(f"{a:>{w}}" for a, w in zip(rows, widths)))
    for phase in PHASES:
        cells = []
        for series, w in zip(rows.values(), widths):
            column = series["phase_seconds"].get(phase)
            cells.append(f"{median_after_first(column):>{w}.2f}" if column is not None else f"{'-':>{w}}")
        print(f"{phase:<24}" + "".join(cells))
    print(f"{'total round':<24}" + "".join(f"{median_after_first(s['round_seconds']):>{w}.2f}"
                                            for s, w in zip(rows.values(), widths)))
    names = list(rows)
    for name in names[1:]:
        ratio = median_after_first(rows[name]["round_seconds"]) / median_after_first(rows[names[0]]["round_seconds"])
        print(f"{name} / {names[0]} round time: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main_cli())
