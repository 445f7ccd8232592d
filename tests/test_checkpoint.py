"""Checkpoints and resume: snapshots of state, the checkpoint files, and runs that continue
exactly where they stopped."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn as nn

import main
from flcore.registry import get_server_class
from tests.helpers import ALGORITHM_FLAGS, build_server_from_flags, make_tiny_generator, needs_test_generator
from utils.checkpoints import CheckpointSchedule, CheckpointStore, UnreadableCheckpoints
from utils.errors import UserError
from utils.result_utils import read_results
from utils.state import capture_state, capture_value, restore_state, restore_value

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Measurements of the processes that ran (time, memory), not results of the computation.
MEASURED_SERIES = {"round_seconds", "phase_seconds", "checkpoint_seconds", "setup_generation_seconds",
                   "setup_pretraining_seconds", "peak_host_mib", "peak_gpu_mib"}


# ---- snapshots of state -------------------------------------------------------------------

class Holder:
    def __init__(self, seed=0):
        torch.manual_seed(seed)
        self.model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, gamma=0.5)
        self.rng = torch.Generator().manual_seed(seed)
        self.numpy_rng = np.random.default_rng(seed)
        self.table = None
        self.counts = {"rounds": 0, "history": [1.5, (2, "a")]}
        self.modules = [nn.Linear(2, 2)]
        self.data = object()  # static: never saved

    def step(self):
        loss = self.model(torch.randn(8, 3, generator=self.rng)).pow(2).mean() + self.modules[0].weight.sum()
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.table = torch.randn(2, 2, generator=self.rng)
        self.counts["rounds"] += 1
        return float(self.numpy_rng.random())


def test_a_restored_object_continues_exactly_as_the_original():
    original = Holder()
    original.step()
    saved = capture_state(original, {"data"}, copy=True)
    expected = [original.step() for _ in range(2)]
    expected_weight = original.model[0].weight.clone()

    fresh = Holder(seed=5)  # different weights and streams before the restore
    restore_state(fresh, saved, torch.device("cpu"))
    assert [fresh.step() for _ in range(2)] == expected
    assert torch.equal(fresh.model[0].weight, expected_weight)
    assert fresh.counts["rounds"] == 3 and fresh.counts["history"] == [1.5, (2, "a")]
    assert fresh.scheduler.get_last_lr() == original.scheduler.get_last_lr()


def test_snapshots_load_with_weights_only(tmp_path):
    holder = Holder()
    holder.step()
    torch.save(capture_state(holder, {"data"}), tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)
    fresh = Holder(seed=1)
    restore_state(fresh, loaded, torch.device("cpu"))
    assert torch.equal(fresh.table, holder.table)
    assert fresh.optimizer.state_dict()["state"][0]["momentum_buffer"].equal(
        holder.optimizer.state_dict()["state"][0]["momentum_buffer"])


def test_copies_do_not_share_memory_and_plain_snapshots_do():
    tensor = torch.zeros(3)
    copied, shared = capture_value(tensor, copy=True), capture_value(tensor, copy=False)
    tensor += 1
    assert copied.sum() == 0 and shared.sum() == 3


def test_unknown_types_are_refused_with_the_attribute_named():
    holder = Holder()
    with pytest.raises(TypeError, match=r"Holder\.data .*CHECKPOINT_STATIC"):
        capture_state(holder, set())


def test_restoring_a_different_structure_is_refused():
    live = {"heads": [nn.Linear(2, 2)]}
    with pytest.raises(ValueError, match="structure differs"):
        restore_value(live, {"heads": []}, torch.device("cpu"), "x")


def test_tensors_marked_as_on_device_go_to_the_objects_device():
    restored = restore_value(None, {"__on_device__": torch.ones(2)}, torch.device("cpu"))
    assert torch.equal(restored, torch.ones(2))


# ---- checkpoint files ---------------------------------------------------------------------

def test_store_keeps_the_newest_and_leaves_no_temporary_files(tmp_path):
    store = CheckpointStore(str(tmp_path), keep=2)
    for rounds_done in range(1, 5):
        store.save(rounds_done, {"value": torch.tensor(rounds_done)})
    assert store.rounds() == [3, 4]
    assert sorted(os.listdir(store.folder)) == ["round_000003.pt", "round_000004.pt"]
    state, damaged = store.load_latest()
    assert int(state["value"]) == 4 and damaged == []


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, damage):
    store = CheckpointStore(str(tmp_path), keep=3)
    for rounds_done in (1, 2):
        store.save(rounds_done, {"value": torch.tensor(rounds_done)})
    path = store.path(2)
    content = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write({"truncate": content[:len(content) // 2], "garbage": b"not a checkpoint" * 10, "empty": b""}[damage])
    state, damaged = store.load_latest()
    assert state["rounds_done"] == 1 and int(state["value"]) == 1
    assert [rounds for rounds, _ in damaged] == [2]
    assert os.path.exists(path)  # reading changes no file


def test_no_readable_checkpoint_is_an_error_that_keeps_the_files(tmp_path):
    store = CheckpointStore(str(tmp_path))
    assert store.load_latest() == (None, [])
    store.save(1, {})
    open(store.path(1), "wb").close()
    with pytest.raises(UnreadableCheckpoints):
        store.load_latest()
    assert store.rounds() == [1]


def test_a_checkpoint_file_renamed_to_another_round_is_refused(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.save(1, {})
    os.rename(store.path(1), store.path(7))
    with pytest.raises(UnreadableCheckpoints):
        store.load_latest()


def test_leftovers_of_an_interrupted_write_are_removed_only_when_asked(tmp_path):
    store = CheckpointStore(str(tmp_path))
    store.save(1, {})
    leftover = store.path(2) + ".123.partial"
    open(leftover, "wb").write(b"half")
    assert store.load_latest()[0]["rounds_done"] == 1
    assert os.path.exists(leftover)
    store.remove_leftovers()
    assert not os.path.exists(leftover)


def test_a_write_that_fails_keeps_the_previous_checkpoint(tmp_path):
    store = CheckpointStore(str(tmp_path), keep=1)
    store.save(1, {"value": torch.tensor(1)})
    with pytest.raises(Exception):
        store.save(2, {"value": lambda: 0})  # a lambda cannot be pickled: the write fails half-way
    assert store.rounds() == [1]
    assert os.listdir(store.folder) == ["round_000001.pt"]


# ---- resume in process: every algorithm -------------------------------------------------

@pytest.fixture(scope="module")
def generator_path(tmp_path_factory):
    return make_tiny_generator(str(tmp_path_factory.mktemp("gen") / "tiny.pt"))




def flags_for(algorithm, data_root, out, generator_path, rounds=3):
    argv = ["-algo", algorithm, "-data", "Tiny", "--data_root", data_root, "-nc", "4", "-gr", str(rounds),
            "-dev", "cpu", "--out", str(out), "-jr", "0.75", "--seed", "3", "--ckpt_every", "1", "--ckpt_keep", "3",
            *ALGORITHM_FLAGS[algorithm]]
    if needs_test_generator(algorithm):
        argv += ["-GPath", generator_path]
    return argv


def comparable_series(series) -> dict:
    return {name: values for name, values in series.items() if name not in MEASURED_SERIES}


def assert_same_series(resumed, uninterrupted):
    assert set(resumed) == set(uninterrupted)
    for name, values in uninterrupted.items():
        np.testing.assert_array_equal(np.asarray(resumed[name], dtype=float), np.asarray(values, dtype=float),
                                      err_msg=name)


class Crash(Exception):
    pass


@pytest.mark.parametrize("algorithm", sorted(ALGORITHM_FLAGS))
def test_a_resumed_run_equals_an_uninterrupted_one(algorithm, data_root, generator_path, tmp_path, monkeypatch):
    reference = build_server_from_flags(flags_for(algorithm, data_root, tmp_path / "whole", generator_path))
    expected = comparable_series(reference.train())

    server_class = get_server_class(algorithm)
    original = server_class.train_round

    def crash_in_round_2(self, round_idx, client_ids):
        if round_idx == 2:
            raise Crash
        return original(self, round_idx, client_ids)

    argv = flags_for(algorithm, data_root, tmp_path / "broken", generator_path)
    monkeypatch.setattr(server_class, "train_round", crash_in_round_2)
    with pytest.raises(Crash):
        build_server_from_flags(argv).train()
    monkeypatch.setattr(server_class, "train_round", original)

    resumed = build_server_from_flags(argv + ["--resume"])
    assert resumed.checkpoints.rounds() == [1, 2]
    assert_same_series(comparable_series(resumed.train()), expected)
    saved, _ = read_results(resumed.results_path)
    np.testing.assert_array_equal(saved["rs_test_acc"], expected["rs_test_acc"])


# ---- resume from the command line ---------------------------------------------------------

def tiny_command(data_root, out, *extra):
    return [sys.executable, os.path.join(ROOT, "system", "main.py"), "-data", "Tiny", "--data_root", data_root,
            "-nc", "4", "-dev", "cpu", "--out", str(out), "-algo", "FedProto", "-se", "2", "--seed", "3",
            "--threads", "1", "--ckpt_every", "1", "--ckpt_keep", "3", *extra]


def accuracies(out):
    series, _ = read_results(os.path.join(out, "Tiny_FedProto_test_0.h5"))
    return series["rs_test_acc"]


def test_sigkill_then_resume_gives_the_uninterrupted_accuracies(data_root, tmp_path):
    whole = subprocess.run(tiny_command(data_root, tmp_path / "whole", "-gr", "6"), capture_output=True,
                           text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "killed"
    process = subprocess.Popen(tiny_command(data_root, out, "-gr", "6"), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    store = CheckpointStore(str(out / "Tiny_FedProto_test_0"))
    deadline = time.time() + 240
    while not store.rounds() and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert store.rounds() and store.finished() is None, "the run ended before it could be killed"

    resumed = subprocess.run(tiny_command(data_root, out, "-gr", "6", "--resume"), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after round" in resumed.stdout
    np.testing.assert_array_equal(accuracies(out), accuracies(tmp_path / "whole"))
    assert len(accuracies(out)) == 7


def test_resuming_a_finished_run_says_so_and_exits_0(data_root, tmp_path, capsys):
    argv = tiny_command(data_root, tmp_path, "-gr", "2")[2:]
    assert main.main(argv) == 0
    before = accuracies(tmp_path)
    capsys.readouterr()
    assert CheckpointStore(str(tmp_path / "Tiny_FedProto_test_0")).rounds() == []  # none left behind
    assert main.main(argv + ["--resume"]) == 0
    assert "already finished after 2 round(s)" in capsys.readouterr().out
    np.testing.assert_array_equal(accuracies(tmp_path), before)


def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(data_root, tmp_path, capsys):
    argv = tiny_command(data_root, tmp_path, "-gr", "3", "--ckpt_keep_final")[2:]
    assert main.main(argv) == 0
    expected = accuracies(tmp_path)
    store = CheckpointStore(str(tmp_path / "Tiny_FedProto_test_0"))
    os.remove(os.path.join(store.folder, "finished.json"))
    with open(store.path(3), "r+b") as f:
        f.truncate(100)
    capsys.readouterr()
    assert main.main(argv + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint after round 3 cannot be read" in out and "resuming after round 2" in out
    assert os.path.exists(os.path.join(store.folder, "unreadable", "round_000003.pt"))  # moved, not deleted
    np.testing.assert_array_equal(accuracies(tmp_path), expected)


def test_resume_without_checkpoints_starts_from_round_0(data_root, tmp_path, capsys):
    argv = tiny_command(data_root, tmp_path, "-gr", "2", "--resume")[2:]
    assert main.main(argv) == 0
    assert "no checkpoint" in capsys.readouterr().out
    assert len(accuracies(tmp_path)) == 3


def test_resume_with_other_flags_is_refused_in_one_line(data_root, tmp_path, capsys):
    argv = tiny_command(data_root, tmp_path, "-gr", "2", "--ckpt_keep_final")[2:]
    assert main.main(argv) == 0
    os.remove(tmp_path / "Tiny_FedProto_test_0" / "checkpoints" / "finished.json")
    capsys.readouterr()
    assert main.main(argv + ["--resume", "-lr", "0.5"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert error.startswith("error: the run in") and "local_learning_rate 0.01 there, 0.5 now" in error


def test_tensorboard_can_be_turned_on_when_resuming_and_logs_from_the_checkpoint(data_root, tmp_path, capsys):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    argv = tiny_command(data_root, tmp_path, "-gr", "2", "--ckpt_every", "1", "--ckpt_keep", "2",
                        "--ckpt_keep_final")[2:]
    assert main.main(argv) == 0
    folder = tmp_path / "Tiny_FedProto_test_0" / "checkpoints"
    os.remove(folder / "finished.json")
    os.remove(folder / "round_000002.pt")  # as if killed during round 2
    assert main.main(argv + ["--resume", "--tensorboard"]) == 0
    assert "resuming after round 1" in capsys.readouterr().out
    log = EventAccumulator(str(tmp_path / "tensorboard" / "Tiny_FedProto_test_0")).Reload()
    assert [event.step for event in log.Scalars("accuracy/test")] == [1, 2]  # the resumed part only
    assert [event.value for event in log.Scalars("accuracy/test")] == pytest.approx(accuracies(tmp_path)[1:])


def test_resume_compares_the_runs_own_flags_not_other_algorithms_options():
    from cli import apply_algorithm_defaults, parse_args
    from utils.resume import check_same_config, comparable_config

    args = parse_args(["-algo", "Local", "-gr", "3"])
    apply_algorithm_defaults(args)
    current = comparable_config(args)
    assert "global_rounds" in current and "di_competition" not in current and "mu" not in current
    ktl = parse_args(["-algo", "FedKTL"])
    apply_algorithm_defaults(ktl)
    assert "mu" in comparable_config(ktl)  # FedKTL's own option is compared
    # a config written when every algorithm's options were recorded, another default since
    check_same_config({**current, "di_competition": 0.5, "student_labels": "target"}, current, "F")
    with pytest.raises(UserError, match="global_rounds 2 there, 3 now"):
        check_same_config({**current, "global_rounds": 2}, current, "F")
    older = {name: value for name, value in current.items() if name != "seed"}  # a flag added since
    with pytest.raises(UserError, match="seed unset there, 0 now"):
        check_same_config(older, current, "F")


def test_a_finished_run_stays_finished_when_another_algorithms_option_changed(data_root, tmp_path, capsys):
    argv = tiny_command(data_root, tmp_path, "-gr", "1")[2:]
    assert main.main(argv) == 0
    mark = tmp_path / "Tiny_FedProto_test_0" / "checkpoints" / "finished.json"
    saved = json.loads(mark.read_text())
    saved["config"]["di_competition"] = 123.0  # as an earlier version recorded, with another default
    mark.write_text(json.dumps(saved))
    capsys.readouterr()
    assert main.main(argv + ["--resume"]) == 0
    assert "already finished" in capsys.readouterr().out


def test_a_fresh_run_moves_old_checkpoints_aside(data_root, tmp_path, capsys):
    argv = tiny_command(data_root, tmp_path, "-gr", "2", "--ckpt_keep_final")[2:]
    assert main.main(argv) == 0
    assert main.main(argv[:argv.index("-gr")] + ["-gr", "1"] + argv[argv.index("-gr") + 2:]) == 0
    assert "the checkpoints of an earlier run are moved to" in capsys.readouterr().out
    store = CheckpointStore(str(tmp_path / "Tiny_FedProto_test_0"))
    assert store.rounds() == [1] and store.finished()["rounds_done"] == 1
    moved = [name for name in os.listdir(tmp_path / "Tiny_FedProto_test_0") if name.startswith("replaced-")]
    assert len(moved) == 1
    assert max(os.listdir(tmp_path / "Tiny_FedProto_test_0" / moved[0])) == "round_000002.pt"


def test_ckpt_every_thins_the_checkpoints(data_root, tmp_path):
    assert main.main(tiny_command(data_root, tmp_path, "-gr", "5", "--ckpt_every", "2", "--ckpt_keep", "5",
                                  "--ckpt_keep_final")[2:]) == 0
    # Rounds 2 and 4, and the final one that --ckpt_keep_final adds after round 5.
    assert CheckpointStore(str(tmp_path / "Tiny_FedProto_test_0")).rounds() == [2, 4, 5]
    series, _ = read_results(os.path.join(tmp_path, "Tiny_FedProto_test_0.h5"))
    assert len(series["checkpoint_seconds"]) == 3


def test_keep_final_writes_a_checkpoint_after_the_last_round(data_root, tmp_path):
    # Round 3 is not a multiple of 2: the final one is written anyway, and the newest 2 stay.
    assert main.main(tiny_command(data_root, tmp_path, "-gr", "3", "--ckpt_every", "2", "--ckpt_keep", "2",
                                  "--ckpt_keep_final")[2:]) == 0
    assert CheckpointStore(str(tmp_path / "Tiny_FedProto_test_0")).rounds() == [2, 3]


def test_default_schedule_writes_by_the_clock_and_a_finished_run_leaves_none(data_root, tmp_path):
    argv = tiny_command(data_root, tmp_path, "-gr", "2")[2:]
    argv = argv[:argv.index("--ckpt_every")] + argv[argv.index("--ckpt_every") + 4:]  # the defaults
    assert main.main(argv) == 0
    store = CheckpointStore(str(tmp_path / "Tiny_FedProto_test_0"))
    assert store.rounds() == [] and store.finished()["rounds_done"] == 2
    series, _ = read_results(os.path.join(tmp_path, "Tiny_FedProto_test_0.h5"))
    assert "checkpoint_seconds" not in series  # two quick rounds: under 5 minutes, none was due


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_schedule_by_rounds_and_never():
    every_2 = CheckpointSchedule(2, minutes=5)
    assert [every_2.due(r) for r in range(1, 6)] == [False, True, False, True, False]
    assert not any(CheckpointSchedule(0, minutes=5).due(r) for r in range(1, 6))


def test_schedule_by_time_waits_the_interval_and_bounds_the_overhead():
    clock = FakeClock()
    schedule = CheckpointSchedule(None, minutes=2, max_overhead=0.05, clock=clock)
    clock.now = 119.0
    assert not schedule.due(1)
    clock.now = 120.0
    assert schedule.due(2)
    # A write of 10 s: the next one waits 200 s (10 / 0.05), longer than the 120 s interval.
    clock.now = 130.0
    schedule.written(10.0)
    clock.now = 130.0 + 199.0
    assert not schedule.due(3)
    clock.now = 130.0 + 200.0
    assert schedule.due(4)
    # A quick write: the interval rules again.
    schedule.written(0.1)
    clock.now += 119.0
    assert not schedule.due(5)
    clock.now += 1.0
    assert schedule.due(6)
