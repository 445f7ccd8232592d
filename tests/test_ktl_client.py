"""FedKTL client behaviour: prototypes, projection layer handling, fused forward."""
import copy
import types

import pytest
import torch
import torch.nn.functional as F

from cli import apply_algorithm_defaults, parse_args
from flcore.clients.clientktl import clientKTL
from flcore.etf import simplex_etf
from trainmodel.models import build_model
from utils.data_utils import ClientData

CLASSES, LATENT = 4, 6


def make_args(*flags):
    args = parse_args(["-dev", "cpu", "-lbs", "5", *flags])
    apply_algorithm_defaults(args)
    args.num_classes = CLASSES
    return args


def make_data(seed=0, n=20):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=g)
    y = torch.tensor([0, 1, 3] * (n // 3) + [0] * (n - 3 * (n // 3)))
    return ClientData(x, y, x[:6].clone(), y[:6].clone())


def make_client(args, arch="FedAvgCNN", seed=1):
    model = build_model(arch, CLASSES, feature_dim=args.feature_dim, image_size=16, seed=seed)
    client = clientKTL(args, 0, model, make_data(), seed=0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        proj = torch.nn.Linear(args.feature_dim, LATENT)
    client.setup({"etf": simplex_etf(CLASSES, CLASSES, torch.Generator().manual_seed(0)),
                  "proj": {k: v.clone() for k, v in proj.state_dict().items()}})
    return client


def generated_payload():
    g = torch.Generator().manual_seed(9)
    return {"images": torch.rand(CLASSES, 3, 16, 16, generator=g) * 2 - 1,
            "latents": torch.randn(CLASSES, LATENT, generator=g)}


def test_prototypes_are_normalised_class_means_of_normalised_outputs():
    client = make_client(make_args())
    reply = client.train(None)
    assert reply["classes"].tolist() == [0, 1, 3]
    client.model.eval()
    with torch.no_grad():
        outputs = F.normalize(client.model(client.train_x), dim=1)
    for proto, label in zip(reply["means"], reply["classes"]):
        expected = F.normalize(outputs[client.train_y == label].mean(0), dim=0)
        assert torch.allclose(proto, expected, atol=1e-5)
    assert torch.allclose(reply["means"].norm(dim=1), torch.ones(3), atol=1e-5)
    assert set(reply["timings"]) == {"client_training", "prototype_collection"}


def test_prototype_pass_fills_the_training_loss():
    client = make_client(make_args())
    client.train(None)
    cached = client.train_loss_stats()
    client._train_loss = None
    assert client.train_loss_stats() == pytest.approx(cached, rel=1e-5)


def proj_at_each_round_start(client, rounds):
    seen = []
    original = client.local_train

    def spy(self):
        seen.append(copy.deepcopy(self.proj.state_dict()))
        original()

    client.local_train = types.MethodType(spy, client)
    for _ in range(rounds):
        client.train(generated_payload())
    return seen


def test_projection_is_trained_and_kept_per_client():
    client = make_client(make_args())
    seen = proj_at_each_round_start(client, 2)
    assert not torch.equal(seen[0]["weight"], seen[1]["weight"])


def test_fixed_projection_is_reset_every_round_like_the_original_code():
    client = make_client(make_args("--ktl_fixed_proj"))
    seen = proj_at_each_round_start(client, 2)
    assert torch.equal(seen[0]["weight"], seen[1]["weight"])
    assert not torch.equal(client.proj.weight, seen[0]["weight"])  # it did train within the round


def test_fused_forward_equals_separate_forward_without_batchnorm():
    fused = make_client(make_args())
    separate = make_client(make_args("--ktl_separate_forward"))
    assert fused.fused_forward and not separate.fused_forward
    fused.train(generated_payload())
    separate.train(generated_payload())
    for a, b in zip(fused.model.parameters(), separate.model.parameters()):
        assert torch.allclose(a, b, atol=1e-5)


def test_distillation_term_moves_the_backbone():
    with_gen = make_client(make_args())
    without = make_client(make_args())
    with_gen.train(generated_payload())
    without.train(None)
    diffs = [float((a - b).detach().abs().max()) for a, b in zip(with_gen.model.base.parameters(),
                                                         without.model.base.parameters())]
    assert max(diffs) > 1e-4


def expected_losses(client):
    """(cross-entropy of 64 x cosine, ArcFace loss), each a mean over the training set, computed here."""
    from flcore.losses import arcface_logits

    client.model.eval()
    with torch.no_grad():
        cosine = F.normalize(client.model(client.train_x), dim=1) @ client.class_vectors.T
    y = client.train_y
    return (float(F.cross_entropy(64.0 * cosine, y)),
            float(F.cross_entropy(arcface_logits(cosine, y, 0.5, 64.0), y)))


@pytest.mark.parametrize("after_training", [False, True])
def test_reported_training_loss_is_cross_entropy_and_arcface_is_its_own_number(after_training):
    client = make_client(make_args())
    if after_training:
        client.train(None)  # the prototype pass fills the cached losses
    reply = client.evaluate(None)
    cross_entropy, arcface = expected_losses(client)
    n = reply["train_num"]
    assert n == len(client.train_y)
    assert reply["train_loss_sum"] / n == pytest.approx(cross_entropy, rel=1e-4)
    assert reply["train_arcface_loss_sum"] / n == pytest.approx(arcface, rel=1e-4)
    # the margin on the true class makes the ArcFace loss the larger of the two
    assert arcface > cross_entropy
