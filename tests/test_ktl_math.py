"""ETF, ArcFace and MMD: the numerical pieces of FedKTL, checked against closed forms."""
import math

import pytest
import torch
import torch.nn.functional as F

from flcore.etf import simplex_etf
from flcore.losses import arcface_logits, mmd_rbf
from flcore.prototypes import class_mean_table as class_means
from flcore.generators.base import GeneratorAdapter


@pytest.mark.parametrize("classes,dim", [(2, 2), (10, 10), (10, 16), (100, 100)])
def test_etf_columns_are_unit_and_equiangular(classes, dim):
    etf = simplex_etf(classes, dim, torch.Generator().manual_seed(0))
    assert etf.shape == (dim, classes)
    gram = etf.T @ etf
    assert torch.allclose(torch.diagonal(gram), torch.ones(classes), atol=1e-5)
    off = gram[~torch.eye(classes, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, -1.0 / (classes - 1)), atol=1e-5)
    # class vectors sum to zero: the simplex is centred
    assert torch.allclose(etf.sum(dim=1), torch.zeros(dim), atol=1e-5)


def test_etf_is_seeded():
    a = simplex_etf(10, 10, torch.Generator().manual_seed(3))
    b = simplex_etf(10, 10, torch.Generator().manual_seed(3))
    c = simplex_etf(10, 10, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_etf_rejects_too_few_dimensions():
    with pytest.raises(ValueError, match="at least 10 dimensions"):
        simplex_etf(10, 5, torch.Generator().manual_seed(0))


def test_arcface_adds_margin_to_true_class_only():
    cosine = torch.tensor([[0.5, 0.2, -0.1]])
    logits = arcface_logits(cosine, torch.tensor([0]), margin=0.5, scale=64.0)
    expected_true = 64 * math.cos(math.acos(0.5) + 0.5)
    assert logits[0, 0].item() == pytest.approx(expected_true, rel=1e-5)
    assert torch.allclose(logits[0, 1:], 64 * cosine[0, 1:])


def test_arcface_gradient_is_finite_at_cosine_one():
    cosine = torch.tensor([[1.0, -1.0]], requires_grad=True)
    loss = F.cross_entropy(arcface_logits(cosine, torch.tensor([0]), 0.5, 64.0), torch.tensor([0]))
    loss.backward()
    assert torch.isfinite(cosine.grad).all()


def test_mmd_matches_hand_computation():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[0.0, 3.0], [0.0, 4.0]])

    def k(a, b):
        d2 = float(((a - b) ** 2).sum())
        return sum(math.exp(-0.5 * d2 / bw) for bw in (10, 15, 20, 50))

    def mean_k(a, b):
        return sum(k(p, q) for p in a for q in b) / (len(a) * len(b))

    expected = mean_k(x, x) + mean_k(y, y) - 2 * mean_k(x, y)
    assert mmd_rbf(x, y).item() == pytest.approx(expected, rel=1e-5)


def test_mmd_is_zero_for_identical_samples_and_grows_with_shift():
    x = torch.randn(50, 8, generator=torch.Generator().manual_seed(0))
    assert mmd_rbf(x, x).item() == pytest.approx(0.0, abs=1e-5)
    assert mmd_rbf(x, x + 1).item() < mmd_rbf(x, x + 5).item()


def test_class_means_and_presence():
    values = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 2])
    means, present = class_means(values, labels, 3)
    assert torch.allclose(means[0], torch.tensor([2.0, 1.0]))
    assert torch.allclose(means[2], torch.tensor([5.0, 5.0]))
    assert present.tolist() == [True, False, True]


class CountingGenerator(GeneratorAdapter):
    """64x64 images whose first pixel is the latent's first entry; records the batch sizes asked for."""
    latent_dim = 4

    def __init__(self):
        self.calls = []

    @property
    def device(self):
        return torch.device("cpu")

    def to(self, device):
        return self

    def sample_latents(self, n, generator):
        return torch.randn(n, self.latent_dim, generator=generator)

    def synthesize(self, latents):
        self.calls.append(len(latents))
        return latents[:, :1, None, None].repeat(1, 3, 64, 64) / 10


def test_generation_hands_clients_their_image_size_in_batches_of_gbs():
    from types import SimpleNamespace

    from flcore.servers.serverktl import FedKTL

    latents = torch.arange(10.0).unsqueeze(1).repeat(1, 4)
    server = SimpleNamespace(args=SimpleNamespace(gen_batch_size=4), generator=CountingGenerator(),
                             image_shape=(1, 16, 16))
    server.to_client_images = lambda images: FedKTL.to_client_images(server, images)
    images = FedKTL.generate(server, latents)
    assert server.generator.calls == [4, 4, 2]
    assert images.shape == (10, 1, 16, 16) and images.device.type == "cpu"
    # Grey, normalised as client data: value v/10 in [0, 1] becomes 2 v/10 - 1.
    torch.testing.assert_close(images[:, 0, 0, 0], torch.arange(10.0) / 5 - 1)
