"""What a run shows while it trains: clients done within a round, the latest evaluation on the bar,
nothing of the bar in logs; and the optional TensorBoard log holding the run's series."""
import io
import os
import subprocess
import sys

import pytest
import torch

from tests.helpers import ALGORITHM_FLAGS, build_server_from_flags, make_tiny_generator
from utils.executors import InProcessExecutor
from utils.progress import RunProgress
from utils.result_utils import read_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class EchoClient:
    def __init__(self, cid):
        self.id, self.device = cid, torch.device("cpu")

    def train(self, payload):
        return {"id": self.id}


def test_in_process_executor_reports_each_client_as_it_answers():
    executor = InProcessExecutor([EchoClient(c) for c in range(3)])
    seen = []
    executor.progress = lambda method, done, total: seen.append((method, done, total))
    assert executor.broadcast([2, 0, 1], "train") == [{"id": 2}, {"id": 0}, {"id": 1}]
    assert seen == [("train", 1, 3), ("train", 2, 3), ("train", 3, 3)]
    seen.clear()
    executor.scatter("train", {0: None, 1: None})
    assert seen == [("train", 1, 2), ("train", 2, 2)]
    seen.clear()
    executor.broadcast([1], "train")  # one client: nothing to count
    assert seen == []


def shown_progress(total=5):
    progress = RunProgress("run", total, 0)
    progress.bar.close()
    progress.bar = progress.bar.__class__(total=total, file=io.StringIO(), disable=False)  # as on a terminal
    return progress


def test_bar_shows_the_latest_evaluation_and_the_clients_done_within_the_round():
    progress = shown_progress()
    progress.evaluated(0, 0.1185)
    assert progress.bar.postfix == "acc 0.1185 after 0"
    progress.clients_done("train", 5, 20)
    assert progress.bar.postfix == "acc 0.1185 after 0, training 5/20 clients"
    progress.clients_done("train", 20, 20)  # the call is over
    assert progress.bar.postfix == "acc 0.1185 after 0"
    progress.round_done()
    progress.evaluated(1, 0.8075)  # shown as soon as it is made, not a round later
    assert progress.bar.postfix == "acc 0.8075 after 1" and progress.bar.n == 1


def test_bar_is_off_when_output_is_not_a_terminal():
    progress = RunProgress("run", 5, 0)  # pytest captures the output: not a terminal
    assert not progress.shown


@pytest.fixture(scope="module")
def generator(tmp_path_factory):
    return make_tiny_generator(str(tmp_path_factory.mktemp("gen") / "G.pt"))


def ktl_flags(data_root, out, generator, rounds=2):
    return ["-data", "Tiny", "--data_root", data_root, "-nc", "4", "-dev", "cpu", "--out", str(out),
            "-gr", str(rounds), "-algo", "FedKTL", *ALGORITHM_FLAGS["FedKTL"], "-GPath", generator]


def test_server_feeds_the_bar_each_evaluation_and_each_client(data_root, tmp_path, generator, monkeypatch):
    import flcore.servers.serverbase as serverbase

    postfixes = []

    class Recorded(RunProgress):
        shown = True

        def _show(self):
            shown = ", ".join(part for part in (self.latest, self.call) if part)
            if shown:
                postfixes.append(shown)

    monkeypatch.setattr(serverbase, "RunProgress", Recorded)
    server = build_server_from_flags(ktl_flags(data_root, tmp_path, generator))
    series = server.train()
    server.close()
    acc = series["rs_test_acc"]
    assert postfixes[:3] == [f"evaluating {k}/4 clients" for k in (1, 2, 3)]
    assert postfixes[3] == f"acc {acc[0]:.4f} after 0"  # the evaluation before round 0, at once
    assert f"acc {acc[0]:.4f} after 0, training 2/4 clients" in postfixes
    assert f"acc {acc[1]:.4f} after 1, training 3/4 clients" in postfixes
    assert server.executor.progress is None  # the bar's hook goes with the bar


def test_log_of_a_run_has_evaluation_lines_and_no_bar(data_root, tmp_path, generator):
    done = subprocess.run([sys.executable, os.path.join(ROOT, "system", "main.py"), "--threads", "1",
                           *ktl_flags(data_root, tmp_path, generator, rounds=1)],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
    log = done.stdout.decode()  # bytes: a carriage return is not translated away
    assert done.returncode == 0, log
    assert "\r" not in log and "/4 clients" not in log and "round/s" not in log
    assert "after 1 round(s): test acc" in log


def test_fedktl_records_cross_entropy_as_training_loss_and_arcface_apart(data_root, tmp_path, generator):
    server = build_server_from_flags(ktl_flags(data_root, tmp_path, generator, rounds=1))
    server.train()
    server.close()
    series, _ = read_results(server.results_path)
    loss, arcface = series["rs_train_loss"], series["rs_train_arcface_loss"]
    assert len(loss) == len(arcface) == 2
    assert all(a > c > 0 for c, a in zip(loss, arcface))


def test_tensorboard_log_holds_the_runs_series(data_root, tmp_path, generator):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    server = build_server_from_flags(ktl_flags(data_root, tmp_path, generator)
                                    + ["--tensorboard", "--save_generated_every", "1"])
    server.train()
    server.close()
    series, _ = read_results(server.results_path)
    log = EventAccumulator(os.path.join(str(tmp_path), "tensorboard", server.name)).Reload()

    def values(tag):
        return [(event.step, event.value) for event in log.Scalars(tag)]

    assert values("accuracy/test") == [(r, pytest.approx(a)) for r, a in zip(series["eval_rounds"],
                                                                               series["rs_test_acc"])]
    assert [v for _, v in values("loss/train")] == pytest.approx(list(series["rs_train_loss"]))
    assert [v for _, v in values("extra/train_arcface_loss")] == pytest.approx(list(series["rs_train_arcface_loss"]))
    assert values("traffic/floats_down") == [(r + 1, pytest.approx(f)) for r, f in enumerate(series["floats_down"])]
    assert [s for s, _ in values("time/round_seconds")] == [1, 2]
    # the labelled grids the run saves as PNGs, one per round, as TensorBoard images
    assert [event.step for event in log.Images("images/generated_round")] == [0, 1]
