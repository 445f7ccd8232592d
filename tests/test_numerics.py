"""A NaN or an infinity in a client's loss or upload skips that client for the round, puts it
back as it was, and is counted in the results; the run goes on."""
import collections

import numpy as np
import pytest
import torch

from flcore.clients.clientbase import Client
from flcore.clients.clientlg import clientLG
from flcore.weighted_average import weighted_average
from tests.helpers import build_server_from_flags
from utils.payload import first_non_finite
from utils.result_utils import read_results


def lg_server(data_root, out, rounds=3, *extra):
    return build_server_from_flags(["-algo", "LG-FedAvg", "-data", "Tiny", "--data_root", data_root, "-nc", "4",
                                    "-gr", str(rounds), "-dev", "cpu", "--out", str(out), *extra])


def model_state(client) -> dict:
    return {name: value.clone() for name, value in client.model.state_dict().items()}


def test_first_non_finite_names_where_it_is():
    assert first_non_finite({"a": torch.ones(2), "b": [torch.zeros(1), torch.tensor([1.0, float("inf")])]}) \
        == "['b'][1]"
    assert first_non_finite({"labels": torch.tensor([1, 2]), "x": torch.ones(3), "n": float("nan")}) is None
    assert first_non_finite(torch.tensor(float("nan"))) == "tensor"


def test_a_nan_loss_skips_the_client_restores_it_and_is_counted(data_root, tmp_path, monkeypatch, capsys):
    """Client 1's second training blows up: its weights go NaN and so does its loss."""
    server = lg_server(data_root, tmp_path)
    clients = server.executor._clients
    calls = collections.Counter()
    original = Client.local_train

    def local_train(self):
        calls[self.id] += 1
        if self.id == 1 and calls[1] == 2:
            original(self)
            with torch.no_grad():
                for parameter in self.model.parameters():
                    parameter.fill_(float("nan"))
            self.loss_total = self.loss_total * float("nan")
        else:
            original(self)

    monkeypatch.setattr(Client, "local_train", local_train)
    series = server.train()

    assert list(series["skipped_clients"]) == [0, 1, 0]
    out = capsys.readouterr().out
    assert "warning: round 1: client 1 skipped, its training loss is nan" in out
    assert np.all(np.isfinite(series["rs_test_acc"])) and np.all(np.isfinite(series["rs_train_loss"]))
    # Put back as it was, client 1 trained again in round 2 from finite weights.
    for name, value in model_state(clients[1]).items():
        assert torch.isfinite(value).all(), name
    assert all(torch.isfinite(value).all() for value in server.head.values())
    assert calls[1] == 3
    saved, _ = read_results(str(tmp_path / "Tiny_LG-FedAvg_test_0.h5"))
    assert list(saved["skipped_clients"]) == [0, 1, 0]


def test_the_skipped_client_is_restored_exactly(data_root, tmp_path, monkeypatch):
    server = lg_server(data_root, tmp_path, 1)
    client = server.executor._clients[2]
    start = model_state(client)
    other_start = model_state(server.executor._clients[1])
    optimizer_start = client.optimizer.state_dict()
    rng_start = client.rng.get_state()
    original = Client.local_train

    def local_train(self):
        original(self)
        if self.id == 2:
            self.loss_total = torch.tensor(float("inf"))

    monkeypatch.setattr(Client, "local_train", local_train)
    server.train_round(0, [0, 1, 2, 3])
    # Its feature extractor is as before; the head is the server's new one, sent to all.
    for name, value in model_state(client).items():
        if name.startswith("base."):
            assert torch.equal(value, start[name]), name
    trained = server.executor._clients[1]
    assert any(not torch.equal(value, other_start[name]) for name, value in
               model_state(trained).items() if name.startswith("base."))
    assert client.optimizer.state_dict() == optimizer_start
    assert torch.equal(client.rng.get_state(), rng_start)
    assert server.skipped_in_round == 1


