"""scripts/transfer_gradients.py: the per-round measurement of FedKTL's two loss terms."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "transfer_gradients.py")


def run(*flags):
    return subprocess.run([sys.executable, SCRIPT, *flags], capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_measures_both_terms_from_the_second_round_on(data_root):
    done = run("-data", "Tiny", "-nc", "4", "--data_root", data_root, "-gr", "3", "-se", "2", "--every", "1",
               "-dev", "cpu")
    assert done.returncode == 0, done.stderr
    table = done.stdout.split("round | steps |", 1)[1].strip().splitlines()[1:]
    # Round 0 trains without generated pairs: nothing to measure; rounds 1 and 2 are measured.
    assert [line.split(" | ")[0] for line in table] == ["1", "2"]
    for line in table:
        cells = line.split(" | ")
        assert int(cells[1]) > 0
        losses = [float(c) for c in cells[2:6]]
        assert all(v > 0 for v in losses)
        cosine = float(re.match(r"(-?[\d.]+) ±", cells[6]).group(1))
        assert -1 <= cosine <= 1


def test_only_fedktl_and_a_positive_step_gap():
    done = run("-algo", "Local")
    assert done.returncode == 2 and done.stderr.strip() == "error: this script measures FedKTL: drop -algo"
    done = run("--every", "0")
    assert done.returncode == 2 and done.stderr.strip() == "error: --every must be at least 1"
