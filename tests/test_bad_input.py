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
    (["-data", "NoSuchData", "-m", "ResNet999"], "ResNet999"),  # told before the dataset is looked for
    (["-data", "../Tiny", "-nc", "4"], "-data must be a plain name"),
    (["-data", "..", "-nc", "4"], "-data must be a plain name"),
    (["-data", "Tiny", "-nc", "4", "-go", "a/b"], "-go must be a plain name"),
    (["-data", "Tiny", "-nc", "4", "-go", ".."], "-go must be a plain name"),
    (["-data", "Tiny", "-nc", "4", "-go", ""], "-go must be a plain name"),
    (["-data", "Tiny", "-nc", "4", "-nb", "7"], "drop -nb or pass -nb 10"),
    (["-data", "Tiny", "-nc", "4", "-ncl", "7"], "-ncl 7 does not match dataset 'Tiny'"),  # named as typed
    (["-data", "Tiny", "-nc", "4", "--num_classes=7"], "drop --num_classes or pass --num_classes 10"),
    (["-data", "Tiny", "--num_clients", "9"], "--num_clients 9 asks for more clients"),
    (["-data", "Tiny", "-nc", "4", "-m", "ResNet"], "or one model name: FedAvgCNN, ResNet4"),
    (["-data", "Tiny", "-nc", "4", "--model_family", "ResNet"], "(--model_family)"),
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
    (["-ncl", "0"], "-ncl must be at least 1"),
    (["--global_rounds", "0"], "--global_rounds must be at least 1"),
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


@pytest.mark.parametrize("flags,expected", [
    (["--no_such_flag", "1"], "unrecognized arguments: --no_such_flag"),
    (["-gr", "abc"], "argument -gr/--global_rounds: invalid int value: 'abc'"),
    (["-dev", "gpu"], "argument -dev/--device: invalid choice: 'gpu'"),
    (["-ab", "maybe"], "argument -ab/--auto_break: expected true/false/1/0, got 'maybe'"),
    (["-gr"], "argument -gr/--global_rounds: expected one argument"),
    (["-gr", "abc", "--no_such_flag", "1"], "argument -gr/--global_rounds: invalid int value: 'abc'"),  # two
    (["-algo", "FedNope"], "argument -algo/--algorithm: unknown algorithm 'FedNope'"),
])
def test_parser_mistakes_are_one_line(tmp_path, flags, expected):
    result = run_main("--out", str(tmp_path / "out"), *flags)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr  # no usage block
    assert result.stderr.startswith("error: ") and expected in result.stderr
    assert "python system/main.py -h lists the flags" in result.stderr
    assert result.stdout == "" and not os.listdir(tmp_path)


def test_help_still_prints_every_flag(capsys):
    from cli import parse_args

    with pytest.raises(SystemExit) as exc:
        parse_args(["-h"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python system/main.py") and "--global_rounds" in out and "--config" in out


@pytest.mark.parametrize("name", ["results.txt", os.path.join("results.txt", "run")])
def test_out_that_cannot_be_a_folder_is_refused_creating_nothing(tmp_path, name):
    blocker = tmp_path / "results.txt"
    blocker.write_text("keep me")
    result = run_main("--out", str(tmp_path / name), "-data", "NoSuchData", "-gr", "1")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: --out "), result.stderr
    assert "not a folder" in errors[0]
    assert os.listdir(tmp_path) == ["results.txt"] and blocker.read_text() == "keep me"


def test_an_htfllib_flag_this_library_lacks_is_one_line_saying_what_it_was(tmp_path):
    # argparse alone would read HtFLlib's -ts (--time_select) as -t s, "invalid int value: 's'"
    result = run_main("--out", str(tmp_path / "out"), "-gr", "1", "-ts", "True", "-cdr", "0.1")
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: -ts is HtFLlib's --time_select (")
    assert "; -cdr is HtFLlib's --client_drop_rate (" in result.stderr and "not supported here" in result.stderr
    assert not os.listdir(tmp_path)