def test_an_infinite_upload_is_left_out_of_the_average(data_root, tmp_path, monkeypatch):
    server = lg_server(data_root, tmp_path, 1)
    original_upload = clientLG.upload
    uploads = {}

    def upload(self):
        reply = original_upload(self)
        uploads[self.id] = reply
        if self.id == 3:
            reply = {"head": {name: value * float("inf") for name, value in reply["head"].items()}}
        return reply

    monkeypatch.setattr(clientLG, "upload", upload)
    server.train_round(0, [0, 1, 2, 3])
    kept = [0, 1, 2]
    counts = [server.executor._clients[cid].train_samples for cid in kept]
    expected = weighted_average([uploads[cid]["head"] for cid in kept], counts)
    for name, value in server.head.items():
        torch.testing.assert_close(value, expected[name])
        assert torch.isfinite(value).all()
    assert server.skipped_in_round == 1


def test_a_round_where_every_client_fails_keeps_the_server_state(data_root, tmp_path, monkeypatch, capsys):
    server = lg_server(data_root, tmp_path, 2)
    original = Client.local_train
    calls = collections.Counter()

    def local_train(self):
        calls[self.id] += 1
        original(self)
        if calls[self.id] == 1:
            self.loss_total = torch.tensor(float("nan"))

    head_before = {name: value.clone() for name, value in server.head.items()}
    monkeypatch.setattr(Client, "local_train", local_train)
    series = server.train()
    assert list(series["skipped_clients"]) == [4, 0]
    assert "round 0: every selected client was skipped; the server keeps its state" in capsys.readouterr().out
    assert len(series["round_seconds"]) == 2 and len(series["rs_test_acc"]) == 3
    # Round 0 changed nothing: after it, accuracy is what it was before it.
    assert series["rs_test_acc"][1] == series["rs_test_acc"][0]
    assert any(not torch.equal(server.head[name], head_before[name]) for name in head_before)


@pytest.mark.parametrize("algorithm", ["FedProto", "FML", "FedKD"])
def test_other_methods_skip_a_client_with_a_nan_loss_too(algorithm, data_root, tmp_path, monkeypatch):
    server = build_server_from_flags(["-algo", algorithm, "-data", "Tiny", "--data_root", data_root, "-nc", "4",
                                      "-gr", "2", "-dev", "cpu", "--out", str(tmp_path), "-se", "2"])
    original = Client.local_train

    def local_train(self):
        original(self)
        if self.id == 0:
            self.loss_total = self.loss_total * float("nan")

    monkeypatch.setattr(Client, "local_train", local_train)
    series = server.train()
    assert list(series["skipped_clients"]) == [1, 1]
    assert np.all(np.isfinite(series["rs_test_acc"]))


# ---- weights after the last step -----------------------------------------------------------

def tiny_client(n_train=8, batch_size=8, lr=0.1, x_scale=1.0, cls=Client):
    """A base client on random 1x2x2 images and a linear model, built without a server."""
    from types import SimpleNamespace

    args = SimpleNamespace(device="cpu", num_classes=3, batch_size=batch_size, eval_batch_size=64,
                           local_epochs=1, local_learning_rate=lr, learning_rate_decay=False,
                           learning_rate_decay_gamma=1.0, stored_order=False)
    generator = torch.Generator().manual_seed(0)
    data = SimpleNamespace(train_x=x_scale * torch.randn(n_train, 1, 2, 2, generator=generator),
                           train_y=torch.arange(n_train) % 3,
                           test_x=torch.randn(4, 1, 2, 2, generator=generator), test_y=torch.arange(4) % 3)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    return cls(args, 0, model, data, seed=0)


