"""Executors: the in-process one (with offloading) and Ray actors give the same run."""
import argparse
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

import main
from tests.helpers import (ALGORITHM_FLAGS, build_server_from_flags, interrupt_in_round_2, make_tiny_generator,
                           needs_test_generator)
from utils.errors import UserError
from utils.ray_executor import plan_actors
from utils.result_utils import read_results
from utils.state import park_state, unpark_state

NUM_CLIENTS = 5


def plan_args(**overrides):
    values = dict(ray_actors=0, ray_cpus_per_actor=1.0, ray_gpus_per_actor=None, num_clients=20)
    values.update(overrides)
    return argparse.Namespace(**values)


# ---- planning actors on a cluster (pure) --------------------------------------------------

def test_default_plan_is_one_actor_per_cpu_and_no_gpu_on_cpu():
    assert plan_actors(plan_args(), {"CPU": 2.0}, "cpu") == (2, 1.0, 0.0)
    assert plan_actors(plan_args(num_clients=1), {"CPU": 8.0}, "cpu") == (1, 1.0, 0.0)


def test_gpus_are_shared_equally_when_running_on_cuda():
    assert plan_actors(plan_args(ray_actors=4), {"CPU": 16.0, "GPU": 1.0}, "cuda") == (4, 1.0, 0.25)
    assert plan_actors(plan_args(ray_actors=4), {"CPU": 16.0, "GPU": 1.0}, "cpu") == (4, 1.0, 0.0)


@pytest.mark.parametrize("overrides,cluster,message", [
    ({"ray_gpus_per_actor": 0.5}, {"CPU": 2.0}, "the Ray cluster has none"),
    ({"ray_actors": 3, "ray_gpus_per_actor": 0.5}, {"CPU": 8.0, "GPU": 1.0}, "lower --ray_actors or --ray_gpus"),
    ({"ray_actors": 4}, {"CPU": 2.0}, "4 actors x --ray_cpus_per_actor 1 = 4 CPUs, but the Ray cluster has 2"),
    ({"ray_gpus_per_actor": 1.5}, {"CPU": 2.0, "GPU": 4.0}, "a fraction of one GPU or whole GPUs"),
])
def test_plans_the_cluster_cannot_place_are_refused(overrides, cluster, message):
    with pytest.raises(UserError, match=message):
        plan_actors(plan_args(**overrides), cluster, "cuda")


# ---- offloading -----------------------------------------------------------------------------

class Holder:
    def __init__(self, device):
        self.model = nn.Linear(3, 2).to(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1, momentum=0.9)
        self.model(torch.ones(1, 3, device=device)).sum().backward()
        self.optimizer.step()
        self.table = {"on_device": torch.ones(2, device=device), "on_host": torch.zeros(2)}
        self.count = 3


@pytest.mark.gpu
def test_parking_moves_exactly_what_was_on_the_gpu_and_back():
    device = torch.device("cuda:0")
    holder = Holder(device)
    parked = park_state(holder, device)
    assert set(parked) == {"model", "optimizer", "table"}
    assert holder.model.weight.device.type == "cpu" and holder.table["on_device"].device.type == "cpu"
    assert all(t.device.type == "cpu" for s in holder.optimizer.state.values() for t in s.values() if t.dim())
    unpark_state(holder, parked, device)
    assert holder.model.weight.device == device and holder.table["on_device"].device == device
    assert holder.table["on_host"].device.type == "cpu"  # it was on the host before parking


def test_parking_on_the_cpu_moves_nothing():
    holder = Holder(torch.device("cpu"))
    weight = holder.model.weight
    parked = park_state(holder, torch.device("cpu"))
    unpark_state(holder, parked, torch.device("cpu"))
    assert holder.model.weight is weight and holder.count == 3


# ---- whole runs -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generator_path(tmp_path_factory):
    return make_tiny_generator(str(tmp_path_factory.mktemp("gen") / "tiny.pt"))


@pytest.fixture(scope="module")
def five_clients(tmp_path_factory):
    from tests.helpers import make_tiny_dataset

    root = str(tmp_path_factory.mktemp("data5"))
    make_tiny_dataset(root, num_clients=NUM_CLIENTS)
    return root


def run_flags(algorithm, data_root, out, generator_path, *extra):
    argv = ["-algo", algorithm, "-data", "Tiny", "--data_root", data_root, "-nc", str(NUM_CLIENTS), "-gr", "2",
            "-dev", "cpu", "--out", str(out), "--threads", "1", "-se", "2", "--save_generated_every", "0",
            "-jr", "0.8", *extra]
    if needs_test_generator(algorithm):
        argv += ["-GPath", generator_path]
    return argv


def series_of(out) -> dict:
    found = [f for f in os.listdir(out) if f.endswith(".h5")]
    return read_results(os.path.join(out, found[0]))[0]


