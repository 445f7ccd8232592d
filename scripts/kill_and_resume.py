#!/usr/bin/env python
"""Kill a run with SIGKILL at random moments, resume it, and compare with an uninterrupted run.

    python scripts/kill_and_resume.py --trials 3 -- -gr 6 --seed 3

runs `python system/main.py <flags> --out WORK/whole` once (with `--ckpt_every 1` unless the
flags set a checkpoint schedule), then for each trial the same
command into WORK/trial_<i>, killed after a random fraction of the uninterrupted run's
wall time, followed by the command plus `--resume`. It prints, per trial, when it was
killed, the round it resumed after, and whether `rs_test_acc` equals the uninterrupted
run's element for element; the exit status is 1 if any trial differs.
"""
import argparse
import glob
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

SYSTEM_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "system")
sys.path.insert(0, SYSTEM_DIR)

from utils.result_utils import read_results  # noqa: E402


def run_main(flags: list, out: str, resume: bool = False, kill_after: float = None) -> tuple[float, str]:
    """(wall seconds, stdout) of one main.py run; killed with SIGKILL after `kill_after` seconds."""
    command = [sys.executable, os.path.join(SYSTEM_DIR, "main.py"), *flags, "--out", out]
    if resume:
        command.append("--resume")
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if kill_after is not None:
        try:
            output, _ = process.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            output, _ = process.communicate()
    else:
        output, _ = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"error: {' '.join(command)} exited with {process.returncode}:\n{output[-2000:]}")
    return time.perf_counter() - start, output


def accuracies(out: str) -> np.ndarray:
    found = sorted(glob.glob(os.path.join(out, "*.h5")))
    if len(found) != 1:
        raise SystemExit(f"error: expected one results file in {out}, found {len(found)}")
    return read_results(found[0])[0]["rs_test_acc"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--work", default=None, help="folder for the runs (default: a temporary one)")
    parser.add_argument("flags", nargs=argparse.REMAINDER, help="main.py flags, after --")
    args = parser.parse_args(argv)
    flags = args.flags[1:] if args.flags[:1] == ["--"] else args.flags
    if "--out" in flags or "--resume" in flags:
        parser.error("leave out --out and --resume: this script sets them")
    if not any(flag in flags for flag in ("--ckpt_every", "--ckpt_minutes")):
        # The default schedule writes by the clock (every 5 minutes): a short run would
        # have nothing to resume from, so this experiment checkpoints every round.
        flags = [*flags, "--ckpt_every", "1"]
    work = args.work or tempfile.mkdtemp(prefix="kill_and_resume_")
    moments = random.Random(args.seed)

    whole_seconds, _ = run_main(flags, os.path.join(work, "whole"))
    expected = accuracies(os.path.join(work, "whole"))
    print(f"uninterrupted: {whole_seconds:.1f} s, rs_test_acc {np.round(expected, 4).tolist()}", flush=True)
    print(f"{'trial':>5}  {'killed after':>12}  {'resumed after round':>19}  {'equal':>5}")
    failures = 0
    for trial in range(args.trials):
        out = os.path.join(work, f"trial_{trial}")
        kill_after = moments.uniform(0.05, 0.85) * whole_seconds
        run_main(flags, out, kill_after=kill_after)
        _, output = run_main(flags, out, resume=True)
        found = re.search(r"resuming after round (\d+)", output)
        resumed = (found.group(1) if found else "none (afresh)" if "no checkpoint" in output
                   else "(had finished)" if "already finished" in output else "?")
        equal = np.array_equal(accuracies(out), expected)
        failures += not equal
        print(f"{trial:>5}  {kill_after:>10.1f} s  {resumed:>19}  {'yes' if equal else 'NO':>5}", flush=True)
    print(f"runs in {work}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