def test_a_last_step_that_makes_the_weights_infinite_skips_and_restores():
    """One batch, one step: its loss (computed before the step) is finite, the step is not."""
    client = tiny_client(lr=1e38, x_scale=1e3)
    start = model_state(client)
    rng_start = client.rng.get_state()
    reply = client.guarded("train")
    assert reply["skipped"] == "weights model.1.weight are not finite after training"
    assert reply["num_samples"] == 8
    for name, value in model_state(client).items():
        assert torch.equal(value, start[name]), name
    assert torch.equal(client.rng.get_state(), rng_start)
    assert client.loss_total is None


def test_a_finite_training_is_kept():
    client = tiny_client()
    start = model_state(client)
    reply = client.guarded("train")
    assert "skipped" not in reply and reply["num_samples"] == 8
    assert not torch.equal(model_state(client)["1.weight"], start["1.weight"])


def test_non_finite_buffers_and_other_modules_are_caught_but_static_ones_are_not():
    class WithExtras(Client):
        CHECKPOINT_STATIC = Client.CHECKPOINT_STATIC | {"teacher"}

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.extras = {"norm": torch.nn.BatchNorm1d(2)}
            self.teacher = torch.nn.Linear(2, 2)  # static: never trained here, never checked
            self.ruin = None

        def local_train(self):
            super().local_train()
            if self.ruin == "buffer":
                self.extras["norm"].running_var.fill_(float("inf"))
            with torch.no_grad():
                self.teacher.weight.fill_(float("nan"))

    client = tiny_client(cls=WithExtras)
    assert "skipped" not in client.guarded("train")
    client.ruin = "buffer"
    reply = client.guarded("train")
    assert reply["skipped"] == "weights extras['norm'].running_var are not finite after training"
    assert torch.equal(client.extras["norm"].running_var, torch.ones(2))


def test_first_non_finite_named_names_the_first_floating_point_tensor():
    from utils.payload import first_non_finite_named

    named = [("a", torch.ones(3)), ("labels", torch.tensor([1, 2])), ("b", torch.tensor([1.0, float("nan")])),
             ("c", torch.tensor(float("inf")))]
    assert first_non_finite_named(named) == "b"
    assert first_non_finite_named(named[:2] + [("empty", torch.zeros(0))]) is None
    assert first_non_finite_named([]) is None
    marker = object()
    assert first_non_finite_named([(marker, torch.tensor(float("-inf"))), ("d", torch.ones(1))]) is marker


@pytest.mark.parametrize("algorithm,flags", [
    ("Local", ["-m", "ResNet4"]),
    ("FedProto", ["-m", "ResNet4", "-se", "2"]),
    ("FedGen", ["-se", "3", "-nd", "8", "-hd", "16"]),
])
def test_at_lr_100_no_client_keeps_non_finite_weights(algorithm, flags, data_root, tmp_path, capsys):
    """At -lr 100 BatchNorm statistics overflow in the last step while the loss before it was
    finite: such clients are skipped and put back, so every client's weights stay finite."""
    server = build_server_from_flags(["-algo", algorithm, "-data", "Tiny", "--data_root", data_root, "-nc", "4",
                                      "-gr", "2", "-dev", "cpu", "--out", str(tmp_path), "-lr", "100", *flags])
    clients = server.executor._clients.values()
    train_round = server.train_round
    checked = []

    def checked_round(round_idx, client_ids):
        try:
            train_round(round_idx, client_ids)
        finally:  # also after a round in which every client was skipped
            check_weights(round_idx)

    def check_weights(round_idx):
        broken = [f"client {client.id} {name}.{key}" for client in clients
                  for name, value in vars(client).items() if isinstance(value, torch.nn.Module)
                  for key, tensor in value.state_dict().items()
                  if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]
        assert not broken, f"after round {round_idx}: {broken[:3]}"
        checked.append(round_idx)

    server.train_round = checked_round
    series = server.train()
    assert checked == [0, 1]
    out = capsys.readouterr().out
    assert "are not finite after training" in out
    assert sum(series["skipped_clients"]) == out.count(" skipped, its ") > 0
    assert np.all(np.isfinite(series["rs_test_acc"])) and np.all(np.isfinite(series["rs_train_loss"]))
