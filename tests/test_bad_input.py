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
    with open(os.path.join(root, "damaged_generator.pt"), "wb") as f:
        f.write(b"half a generator")
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
    (["-data", "Tiny", "-nc", "4", "-GPath", "{root}/damaged_generator.pt"], "damaged_generator.pt"),
])
def test_bad_input_is_one_line_with_exit_2(data_root, tmp_path, flags, expected):
    flags = [flag.format(root=data_root) for flag in flags]
    result = run_main("--data_root", data_root, "--out", str(tmp_path), "-gr", "1", *flags)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]


@pytest.mark.parametrize("flags,expected", [
    (["-lr", "nan"], "-lr must be a finite number, got nan"),
    (["-slr", "inf"], "-slr must be a finite number, got inf"),
    (["--sd_guidance", "nan"], "--sd_guidance must be a finite number"),
    (["--ckpt_every", "-1"], "--ckpt_every must be 0 (no checkpoints) or more"),
    (["--ckpt_keep", "0"], "--ckpt_keep must be at least 1"),
    (["-did", "gpu0"], "-did must be a CUDA device index such as 0, got 'gpu0'"),
    (["--threads", "0"], "--threads must be at least 1"),
    (["--seed", "-1"], "--seed must not be negative"),
    (["-ldg", "0"], "-ldg must be positive"),
    (["-tc", "-2"], "-tc must not be negative"),
    (["-nb", "0"], "-nb must be at least 1"),
    (["--save_generated_every", "-1"], "--save_generated_every"),
])
def test_bad_flag_values_are_refused_before_any_work(data_root, tmp_path, capsys, flags, expected):
    import main

    assert main.main(["-data", "Tiny", "--data_root", data_root, "-nc", "4", "-dev", "cpu",
                      "--out", str(tmp_path), *flags]) == 2
    error = capsys.readouterr().err
    assert expected in error
    assert error.count("\n") == 1 and error.startswith("error: ")
    assert not os.listdir(tmp_path)  # refused before anything was written


def test_unknown_flag_is_rejected_by_the_parser(tmp_path):
    result = run_main("--no_such_flag", "1")
    assert result.returncode == 2
    assert "unrecognized arguments: --no_such_flag" in result.stderr
    assert "Traceback" not in result.stderr
