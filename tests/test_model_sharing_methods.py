"""LG-FedAvg, FML and FedKD: the methods that share part of a model or a small shared model.

Pure pieces (weighted averaging, SVD compression, the mutual-learning losses) on
hand-made inputs with known answers, then short runs of each method on the tiny dataset
with their exact traffic.
"""
import math
import os

import numpy as np
import pytest
import torch

import main
from flcore.clients.clientfml import mutual_learning_losses
from flcore.clients.clientkd import adaptive_distillation_losses
from flcore.mutual_learning import build_shared_model, kl_to_target
from flcore.servers.serverkd import aggregate_updates, energy_at
from flcore.svd_compression import (compress_state, compress_tensor, decompress_state,
                                    decompress_tensor, kept_rank)
from flcore.weighted_average import average_uploads, weighted_average
from tests.helpers import build_server_from_flags, make_tiny_dataset
from utils.payload import payload_size
from utils.result_utils import read_results

NUM_CLIENTS = 4
ROUNDS = 2
CLASSES = 10
FEATURE_DIM = 512
IMAGE_SHAPE = (3, 16, 16)


def base_flags(data_root, out, num_clients=NUM_CLIENTS, rounds=ROUNDS, dataset="Tiny"):
    return ["-data", dataset, "--data_root", data_root, "-nc", str(num_clients), "-gr", str(rounds),
            "-dev", "cpu", "--out", str(out)]


def run(data_root, out, *flags, **kwargs):
    assert main.main(base_flags(data_root, out, **kwargs) + list(flags)) == 0
    names = [f for f in os.listdir(out) if f.endswith(".h5")]
    assert len(names) == 1
    series, _ = read_results(os.path.join(out, names[0]))
    accuracies = series["rs_test_acc"]
    assert len(accuracies) == kwargs.get("rounds", ROUNDS) + 1 and np.all(np.isfinite(accuracies))
    return series


def build_server(data_root, out, *flags):
    """A server with its clients, set up but not trained, to look inside after a round."""
    return build_server_from_flags(base_flags(data_root, out) + list(flags))


def clients_of(server):
    return [server.executor._clients[cid] for cid in server.all_client_ids]


def shared_model_floats() -> int:
    model = build_shared_model(CLASSES, FEATURE_DIM, IMAGE_SHAPE, seed=0)
    return sum(p.numel() for p in model.state_dict().values())


# ---- sample-weighted averaging -------------------------------------------------------

def test_weighted_average_of_hand_made_states():
    # Prepare: two states, weights 1 and 3.
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([0.0, 4.0]), "count": torch.tensor(7)}
    b = {"w": torch.tensor([[5.0, 6.0], [7.0, 8.0]]), "b": torch.tensor([4.0, 0.0]), "count": torch.tensor(9)}
    # Execute
    average = weighted_average([a, b], [1, 3])
    # Assert: (1 * a + 3 * b) / 4; integer entries come from the first state.
    assert torch.allclose(average["w"], torch.tensor([[4.0, 5.0], [6.0, 7.0]]))
    assert torch.allclose(average["b"], torch.tensor([3.0, 1.0]))
    assert average["count"].item() == 7


def test_average_uploads_weights_by_training_samples():
    replies = [{"head": {"bias": torch.tensor([2.0])}, "num_samples": 30},
               {"head": {"bias": torch.tensor([10.0])}, "num_samples": 10}]
    assert average_uploads(replies, "head")["bias"].item() == pytest.approx(4.0)


def test_weighted_average_rejects_nothing_or_mismatched_weights():
    with pytest.raises(ValueError):
        weighted_average([], [])
    with pytest.raises(ValueError):
        weighted_average([{"w": torch.zeros(1)}], [1, 2])


# ---- SVD compression ----------------------------------------------------------------

def matrix_with_singular_values(values, rows=6, cols=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows, len(values), generator=gen))
    v, _ = torch.linalg.qr(torch.randn(cols, len(values), generator=gen))
    return u @ torch.diag(torch.tensor(values)) @ v.T


def test_full_energy_reconstructs_matrices_and_conv_kernels():
    gen = torch.Generator().manual_seed(1)
    for tensor in (torch.randn(6, 10, generator=gen), torch.randn(8, 3, 5, 5, generator=gen)):
        compressed = compress_tensor(tensor, 1.0)
        rank = min(tensor.shape[0], tensor[0].numel())
        assert compressed["s"].numel() == rank
        assert torch.allclose(decompress_tensor(compressed, tensor.shape), tensor, atol=1e-5)


