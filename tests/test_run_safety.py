"""What a run leaves on disk when it is refused, interrupted, diverges or meets another run:
refused commands change no file, nothing a user could want is deleted, checkpoints restore
only declared state, and a diverged run says so."""
import os
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
import torch

import main
from flcore.servers.serverbase import Server
from tests.helpers import build_server_from_flags, make_tiny_dataset
from utils.checkpoints import CheckpointStore
from utils.errors import UserError
from utils.result_utils import read_results, write_results
from utils.run_lock import RunLock
from utils.sampling import ClientSchedule, draw_client_schedule
from utils.state import restore_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = "Tiny_FedProto_test_0"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("data"))
    make_tiny_dataset(root, num_clients=4)
    return root


def flags(data_root, out, *extra):
    return ["-data", "Tiny", "--data_root", data_root, "-nc", "4", "-dev", "cpu", "--out", str(out),
            "-algo", "FedProto", "-se", "2", "--seed", "3", "--threads", "1", "--ckpt_every", "1",
            "--ckpt_keep", "3", *extra]


def snapshot(folder) -> dict:
    """{relative path: bytes} of every file under `folder`."""
    files = {}
    for base, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, folder)] = f.read()
    return files


def one_error_line(capsys) -> str:
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("error: "), error
    return error


@pytest.fixture
def unfinished_run(data_root, tmp_path):
    """A 2-round run whose checkpoints stay and whose finished mark is gone: a killed run."""
    assert main.main(flags(data_root, tmp_path, "-gr", "2", "--ckpt_keep_final")) == 0
    os.remove(tmp_path / RUN / "checkpoints" / "finished.json")
    return tmp_path


# ---- refused commands change nothing -------------------------------------------------------

def test_a_refused_resume_leaves_every_file_byte_for_byte(data_root, unfinished_run, capsys):
    before = snapshot(unfinished_run)
    capsys.readouterr()
    assert main.main(flags(data_root, unfinished_run, "-gr", "2", "--resume", "-lr", "0.5")) == 2
    assert "local_learning_rate 0.01 there, 0.5 now" in one_error_line(capsys)
    assert snapshot(unfinished_run) == before  # the config.json included


def test_resume_over_unreadable_checkpoints_is_refused_and_keeps_them(data_root, unfinished_run, capsys):
    store = CheckpointStore(str(unfinished_run / RUN))
    for rounds in store.rounds():
        with open(store.path(rounds), "wb") as f:
            f.write(b"written by another version")
    before = snapshot(unfinished_run)
    capsys.readouterr()
    assert main.main(flags(data_root, unfinished_run, "-gr", "2", "--resume")) == 2
    error = one_error_line(capsys)
    assert "none of the checkpoints" in error and "weights_only" not in error
    assert snapshot(unfinished_run) == before


def test_a_fresh_run_after_unreadable_checkpoints_moves_them_aside(data_root, unfinished_run, capsys):
    store = CheckpointStore(str(unfinished_run / RUN))
    with open(store.path(2), "wb") as f:
        f.write(b"damaged")
    assert main.main(flags(data_root, unfinished_run, "-gr", "1")) == 0
    moved = [name for name in os.listdir(unfinished_run / RUN) if name.startswith("replaced-")]
    assert len(moved) == 1
    with open(unfinished_run / RUN / moved[0] / "round_000002.pt", "rb") as f:
        assert f.read() == b"damaged"


def test_a_finished_run_resumed_with_other_flags_is_refused(data_root, tmp_path, capsys):
    assert main.main(flags(data_root, tmp_path, "-gr", "2")) == 0
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main.main(flags(data_root, tmp_path, "-gr", "2", "--resume", "-lr", "0.5")) == 2
    assert "other flags" in one_error_line(capsys)
    assert snapshot(tmp_path) == before


