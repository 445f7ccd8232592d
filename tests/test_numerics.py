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