def test_kept_rank_follows_the_energy_of_known_singular_values():
    # Squared singular values 16, 4, 1, 0.25: cumulative energy 0.753, 0.941, 0.988, 1.
    matrix = matrix_with_singular_values([4.0, 2.0, 1.0, 0.5])
    for energy, rank in [(0.5, 1), (0.75, 1), (0.76, 2), (0.9, 2), (0.95, 3), (0.98, 3), (0.99, 4), (1.0, 4)]:
        compressed = compress_tensor(matrix, energy)
        assert compressed["s"].numel() == rank, energy
        assert torch.allclose(compressed["s"], torch.tensor([4.0, 2.0, 1.0, 0.5])[:rank], atol=1e-5)
    # What comes back is the best rank-k approximation: the dropped values are the error.
    restored = decompress_tensor(compress_tensor(matrix, 0.9), matrix.shape)
    assert torch.linalg.norm(matrix - restored).item() == pytest.approx(math.sqrt(1 + 0.25), abs=1e-4)
    assert kept_rank(torch.zeros(3), 0.9) == 0


def test_zero_update_needs_no_factors():
    compressed = compress_tensor(torch.zeros(4, 3), 0.95)
    assert payload_size(compressed)[1] == 0
    assert torch.equal(decompress_tensor(compressed, (4, 3)), torch.zeros(4, 3))


def test_vectors_go_uncompressed_and_floats_are_the_factors():
    state = {"weight": matrix_with_singular_values([3.0, 1.0], rows=7, cols=4),
             "bias": torch.tensor([1.0, -2.0, 3.0])}
    compressed = compress_state(state, 0.5)
    assert torch.equal(compressed["bias"], state["bias"])
    assert payload_size(compressed)[1] == 1 * (7 + 4 + 1) + 3  # rank 1: U column, S, V row; bias
    restored = decompress_state(compressed, {k: v.shape for k, v in state.items()})
    assert restored["weight"].shape == (7, 4) and torch.equal(restored["bias"], state["bias"])


def test_energy_grows_linearly_from_start_to_end():
    assert energy_at(0, 10, 0.95, 0.98) == pytest.approx(0.95)
    assert energy_at(5, 10, 0.95, 0.98) == pytest.approx(0.965)
    assert energy_at(10, 10, 0.95, 0.98) == pytest.approx(0.98)


def test_aggregate_updates_is_the_weighted_average_at_full_energy():
    first = {"w": matrix_with_singular_values([2.0, 1.0], seed=1), "b": torch.tensor([1.0, 1.0])}
    second = {"w": matrix_with_singular_values([5.0, 3.0], seed=2), "b": torch.tensor([5.0, -3.0])}
    replies = [{"update": compress_state(first, 1.0), "num_samples": 1},
               {"update": compress_state(second, 1.0), "num_samples": 3}]
    shapes = {"w": first["w"].shape, "b": first["b"].shape}
    restored = decompress_state(aggregate_updates(replies, shapes, 1.0), shapes)
    assert torch.allclose(restored["w"], (first["w"] + 3 * second["w"]) / 4, atol=1e-5)
    assert torch.allclose(restored["b"], torch.tensor([4.0, -2.0]))


# ---- the clients' loss terms --------------------------------------------------------

def test_fml_losses_on_tiny_logits_have_known_values_and_separate_gradients():
    # Prepare: private p = (0.25, 0.75), shared q = (0.5, 0.5), label 1.
    logits = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)
    shared_logits = torch.tensor([[0.0, 0.0]], requires_grad=True)
    labels = torch.tensor([1])
    alpha, beta = 0.3, 0.8
    # Execute
    private, shared = mutual_learning_losses(logits, shared_logits, labels, alpha, beta)
    # Assert: alpha * CE + (1 - alpha) * KL(q || p) and beta * CE + (1 - beta) * KL(p || q).
    kl_q_p = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    kl_p_q = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert private.item() == pytest.approx(alpha * -math.log(0.75) + (1 - alpha) * kl_q_p, rel=1e-6)
    assert shared.item() == pytest.approx(beta * math.log(2.0) + (1 - beta) * kl_p_q, rel=1e-6)
    # Each model learns only through its own loss.
    private.backward()
    assert shared_logits.grad is None and logits.grad is not None


def test_kl_pulls_the_model_towards_the_target():
    logits = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    target = torch.tensor([[-1.0, 0.0, 2.0]])
    assert kl_to_target(target.clone(), target).item() == pytest.approx(0.0, abs=1e-7)
    kl_to_target(logits, target).backward()
    with torch.no_grad():
        assert kl_to_target(logits - 0.1 * logits.grad, target) < kl_to_target(logits, target)


def test_fedkd_losses_are_weighted_by_the_task_losses():
    labels = torch.tensor([0])
    logits = torch.tensor([[1.0, 0.0]], requires_grad=True)
    mentee_logits = torch.tensor([[0.0, 0.0]], requires_grad=True)
    features = torch.tensor([[1.0, 2.0]], requires_grad=True)
    mapped = torch.tensor([[0.0, 2.0]], requires_grad=True)
    teacher, mentee = adaptive_distillation_losses(logits, features, mentee_logits, mapped, labels)
    ce_t, ce_s = math.log(1 + math.exp(-1.0)), math.log(2.0)
    p1 = 1 / (1 + math.exp(-1.0))  # teacher's probability of class 0
    kl_s_t = 0.5 * math.log(0.5 / p1) + 0.5 * math.log(0.5 / (1 - p1))
    kl_t_s = p1 * math.log(p1 / 0.5) + (1 - p1) * math.log((1 - p1) / 0.5)
    mse = 0.5  # ((1 - 0)^2 + (2 - 2)^2) / 2
    assert teacher.item() == pytest.approx(ce_t + (kl_s_t + mse) / (ce_t + ce_s), rel=1e-6)
    assert mentee.item() == pytest.approx(ce_s + (kl_t_s + mse) / (ce_t + ce_s), rel=1e-6)
    teacher.backward()
    assert mentee_logits.grad is None and mapped.grad is None