def test_offload_on_cpu_changes_nothing_and_memory_is_recorded(five_clients, generator_path, tmp_path):
    assert main.main(run_flags("FedKTL", five_clients, tmp_path / "a", generator_path)) == 0
    assert main.main(run_flags("FedKTL", five_clients, tmp_path / "b", generator_path, "--offload")) == 0
    plain, offloaded = series_of(tmp_path / "a"), series_of(tmp_path / "b")
    np.testing.assert_array_equal(plain["rs_test_acc"], offloaded["rs_test_acc"])
    assert len(plain["peak_host_mib"]) == 2 and np.all(plain["peak_host_mib"] > 50)
    assert np.all(np.diff(plain["peak_host_mib"]) >= 0)  # a peak so far never falls
    assert np.all(plain["peak_gpu_mib"] == 0)


# ---- Ray ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    from utils import ray_executor

    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR",
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([ray_executor.SYSTEM_DIR,
                                                                        ray_executor.REPO_ROOT])}})
    yield ray
    ray.shutdown()


TRAFFIC_AND_METRICS = ("rs_test_acc", "rs_test_auc", "rs_train_loss", "rs_client_mean_acc", "floats_up",
                       "floats_down", "bytes_up", "bytes_down", "skipped_clients")


@pytest.mark.parametrize("algorithm", sorted(ALGORITHM_FLAGS))
def test_ray_gives_the_in_process_metrics(algorithm, local_ray, five_clients, generator_path, tmp_path):
    flags = ALGORITHM_FLAGS[algorithm]
    assert main.main(run_flags(algorithm, five_clients, tmp_path / "inprocess", generator_path, *flags)) == 0
    assert main.main(run_flags(algorithm, five_clients, tmp_path / "ray", generator_path, *flags,
                               "--executor", "ray", "--ray_actors", "2")) == 0
    expected, got = series_of(tmp_path / "inprocess"), series_of(tmp_path / "ray")
    for name in TRAFFIC_AND_METRICS:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    # Two actors and this process each hold memory: more than this process alone.
    assert got["peak_host_mib"][-1] > expected["peak_host_mib"][-1]


def test_ray_actors_hold_fixed_blocks_and_reply_in_client_order(local_ray, five_clients, tmp_path, monkeypatch):
    server = build_server_from_flags(run_flags("Local", five_clients, tmp_path, None, "--executor", "ray",
                                               "--ray_actors", "2"))
    try:
        executor = server.executor
        assert executor.placement["clients_per_actor"] == [3, 2]
        puts = []
        original_put = local_ray.put
        monkeypatch.setattr(local_ray, "put", lambda value: puts.append(1) or original_put(value))
        replies = executor.broadcast([4, 0, 3, 1], "evaluate", {"unused": torch.ones(3)}, count=False)
        assert len(puts) == 1  # one copy of the payload in the object store for both actors
        sizes = [reply["test_num"] for reply in replies]
        assert sizes == [server.data.clients[cid].num_test for cid in (4, 0, 3, 1)]
        states = executor.broadcast([2], "checkpoint_state", count=False)
        assert all(v.device.type == "cpu" for v in states[0]["model"].values())
        # progress: an actor's block at a time (3 clients and 2), ending with all of them
        seen = []
        executor.progress = lambda method, done, total: seen.append((method, done, total))
        executor.broadcast([0, 1, 2, 3, 4], "evaluate", count=False)
        assert seen in ([("evaluate", 3, 5), ("evaluate", 5, 5)], [("evaluate", 2, 5), ("evaluate", 5, 5)])
    finally:
        server.close()


def test_a_run_checkpointed_in_process_resumes_on_ray(local_ray, five_clients, tmp_path, monkeypatch):
    from flcore.servers.serverlg import LGFedAvg

    argv = run_flags("LG-FedAvg", five_clients, tmp_path / "whole", None, "-gr", "3")
    assert main.main(argv) == 0
    expected = series_of(tmp_path / "whole")

    broken = run_flags("LG-FedAvg", five_clients, tmp_path / "broken", None, "-gr", "3", "--ckpt_every", "1")
    interrupt_in_round_2(monkeypatch, LGFedAvg, broken)
    assert main.main(broken + ["--resume", "--executor", "ray", "--ray_actors", "2"]) == 0
    np.testing.assert_array_equal(series_of(tmp_path / "broken")["rs_test_acc"], expected["rs_test_acc"])


def test_ray_flags_without_the_ray_executor_are_refused(five_clients, tmp_path, capsys):
    assert main.main(run_flags("Local", five_clients, tmp_path, None, "--ray_actors", "2")) == 2
    assert "--ray_address and --ray_actors need --executor ray" in capsys.readouterr().err


def test_the_ray_executor_without_ray_is_one_line(five_clients, tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main.main(run_flags("Local", five_clients, tmp_path, None, "--executor", "ray")) == 2
    assert capsys.readouterr().err == ("error: --executor ray needs Ray: pip install 'ray>=2.40' "
                                       "(or drop --executor ray)\n")