def test_a_finished_run_rebuilds_its_deleted_results_and_names_them_under_out(data_root, tmp_path, capsys):
    first = tmp_path / "first"
    assert main.main(flags(data_root, first, "-gr", "2")) == 0
    expected, _ = read_results(str(first / (RUN + ".h5")))
    # A copied results folder is whole: its finished mark names the copy's files.
    copy = tmp_path / "copy"
    os.rename(first, copy)
    os.remove(copy / (RUN + ".h5"))
    capsys.readouterr()
    assert main.main(flags(data_root, copy, "-gr", "2", "--resume")) == 0
    out = capsys.readouterr().out
    assert f"results in {copy / (RUN + '.h5')}" in out and "rebuilt" in out
    rebuilt, _ = read_results(str(copy / (RUN + ".h5")))
    np.testing.assert_array_equal(rebuilt["rs_test_acc"], expected["rs_test_acc"])
    assert str(first) not in out


def test_resuming_onto_a_dataset_of_another_shape_is_one_line(tmp_path, capsys):
    data_root = str(tmp_path / "data")
    make_tiny_dataset(data_root, num_clients=4, size=16)
    out = tmp_path / "out"
    assert main.main(flags(data_root, out, "-gr", "2", "--ckpt_keep_final")) == 0
    os.remove(out / RUN / "checkpoints" / "finished.json")
    import shutil
    shutil.rmtree(os.path.join(data_root, "Tiny"))
    make_tiny_dataset(data_root, num_clients=4, size=12)
    before = snapshot(out)
    capsys.readouterr()
    assert main.main(flags(data_root, out, "-gr", "2", "--resume")) == 2
    assert "is not the one the run" in one_error_line(capsys)
    assert snapshot(out) == before


# ---- checkpoints restore declared state only --------------------------------------------------

def test_a_crafted_checkpoint_cannot_set_the_run_name_or_results_folder(data_root, unfinished_run, capsys):
    store = CheckpointStore(str(unfinished_run / RUN))
    state = store.load(1)
    escape = str(unfinished_run.parent / "escaped")
    state["server"]["name"] = "../escaped"
    state["server"]["args"] = None
    torch.save(state, store.path(1))
    os.remove(store.path(2))
    capsys.readouterr()
    assert main.main(flags(data_root, unfinished_run, "-gr", "2", "--resume")) == 2
    error = one_error_line(capsys)
    assert "not state of" in error and "FedProto" in error
    assert not os.path.exists(escape) and not os.path.exists(escape + ".h5")


def test_restore_state_refuses_names_outside_the_declared_state():
    class Holder:
        CHECKPOINT_LATER = ("made_later",)

        def __init__(self):
            self.weights = torch.zeros(2)
            self.name = "run"

    holder = Holder()
    with pytest.raises(ValueError, match="Holder.name"):
        restore_state(holder, {"weights": torch.ones(2), "name": "elsewhere"}, "cpu", static={"name"})
    assert holder.name == "run" and torch.equal(holder.weights, torch.zeros(2))  # nothing changed
    with pytest.raises(ValueError, match="Holder.surprise"):
        restore_state(holder, {"surprise": 1}, "cpu")
    restore_state(holder, {"weights": torch.ones(2), "made_later": 3}, "cpu", static={"name"})
    assert torch.equal(holder.weights, torch.ones(2)) and holder.made_later == 3


# ---- one run at a time ----------------------------------------------------------------------------

def test_a_second_run_of_the_same_name_is_refused_while_the_first_holds_it(data_root, tmp_path, capsys):
    with RunLock(str(tmp_path / RUN)):
        before = snapshot(tmp_path)
        assert main.main(flags(data_root, tmp_path, "-gr", "1")) == 2
        assert "another run is writing" in one_error_line(capsys)
        assert snapshot(tmp_path) == before
    assert main.main(flags(data_root, tmp_path, "-gr", "1")) == 0  # released: the next run goes ahead


def test_two_processes_on_one_out_the_second_refuses(data_root, tmp_path):
    command = [sys.executable, os.path.join(ROOT, "system", "main.py"), *flags(data_root, tmp_path, "-gr", "200")]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lock = tmp_path / RUN / ".lock"
        deadline = time.time() + 120
        while not (lock.exists() and (tmp_path / (RUN + ".h5")).exists()) and time.time() < deadline:
            time.sleep(0.2)
        assert first.poll() is None, "the first run ended before the second could start"
        second = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: another run is writing"), second.stderr
        assert "Traceback" not in second.stderr
        assert second.stdout.strip() == ""  # refused before any work (no data loaded, nothing printed)
    finally:
        first.kill()
        first.wait()