# ---- end to end ---------------------------------------------------------------------

def test_lg_fedavg_exchanges_exactly_the_heads(data_root, tmp_path):
    series = run(data_root, tmp_path, "-algo", "LG-FedAvg", "-m", "HtFE-cpu")
    head_floats = FEATURE_DIM * CLASSES + CLASSES
    assert list(series["floats_up"]) == [NUM_CLIENTS * head_floats] * ROUNDS
    assert list(series["floats_down"]) == [NUM_CLIENTS * head_floats] * ROUNDS
    assert series["setup_floats_down"][0] == NUM_CLIENTS * head_floats
    assert series["rs_test_acc"][-1] > series["rs_test_acc"][0]


def test_lg_fedavg_leaves_every_client_with_the_average_head(data_root, tmp_path):
    server = build_server(data_root, tmp_path, "-algo", "LG-FedAvg", "-m", "HtFE-cpu")
    server.train_round(0, [0, 1, 2])  # client 3 sits this round out but still gets the head
    for client in clients_of(server):
        assert torch.equal(client.model.head.weight.detach(), server.head["weight"])
        assert torch.equal(client.model.head.bias.detach(), server.head["bias"])


def test_fml_sends_the_shared_model_both_ways(data_root, tmp_path):
    series = run(data_root, tmp_path, "-algo", "FML")
    floats = NUM_CLIENTS * shared_model_floats()
    assert list(series["floats_up"]) == [floats] * ROUNDS
    assert list(series["floats_down"]) == [floats] * ROUNDS
    assert series["setup_floats_down"][0] == 0


def full_rank_floats(shape) -> int:
    rows, cols = shape[0], math.prod(shape[1:])
    return min(rows, cols) * (rows + cols + 1) if len(shape) > 1 else rows


def test_fedkd_at_full_energy_sends_full_rank_factors(data_root, tmp_path):
    series = run(data_root, tmp_path, "-algo", "FedKD", "-Ts", "1", "-Te", "1")
    model = build_shared_model(CLASSES, FEATURE_DIM, IMAGE_SHAPE, seed=0)
    per_client = sum(full_rank_floats(p.shape) for p in model.state_dict().values())
    assert list(series["floats_up"]) == [NUM_CLIENTS * per_client] * ROUNDS
    assert list(series["floats_down"]) == [NUM_CLIENTS * per_client] * ROUNDS
    assert series["setup_floats_down"][0] == NUM_CLIENTS * shared_model_floats()


def test_fedkd_compresses_and_keeps_clients_in_step(data_root, tmp_path):
    server = build_server(data_root, tmp_path, "-algo", "FedKD")
    server.train_round(0, [0, 1, 2])
    traffic = server.executor.take_traffic()
    full = sum(full_rank_floats(shape) for shape in server.shapes.values())
    assert 0 < traffic.floats_up < 3 * full
    assert traffic.floats_down % NUM_CLIENTS == 0 and 0 < traffic.floats_down < NUM_CLIENTS * full
    # Every client, trained or not, now holds the same global mentee.
    states = [client.mentee.state_dict() for client in clients_of(server)]
    for state in states[1:]:
        for name, value in state.items():
            assert torch.equal(value, states[0][name]), name


@pytest.mark.parametrize("flags", [("-algo", "FML", "-al", "1.5"), ("-algo", "FedKD", "-Ts", "0")])
def test_out_of_range_weights_are_user_errors(data_root, tmp_path, capsys, flags):
    assert main.main(base_flags(data_root, tmp_path) + list(flags)) == 2
    assert flags[-2] in capsys.readouterr().err


@pytest.mark.slow
def test_lg_fedavg_runs_with_vision_transformers(tmp_path_factory):
    # HtM10 puts ViT-B/16 and ViT-B/32 on clients 8 and 9; ViT-B/32 needs 32x32 images.
    root = str(tmp_path_factory.mktemp("data32"))
    make_tiny_dataset(root, name="Tiny32", num_clients=10, size=32)
    series = run(root, tmp_path_factory.mktemp("out"), "-algo", "LG-FedAvg", "-m", "HtM10", "-lbs", "64",
                 num_clients=10, rounds=1, dataset="Tiny32")
    assert list(series["floats_up"]) == [10 * (FEATURE_DIM * CLASSES + CLASSES)]
