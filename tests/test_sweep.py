"""system/sweep.py, the resumable runner behind run_me.sh: reading lines, naming results and logs,
skipping finished lines, resuming interrupted ones, failures, the report, Ctrl-C; and run_me.sh's
usage."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import main
import sweep
from flcore.servers.serverlocal import Local
from tests.helpers import interrupt_in_round_2
from utils.checkpoints import CheckpointStore
from utils.result_utils import read_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = os.path.join(ROOT, "system", "sweep.py")
RUN_ME = os.path.join(ROOT, "run_me.sh")


def flags(data_root, out, *more, rounds=2):
    """A quick Local run on the tiny dataset (4 clients)."""
    return ["-data", "Tiny", "--data_root", data_root, "-nc", "4", "-gr", str(rounds), "-algo", "Local",
            "-dev", "cpu", "--threads", "1", "--out", str(out), *more]


def line_of(argv) -> str:
    return "python system/main.py " + " ".join(argv)


def lines_from(text: str) -> list:
    return sweep.build_lines(sweep.read_entries(text, "lines.txt"))


# ---- reading lines -------------------------------------------------------------------------
def test_lines_skip_comments_and_blanks_and_name_their_results_and_logs(data_root, tmp_path):
    text = "\n".join(["# a comment", "", line_of(flags(data_root, tmp_path / "a", "-t", "2")) + "  # why",
                      "   # indented comment",
                      line_of(flags(data_root, tmp_path / "b", "-pv", "1", "-t", "3", "-go", "probe"))])
    first, second = lines_from(text)
    assert first.where == "lines.txt:3" and second.where == "lines.txt:5"
    assert [run.name for run in first.runs] == ["Tiny_Local_test_0", "Tiny_Local_test_1"]
    assert first.runs[1].results == str(tmp_path / "a" / "Tiny_Local_test_1.h5")
    assert first.log == str(tmp_path / "a" / "Tiny_Local_test.log")
    assert [run.name for run in second.runs] == ["Tiny_Local_probe_1", "Tiny_Local_probe_2"]
    assert second.log == str(tmp_path / "b" / "Tiny_Local_probe.log")
    assert sweep.command_of(first)[-1] == "--resume" and sweep.command_of(first)[0] == sys.executable


@pytest.mark.parametrize("bad, says", [
    ("ls -l", "expected `python system/main.py ARGS...`"),
    ("python system/report.py results --out r", "expected `python system/main.py ARGS...`"),
    ("python system/main.py -gr 2 | tee x.log", "shell syntax"),
    ("python system/main.py --out $HOME/x", "shell syntax"),
    ("python system/main.py --no_such_flag 1", "unrecognized arguments: --no_such_flag"),
    ("python system/main.py -algo NoSuchAlgorithm", "NoSuchAlgorithm"),
])
def test_anything_but_a_main_py_line_is_a_one_line_error(bad, says, tmp_path, capsys):
    listing = tmp_path / "lines.txt"
    listing.write_text(f"# fine so far\n{bad}\n")
    assert sweep.main([str(listing)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith(f"error: {listing}:2: ") and says in err and "\n" not in err
    assert captured.out == ""


def test_two_lines_writing_one_result_file_are_refused_and_shared_log_names_made_distinct(data_root, tmp_path):
    with pytest.raises(sweep.UsageError, match=r"lines.txt:2: writes .*Tiny_Local_test_0.h5, as lines.txt:1"):
        lines_from(line_of(flags(data_root, tmp_path)) + "\n" + line_of(flags(data_root, tmp_path, "-lr", "0.1")))
    # disjoint repetitions in one folder: one log each
    first, second = lines_from(line_of(flags(data_root, tmp_path, "-t", "1")) + "\n"
                               + line_of(flags(data_root, tmp_path, "-pv", "1", "-t", "2")))
    assert first.log != second.log and {os.path.dirname(first.log), os.path.dirname(second.log)} == {str(tmp_path)}


def test_help_explains_the_runner(capsys):
    with pytest.raises(SystemExit) as end:
        sweep.main(["-h"])
    assert end.value.code == 0
    text = capsys.readouterr().out
    for word in ("--jobs", "--report", "--dry_run", "--resume", "finished.json", ".log", "Ctrl-C", "exit status"):
        assert word in text, word


# ---- running -------------------------------------------------------------------------------
def run_sweep(listing, *more, timeout=240):
    return subprocess.run([sys.executable, SWEEP, str(listing), *more], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_sweep_skips_finished_resumes_interrupted_reports_failures(data_root, tmp_path, monkeypatch, capsys):
    finished = flags(data_root, tmp_path / "finished")
    assert main.main(finished) == 0
    interrupted = flags(data_root, tmp_path / "interrupted", rounds=4)
    interrupt_in_round_2(monkeypatch, Local, interrupted + ["--ckpt_every", "1"])
    store = CheckpointStore(str(tmp_path / "interrupted" / "Tiny_Local_test_0"))
    assert store.rounds() == [2] and store.finished() is None
    failing = flags(str(tmp_path / "no_data"), tmp_path / "failing")
    listing = tmp_path / "lines.txt"
    listing.write_text("\n".join(["# three lines", line_of(finished), line_of(interrupted), line_of(failing)]) + "\n")
    finished_files = [tmp_path / "finished" / "Tiny_Local_test_0.h5",
                      tmp_path / "finished" / "Tiny_Local_test_0" / "checkpoints" / "finished.json"]
    before = [os.stat(path).st_mtime_ns for path in finished_files]
    capsys.readouterr()

    assert sweep.main([str(listing), "--dry_run"]) == 0
    planned = capsys.readouterr().out.splitlines()
    assert planned[0].startswith("[1/3] would skip Tiny_Local_test") and "best acc" in planned[0]
    assert planned[1].startswith("[2/3] would run") and "resuming (rep 0 after round 2)" in planned[1]
    assert planned[2].startswith("[3/3] would run")
    assert not list(tmp_path.glob("*/*.log"))  # the dry run started nothing

    done = run_sweep(listing, "--jobs", "2", "--report", str(tmp_path / "report"))
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout
    assert "[1/3] skip Tiny_Local_test" in out
    assert "[2/3] start Tiny_Local_test" in out and "[2/3] done Tiny_Local_test" in out and "best acc 0." in out
    failed = next(line for line in out.splitlines() if line.startswith("[3/3] FAILED (exit 2)"))
    failing_log = str(tmp_path / "failing" / "Tiny_Local_test.log")
    assert "error: dataset 'Tiny' not found" in failed and failed.endswith(f"log: {failing_log}")
    assert "1 done, 1 skipped (already finished), 1 failed" in out

    # the finished line started no process: no log, its files untouched
    assert not (tmp_path / "finished" / "Tiny_Local_test.log").exists()
    assert [os.stat(path).st_mtime_ns for path in finished_files] == before
    # the interrupted one went on from its checkpoint and finished
    log = (tmp_path / "interrupted" / "Tiny_Local_test.log").read_text()
    assert log.startswith("==== ") and " start: " in log.splitlines()[0] and log.splitlines()[0].endswith("--resume")
    assert "resuming after round 2 of 4" in log and store.finished() is not None
    series, _ = read_results(str(tmp_path / "interrupted" / "Tiny_Local_test_0.h5"))
    assert list(series["eval_rounds"]) == [0, 1, 2, 3, 4] and np.all(np.isfinite(series["rs_test_acc"]))
    # the failure is in its log; no log holds a progress bar's carriage returns
    assert "error: dataset 'Tiny' not found" in open(failing_log).read()
    for path in tmp_path.glob("*/*.log"):
        assert "\r" not in path.read_text(), path
    # the report covers what finished
    table = (tmp_path / "report" / "table.md").read_text()
    assert "Local" in table

    again = run_sweep(listing, "--jobs", "2")
    assert again.returncode == 1
    assert "[2/3] skip Tiny_Local_test" in again.stdout and "[3/3] FAILED" in again.stdout
    assert open(failing_log).read().count(" start: ") == 2  # appended, both attempts kept


def test_ctrl_c_stops_the_runs_and_says_how_to_resume(data_root, tmp_path):
    listing = tmp_path / "lines.txt"
    listing.write_text(line_of(flags(data_root, tmp_path / "long", rounds=500)) + "\n")
    process = subprocess.Popen([sys.executable, SWEEP, str(listing)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("[1/1] start Tiny_Local_test")
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert "1 interrupted" in out and f"to resume, run python {os.path.relpath(SWEEP)} {listing}" in err
    log = (tmp_path / "long" / "Tiny_Local_test.log").read_text()
    assert "stopped by the sweep" in log.splitlines()[-1]  # written once the run had ended


# ---- run_me.sh -----------------------------------------------------------------------------
def test_run_me_without_a_suite_prints_usage_fast():
    start = time.perf_counter()
    done = subprocess.run(["bash", RUN_ME], capture_output=True, text=True, timeout=30)
    assert time.perf_counter() - start < 2
    assert done.returncode == 0 and done.stdout.startswith("usage: bash run_me.sh")
    for word in ("cpu", "paper", "claims", "speed", ".log", "resume", "--print", "report"):
        assert word in done.stdout, word


def test_run_me_unknown_suite_is_a_usage_error():
    done = subprocess.run(["bash", RUN_ME, "no-such-suite"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stdout == ""
    assert "unknown suite 'no-such-suite'" in done.stderr and "usage: bash run_me.sh" in done.stderr


def test_run_me_print_gives_lines_the_runner_accepts():
    done = subprocess.run(["bash", RUN_ME, "cpu", "Local", "--print"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = lines_from(done.stdout)
    assert [line.args.dataset for line in lines] == ["MNIST5k-dir", "MNIST5k-pat", "MNIST5k-LT"]
    assert {line.args.algorithm for line in lines} == {"Local"} and len({line.log for line in lines}) == 3
    assert all(line.log.startswith(os.path.join("results", "cpu_suite", "MNIST5k")) for line in lines)
