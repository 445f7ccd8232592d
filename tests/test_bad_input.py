"""User mistakes end in one line that names the fix, exit status 2, and no traceback."""
import os
import subprocess
import sys

import pytest

from tests.helpers import make_tiny_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_tiny_dataset(str(root), num_clients=4)
    broken = make_tiny_dataset(str(root), name="Broken", num_clients=4)
    with open(os.path.join(broken, "train", "2.npz"), "wb") as f:
        f.write(b"this is not a zip archive")
    return str(root)


def run_main(*flags, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "system", "main.py"), "-dev", "cpu", *flags],
                          capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.parametrize("flags,expected", [
    (["-data", "NoSuchData"], "available datasets"),
    (["-data", "Cifar10"], "generate_Cifar10.py"),
    (["-data", "Broken", "-nc", "4"], "2.npz"),
    (["-data", "Tiny", "-nc", "4", "-algo", "FedNope"], "choose one of"),
    (["-data", "Tiny", "-nc", "4", "-m", "ResNet999"], "ResNet999"),
    (["-data", "Tiny", "-nc", "4", "-nb", "7"], "7"),
    (["-data", "Tiny", "-nc", "9"], "9"),
    (["-data", "Tiny", "-nc", "4", "-GPath", "/no/such/generator.pt"], "-GPath"),
    (["-data", "Tiny", "-nc", "4", "-gr", "0"], "-gr"),
])
def test_bad_input_is_one_line_with_exit_2(data_root, tmp_path, flags, expected):
    result = run_main("--data_root", data_root, "--out", str(tmp_path), "-gr", "1", *flags)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]


def test_unknown_flag_is_rejected_by_the_parser(tmp_path):
    result = run_main("--no_such_flag", "1")
    assert result.returncode == 2
    assert "unrecognized arguments: --no_such_flag" in result.stderr
    assert "Traceback" not in result.stderr
