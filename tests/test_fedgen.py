"""FedGen: the server's pure rules, the generator's training, the client's regulariser, a short run."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

import main
from flcore.registry import get_spec
from flcore.clients.clientgen import FeatureGenerator, clientGen
from flcore.weighted_average import weighted_average
from flcore.servers.servergen import (FedGen, diversity_loss, ensemble_logits,
                                      generator_loss, label_weights, stack_heads)
from trainmodel.models import BaseHeadSplit
from utils.data_utils import load_federated_dataset
from utils.payload import payload_size, state_to_payload
from utils.result_utils import read_results

NUM_CLIENTS = 4


def linear_head(weight, bias) -> dict:
    return {"weight": torch.tensor(weight, dtype=torch.float32), "bias": torch.tensor(bias, dtype=torch.float32)}


# ---- pure rules ---------------------------------------------------------------------------

def test_label_weights_are_each_clients_share_of_a_class():
    counts = torch.tensor([[3, 0, 0], [1, 2, 0]])
    weights = label_weights(counts)
    assert torch.allclose(weights, torch.tensor([[0.75, 0.0, 0.0], [0.25, 1.0, 0.0]]))


def test_ensemble_weights_each_head_by_its_share_of_the_sample_label():
    # Prepare: head 0 is the identity, head 1 swaps the features and adds 1 to class 0.
    heads = [linear_head([[1, 0], [0, 1]], [0, 0]), linear_head([[0, 1], [1, 0]], [1, 0])]
    weights = label_weights(torch.tensor([[3, 0], [1, 2]]))  # class 0: 3/4, 1/4; class 1: 0, 1
    features = torch.tensor([[2.0, 1.0], [2.0, 1.0]])
    labels = torch.tensor([0, 1])
    # Execute
    logits = ensemble_logits(features, labels, *stack_heads(heads), weights)
    # Assert: head 0 says [2, 1], head 1 says [2, 2]
    assert torch.allclose(logits[0], torch.tensor([0.75 * 2 + 0.25 * 2, 0.75 * 1 + 0.25 * 2]))
    assert torch.allclose(logits[1], torch.tensor([2.0, 2.0]))


def test_diversity_loss_on_two_samples():
    noise = torch.tensor([[0.0], [1.0]])           # mean squared distance 1
    features = torch.tensor([[0.0, 0.0], [2.0, 2.0]])  # mean absolute distance 2
    # pairs (0,1) and (1,0) give 2, the diagonal 0: mean over 4 entries is 1
    assert diversity_loss(noise, features).item() == pytest.approx(math.exp(-1.0))
    assert diversity_loss(noise, torch.zeros(2, 2)).item() == pytest.approx(1.0)


def test_heads_are_averaged_by_sample_counts():
    heads = [linear_head([[1.0, 2.0]], [4.0]), linear_head([[5.0, 6.0]], [0.0])]
    averaged = weighted_average(heads, [1, 3])
    assert torch.allclose(averaged["weight"], torch.tensor([[4.0, 5.0]]))
    assert torch.allclose(averaged["bias"], torch.tensor([1.0]))


def test_paper_traffic_shape_for_htfe8_cifar100_20_clients():
    # The paper's FedGen row: 1.03M floats up (heads), 7.66M down (generator parameters + head).
    head = nn.Linear(512, 100)
    generator = FeatureGenerator(noise_dim=32, num_classes=100, hidden_dim=512, feature_dim=512)
    head_floats = payload_size(state_to_payload(head))[1]
    down = payload_size({"generator": state_to_payload(generator), "head": state_to_payload(head)})[1]
    assert round(20 * head_floats / 1e6, 2) == 1.03
    assert round(20 * down / 1e6, 2) == 7.66


# ---- the server's generator training --------------------------------------------------------

def test_generator_training_reduces_the_server_loss():
    torch.manual_seed(0)
    classes, dim, noise_dim = 3, 8, 4
    heads = [state_to_payload(nn.Linear(dim, classes)) for _ in range(2)]
    counts = torch.tensor([[5, 1, 0], [0, 4, 6]])
    server = SimpleNamespace(
        args=SimpleNamespace(server_epochs=30, batch_size=16, noise_dim=noise_dim, generator_learning_rate=1e-2),
        device=torch.device("cpu"), rng=torch.Generator().manual_seed(1),
        generator=FeatureGenerator(noise_dim, classes, 16, dim))
    noise, labels = torch.randn(64, noise_dim), torch.tensor([0, 1, 2, 1] * 16)
    weights = label_weights(counts)

    def held_out_loss():
        with torch.no_grad():
            return generator_loss(server.generator, noise, labels, *stack_heads(heads), weights).item()

    before = held_out_loss()
    FedGen.train_generator(server, heads, counts)
    assert held_out_loss() < 0.8 * before


# ---- the client's regulariser -------------------------------------------------------------

def make_client(num_classes=3, dim=6, **options):
    torch.manual_seed(0)
    args = SimpleNamespace(device="cpu", num_classes=num_classes, batch_size=8, eval_batch_size=64, local_epochs=1,
                           local_learning_rate=0.1, learning_rate_decay=False, learning_rate_decay_gamma=1.0,
                           noise_dim=4, hidden_dim=16, **options)
    model = BaseHeadSplit(nn.Sequential(nn.Flatten(), nn.Linear(12, dim)), nn.Linear(dim, num_classes))
    x = torch.randn(16, 3, 2, 2)
    data = SimpleNamespace(train_x=x, train_y=torch.arange(16) % 2, test_x=x, test_y=torch.arange(16) % 2)
    return clientGen(args, 0, model, data, seed=0)


def test_client_reports_label_counts_and_adds_no_term_before_a_generator_exists():
    client = make_client()
    reply = client.setup({"head": state_to_payload(client.model.head)})
    assert reply["label_counts"].tolist() == [8, 8, 0]
    x, y = client.train_x[:8], client.train_y[:8]
    expected = client.classification_loss(x, y).item()
    assert client.train_step(x, y).item() == pytest.approx(expected)


def test_regulariser_teaches_the_head_the_generated_classes_and_leaves_the_generator_alone():
    client = make_client(dim=32)
    generator = FeatureGenerator(4, 3, 16, 32)
    client.setup({"head": state_to_payload(client.model.head)})
    client.set_label_distribution({"label_counts": torch.tensor([1, 1, 2])})
    client.receive({"head": state_to_payload(client.model.head), "generator": state_to_payload(generator)})
    sent = state_to_payload(client.generator)
    optimizer = torch.optim.SGD(client.model.head.parameters(), lr=0.5)
    losses = []
    for _ in range(60):
        loss = client.generated_feature_loss(32)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])
    assert all(torch.equal(sent[k], v) for k, v in state_to_payload(client.generator).items())
    assert all(p.grad is None for p in client.generator.parameters())


def head_inputs_of_one_step(client, generator_gain: float) -> list:
    """The features the client's head sees in one train_step, with a generator whose output
    layer is scaled by `generator_gain` (the blow-up a too-large -glr causes)."""
    generator = FeatureGenerator(4, 3, 16, client.model.feature_dim)
    with torch.no_grad():
        generator.out.weight.mul_(generator_gain)
        generator.out.bias.mul_(generator_gain)
    client.setup({"head": state_to_payload(client.model.head)})
    client.set_label_distribution({"label_counts": torch.tensor([1, 1, 2])})
    client.receive({"head": state_to_payload(client.model.head), "generator": state_to_payload(generator)})
    seen = []
    hook = client.model.head.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].detach()))
    try:
        client.train_step(client.train_x[:8], client.train_y[:8])
    finally:
        hook.remove()
    return seen


@pytest.mark.parametrize("gain", [1.0, 1000.0])
def test_generated_features_are_rescaled_to_the_mean_norm_of_the_real_batch(gain):
    client = make_client(dim=32)
    assert client.rescale_generated  # the default
    real, generated = head_inputs_of_one_step(client, gain)
    assert real.shape == generated.shape == (8, 32)
    assert generated.norm(dim=1).mean().item() == pytest.approx(real.norm(dim=1).mean().item(), rel=1e-5)
    # one factor for the whole batch: the generator's relative norms are kept
    unscaled = make_client(dim=32, fedgen_feature_scale="generator")
    _, raw = head_inputs_of_one_step(unscaled, gain)
    ratio = generated.norm(dim=1) / raw.norm(dim=1)
    assert torch.allclose(ratio, ratio.mean().expand_as(ratio), rtol=1e-4)


def test_generator_scale_and_htfllib_form_take_the_generated_features_as_they_are():
    client = make_client(dim=32, fedgen_feature_scale="generator")
    real, generated = head_inputs_of_one_step(client, 1000.0)
    assert generated.norm(dim=1).mean() > 100 * real.norm(dim=1).mean()
    assert not make_client(fedgen_feature_scale="batch", fedgen_htfllib=True).rescale_generated
    assert make_client(fedgen_feature_scale="batch").rescale_generated


def test_rescaled_training_step_minimises_both_terms_it_reports():
    client = make_client(dim=32)
    head_inputs_of_one_step(client, 1.0)  # installs the generator
    x, y = client.train_x[:8], client.train_y[:8]
    rng_state = client.generated_rng.get_state()
    with torch.no_grad():
        features = client.model.base(x)
        expected = client.ce_loss(client.model.head(features), y) + client.generated_feature_loss(
            8, scale=features.norm(dim=1).mean())
    client.generated_rng.set_state(rng_state)
    assert client.train_step(x, y).item() == pytest.approx(expected.item(), rel=1e-5)


# ---- end to end ---------------------------------------------------------------------------

def test_two_rounds_end_to_end_with_exact_traffic(data_root, tmp_path):
    argv = ["-data", "Tiny", "--data_root", data_root, "-nc", str(NUM_CLIENTS), "-gr", "2", "-m", "HtFE-cpu",
            "-dev", "cpu", "--out", str(tmp_path), "-algo", "FedGen", "-se", "5", "-nd", "8", "-hd", "16"]
    assert main.main(argv) == 0
    series, config = read_results(str(tmp_path / "Tiny_FedGen_test_0.h5"))
    assert len(series["rs_test_acc"]) == 3 and np.all(np.isfinite(series["rs_test_acc"]))
    assert config["generator_learning_rate"] == get_spec("FedGen").option_defaults["generator_learning_rate"]

    classes, feature_dim, noise_dim, hidden = 10, 512, 8, 16
    head = classes * feature_dim + classes
    generator = (noise_dim + classes) * hidden + hidden + 2 * hidden + hidden * feature_dim + feature_dim
    assert list(series["floats_up"]) == [NUM_CLIENTS * head] * 2
    assert list(series["floats_down"]) == [NUM_CLIENTS * (generator + head)] * 2
    assert series["setup_floats_down"][0] == NUM_CLIENTS * head  # the common initial head
    assert set(series["phase_seconds"]) >= {"client_training", "generator_training", "aggregation"}


def test_after_a_round_every_client_holds_the_averaged_head_and_the_generator(data_root, tmp_path):
    from cli import apply_algorithm_defaults, parse_args, validate

    args = parse_args(["-data", "Tiny", "--data_root", data_root, "-nc", str(NUM_CLIENTS), "-dev", "cpu",
                       "--out", str(tmp_path), "-algo", "FedGen", "-se", "2", "-jr", "0.5"])
    apply_algorithm_defaults(args)
    validate(args)
    data = load_federated_dataset("Tiny", NUM_CLIENTS, None, data_root)
    args.num_classes = data.num_classes
    server = FedGen(args, 0, data)
    server.train_round(0, [0, 2])
    clients = server.executor._clients
    for client in clients.values():  # selected or not
        assert all(torch.equal(v, server.head[k]) for k, v in state_to_payload(client.model.head).items())
        assert all(torch.equal(v, server.generator.state_dict()[k])
                   for k, v in state_to_payload(client.generator).items())


def test_batch_size_one_is_refused(data_root, tmp_path, capsys):
    argv = ["-data", "Tiny", "--data_root", data_root, "-nc", str(NUM_CLIENTS), "-gr", "1",
            "-dev", "cpu", "--out", str(tmp_path), "-algo", "FedGen", "-lbs", "1"]
    assert main.main(argv) == 2
    assert "-lbs must be at least 2" in capsys.readouterr().err


# ---- HtFLlib's -glr 0.1 and HtFLlib's computation -------------------------------------------

def fedgen_server(data_root, tmp_path, *extra):
    from tests.helpers import build_server_from_flags

    return build_server_from_flags(["-data", "Tiny", "--data_root", data_root, "-nc", str(NUM_CLIENTS), "-dev",
                                    "cpu", "--out", str(tmp_path), "-algo", "FedGen", *extra])


@pytest.mark.parametrize("glr,scale,warned", [("1", "generator", True), ("3e-4", "generator", False),
                                              ("1", "batch", False)])
def test_a_generator_learning_rate_that_blows_the_features_up_is_reported_once(data_root, tmp_path, capsys, glr,
                                                                                scale, warned):
    # Clients that rescale the features (the default) are not hurt by their growth: no warning.
    server = fedgen_server(data_root, tmp_path, "-glr", glr, "--fedgen_feature_scale", scale)
    try:
        server.train_round(0, [0, 1, 2, 3])
        server.train_round(1, [0, 1, 2, 3])
    finally:
        server.close()
    out = capsys.readouterr().out
    assert out.count("FedGen's generated features grew") == (1 if warned else 0)
    if warned:
        line = next(line for line in out.splitlines() if "features grew" in line)
        assert "round 0" in line and "the default --fedgen_feature_scale batch, or --fedgen_htfllib" in line
    growth = server.series["generator_feature_growth"]
    assert len(growth) == 2
    assert (max(growth) > FedGen.DIVERGED_GROWTH) == (glr == "1")
    assert growth[0] * growth[1] == pytest.approx(server.feature_scale() / server.initial_scale, rel=1e-5)


def test_htfllib_form_regularises_from_round_0_with_the_untrained_generator(data_root, tmp_path):
    server = fedgen_server(data_root, tmp_path, "--fedgen_htfllib", "-glr", "0.1")
    try:
        initial = {k: v.clone() for k, v in server.generator.state_dict().items()}
        clients = server.executor._clients
        for client in clients.values():  # the initial generator arrives with the setup
            assert client.uniform_noise and client.generator is not None
            assert all(torch.equal(v, initial[k]) for k, v in client.generator.state_dict().items())
        server.train_round(0, [0, 1, 2, 3])
        assert all(torch.equal(v, initial[k]) for k, v in server.generator.state_dict().items())
        for client in clients.values():
            assert all(torch.equal(v, initial[k]) for k, v in client.generator.state_dict().items())
        # The regulariser's noise is uniform in [0, 1): recompute it from the same stream.
        client = clients[0]
        state = client.generated_rng.get_state()
        loss = client.generated_feature_loss(5)
        client.generated_rng.set_state(state)
        labels = torch.multinomial(client.global_label_counts.double(), 5, replacement=True,
                                   generator=client.generated_rng)
        noise = torch.rand(5, client.noise_dim, generator=client.generated_rng)
        with torch.no_grad():
            expected = client.ce_loss(client.model.head(client.generator(noise, labels)), labels)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    finally:
        server.close()