# ---- divergence is said, not reported as a result ----------------------------------------------------

def test_a_diverged_server_ends_the_run_in_one_line(data_root, tmp_path, capsys):
    # FedKTL's server trains its feature transformer with Adam at -slr: 1e30 breaks it at once.
    argv = ["-data", "Tiny", "--data_root", data_root, "-nc", "4", "-dev", "cpu", "--out", str(tmp_path),
            "-gr", "3", "-slr", "1e30", "-se", "2", "-sbs", "4", "--threads", "1"]
    assert main.main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: training diverged: the server's") and "-slr" in error
    series, _ = read_results(str(tmp_path / "Tiny_FedKTL_test_0.h5"))
    assert list(series["diverged_after_round"]) == [1]


def test_clients_diverging_round_after_round_end_the_run(data_root, tmp_path, capsys):
    assert main.main(flags(data_root, tmp_path, "-gr", "6", "-lr", "1e30")) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: training diverged: every selected client's update was non-finite")
    series, _ = read_results(str(tmp_path / (RUN + ".h5")))
    assert series["diverged_after_round"][0] < 6


# ---- full disks, huge round counts ---------------------------------------------------------------

def test_a_full_disk_while_writing_results_is_one_line_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = str(tmp_path / "run.h5")
    write_results(path, {"rs_test_acc": [0.5]}, {})

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(h5py, "File", no_space)
    with pytest.raises(UserError, match="No space left on device"):
        write_results(path, {"rs_test_acc": [0.5, 0.6]}, {})
    assert sorted(os.listdir(tmp_path)) == ["run.h5"]  # the previous results stay, no .tmp


def test_the_client_schedule_is_drawn_round_by_round():
    schedule = ClientSchedule(20, 0.3, True, seed=4)
    listed = draw_client_schedule(20, 0.3, True, 12, seed=4)
    assert [list(schedule[r]) for r in (0, 1, 5, 11)] == [list(listed[r]) for r in (0, 1, 5, 11)]
    assert list(schedule[3]) == list(listed[3])  # an earlier round: drawn again from the start
    assert schedule.next_round == 4


def test_a_huge_round_count_draws_nothing_up_front(data_root, tmp_path):
    server = build_server_from_flags(flags(data_root, tmp_path, "-gr", "3000000"))
    try:
        assert isinstance(server, Server) and server.schedule.next_round == 0
    finally:
        server.close()


def test_a_full_disk_while_saving_an_image_grid_is_one_line(data_root, tmp_path, monkeypatch):
    import utils.image_grid

    server = build_server_from_flags(flags(data_root, tmp_path, "-gr", "1"))

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(utils.image_grid, "write_png", no_space)
    try:
        with pytest.raises(UserError, match="No space left on device"):
            server.save_image_grid(torch.zeros(2, 3, 4, 4), "grid.png", nrow=2)
    finally:
        server.close()


def test_a_batch_larger_than_every_client_trains_and_says_so(data_root, tmp_path, capsys):
    assert main.main(flags(data_root, tmp_path, "-gr", "1", "-lbs", "5000")) == 0
    err = capsys.readouterr().err
    assert "fewer training samples than -lbs 5000" in err and "one batch of all its samples" in err
    series, _ = read_results(str(tmp_path / (RUN + ".h5")))
    assert series["rs_test_acc"][1] != series["rs_test_acc"][0]  # the clients did train


def test_a_batch_larger_than_every_client_in_stored_order_is_one_line(data_root, tmp_path, capsys):
    assert main.main(flags(data_root, tmp_path, "-gr", "1", "-lbs", "5000", "--stored_order")) == 2
    assert "-lbs 5000 is larger than every client's training set" in one_error_line(capsys)
    assert not os.listdir(tmp_path)
