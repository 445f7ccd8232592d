"""Clients with fewer training samples than -lbs: they train on one batch of their whole set
(full batches only with --stored_order, as the original loader), and the run says so."""
from types import SimpleNamespace

import pytest
import torch

from flcore.clients.clientbase import Client
from tests.helpers import build_server_from_flags
from utils.data_utils import ClientData, FederatedData, check_training_sizes
from utils.errors import UserError


def federated(sizes, name="Sizes"):
    clients = tuple(ClientData(torch.zeros(n, 1, 2, 2), torch.zeros(n, dtype=torch.int64),
                               torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int64)) for n in sizes)
    return FederatedData(name=name, folder=f"/data/{name}", num_classes=3, image_shape=(1, 2, 2),
                         label_names=("a", "b", "c"), clients=clients)


def refused(sizes, batch_size, stored_order=False) -> str:
    with pytest.raises(UserError) as info:
        check_training_sizes(federated(sizes), batch_size, stored_order)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- check_training_sizes -------------------------------------------------------------------

def test_no_warning_when_every_client_fills_a_batch():
    assert check_training_sizes(federated([10, 25, 40]), 10, False) == []
    assert check_training_sizes(federated([10, 25, 40]), 10, True) == []


def test_small_clients_train_on_one_batch_of_their_set():
    assert check_training_sizes(federated([20, 30, 15, 4, 12, 11, 10, 9]), 10, False) == [
        "warning: clients 3, 7 have fewer training samples than -lbs 10 (4, 9): each trains on one batch "
        "of all its samples per epoch"]
    assert check_training_sizes(federated([20, 4]), 10, False) == [
        "warning: client 1 has fewer training samples than -lbs 10 (4): it trains on one batch of all its "
        "samples per epoch"]


def test_with_stored_order_small_clients_do_not_train():
    assert check_training_sizes(federated([20, 30, 15, 4, 12, 11, 10, 9]), 10, True) == [
        "warning: clients 3, 7 have fewer training samples than -lbs 10 (4, 9): they do not train (the "
        "original loader drops partial batches; --stored_order)"]


def test_empty_and_single_sample_clients_are_named():
    assert check_training_sizes(federated([0, 20, 1, 5, 0]), 10, False) == [
        "warning: clients 0, 4 have no training samples: they do not train",
        "warning: client 3 has fewer training samples than -lbs 10 (5): it trains on one batch of all its "
        "samples per epoch",
        "warning: client 2 has a single training sample: it does not train (training-mode BatchNorm cannot "
        "normalise a batch of one)"]
    # A batch of one is what -lbs 1 asks for: then a single sample is a full batch.
    assert check_training_sizes(federated([0, 20, 1]), 1, False) == [
        "warning: client 0 has no training samples: it does not train"]


def test_long_lists_are_cut_short():
    warnings = check_training_sizes(federated([3] * 14 + [50]), 10, False)
    assert warnings == ["warning: clients 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 and 4 more have fewer training samples "
                        "than -lbs 10 (3, 3, 3, 3, 3, 3, 3, 3, 3, 3 and 4 more): each trains on one batch of all "
                        "its samples per epoch"]


def test_a_batch_larger_than_every_client_is_refused_with_stored_order_only():
    assert refused([40, 12, 0], 64, stored_order=True) == (
        "-lbs 64 is larger than every client's training set (largest 40) and --stored_order trains on full "
        "batches only: pass -lbs 40 or less or drop --stored_order")
    assert check_training_sizes(federated([40, 12]), 64, False) == [
        "warning: clients 0, 1 have fewer training samples than -lbs 64 (40, 12): each trains on one batch of "
        "all its samples per epoch"]
    assert refused([1, 1], 64, stored_order=True).endswith("pass -lbs 1 or less")


def test_no_trainable_client_at_all_is_refused():
    message = refused([0, 0, 0], 10)
    assert message.startswith("no client of dataset 'Sizes' has training samples: regenerate")
    assert refused([0, 0], 10, stored_order=True) == message
    assert refused([1, 0, 1], 10).startswith("every client of dataset 'Sizes' has at most one training sample")


# ---- what a client trains on ----------------------------------------------------------------

def client_with(n_train, batch_size, stored_order=False):
    args = SimpleNamespace(device="cpu", num_classes=3, batch_size=batch_size, eval_batch_size=64,
                           local_epochs=1, local_learning_rate=0.1, learning_rate_decay=False,
                           learning_rate_decay_gamma=1.0, stored_order=stored_order)
    data = SimpleNamespace(train_x=torch.arange(n_train, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 2, 2),
                           train_y=torch.arange(n_train) % 3,
                           test_x=torch.zeros(2, 1, 2, 2), test_y=torch.zeros(2, dtype=torch.int64))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    return Client(args, 0, model, data, seed=0)


def batch_samples(client) -> list:
    """The samples (by index) of each batch of one epoch."""
    return [sorted(int(v) for v in x[:, 0, 0, 0]) for x, _ in client.train_batches()]


@pytest.mark.parametrize("n,batch_size,stored_order,sizes", [
    (25, 10, False, [10, 10]),   # full batches only, as before
    (25, 10, True, [10, 10]),
    (4, 10, False, [4]),         # the whole set, as one batch
    (4, 10, True, []),           # the original loader: no full batch, no training
    (2, 10, False, [2]),
    (1, 10, False, []),          # a batch of one would break training-mode BatchNorm
    (1, 1, False, [1]),
    (0, 10, False, []),
    (10, 10, False, [10]),
])
def test_train_batches_sizes(n, batch_size, stored_order, sizes):
    client = client_with(n, batch_size, stored_order)
    batches = batch_samples(client)
    assert [len(batch) for batch in batches] == sizes
    if n < batch_size and sizes:
        assert batches == [list(range(n))]  # every sample, each once


def test_a_small_set_is_shuffled_within_its_batch_each_epoch():
    client = client_with(6, 10)
    orders = [[int(v) for v in x[:, 0, 0, 0]] for _ in range(5) for x, _ in client.train_batches()]
    assert all(sorted(order) == list(range(6)) for order in orders)
    assert len({tuple(order) for order in orders}) > 1


@pytest.mark.parametrize("stored_order", [False, True])
def test_clients_smaller_than_a_batch_train_unless_stored_order(stored_order, data_root, tmp_path):
    flags = ["-algo", "Local", "-data", "Tiny", "--data_root", data_root, "-nc", "4", "-gr", "1", "-dev", "cpu",
             "--out", str(tmp_path), "-lbs", "5000"] + (["--stored_order"] if stored_order else [])
    server = build_server_from_flags(flags)
    clients = list(server.executor._clients.values())
    assert all(2 <= client.train_samples < 5000 for client in clients)
    before = [{k: v.clone() for k, v in client.model.state_dict().items()} for client in clients]
    server.train_round(0, [client.id for client in clients])
    for client, start in zip(clients, before):
        changed = any(not torch.equal(value, start[key]) for key, value in client.model.state_dict().items())
        assert changed != stored_order, client.id
