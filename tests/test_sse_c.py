"""FedLoGe's SSE-C: sparsity, column norms and angles of the refined sparse ETF."""
import math

import torch

from flcore.sse_c import build_sse_c, sparse_etf_mask, sse_c_loss


def min_angle(vectors):
    unit = torch.nn.functional.normalize(vectors, dim=0)
    cosines = unit.T @ unit - 2 * torch.eye(vectors.shape[1])
    return torch.acos(cosines.max().clamp(-1, 1)).item()


def test_mask_keeps_exactly_forty_percent_of_entries():
    mask = sparse_etf_mask(64, 10, torch.Generator().manual_seed(0))
    assert mask.shape == (64, 10) and int(mask.sum()) == round(0.4 * 640)


def test_loss_of_a_known_configuration():
    # Two orthogonal unit vectors: norm term 2 * 0.9^2, nearest angle pi/2 for both.
    vectors = torch.eye(2)
    assert math.isclose(sse_c_loss(vectors).item(), 2 * 0.81 - math.pi / 2, abs_tol=1e-6)


def test_refinement_keeps_zeros_pulls_norms_to_target_and_keeps_classes_apart():
    gen = torch.Generator().manual_seed(1)
    vectors = build_sse_c(10, 64, gen, steps=3000, learning_rate=1e-3)
    zeros = int((vectors == 0).sum())
    assert zeros >= round(0.6 * 640)  # the masked 60% (refined entries could hit 0 only by chance)
    assert int((sparse_etf_mask(64, 10, torch.Generator().manual_seed(1)) == 0).sum()) == round(0.6 * 640)
    norms = vectors.norm(dim=0)
    assert torch.all((norms - 0.1).abs() < 0.02), norms
    # A 10-class simplex ETF has pairwise angle acos(-1/9) ~ 96.4 degrees; sparsified and
    # refined vectors must stay well separated.
    assert min_angle(vectors) > math.radians(80)
    same = build_sse_c(10, 64, torch.Generator().manual_seed(1), steps=3000, learning_rate=1e-3)
    assert torch.equal(vectors, same)
