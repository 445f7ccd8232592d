"""The committed built-in generator: interface, determinism, diversity, errors, trainability."""
import os

import pytest
import torch

from flcore.generators.builtin import BUILTIN_WEIGHTS, BuiltinGenerator, load_builtin_generator
from utils.errors import UserError

# Thresholds sit well below what the committed weights measure (see the numbers next to
# each) and far above what a collapsed generator gives (~0).
MIN_PIXEL_STD = 0.3       # committed weights: 0.64 (per-pixel std across 64 samples)
MIN_PAIR_DIST = 0.4       # committed weights: 0.81 (mean RMS difference between two samples)
MIN_W_STD = 0.3           # committed weights: 0.72 (per-dimension std of w)


@pytest.fixture(scope="module")
def generator():
    return load_builtin_generator()


@pytest.fixture(scope="module")
def z64(generator):
    return torch.randn(64, generator.z_dim, generator=torch.Generator().manual_seed(0))


def test_interface_and_shapes(generator, z64):
    assert isinstance(generator, BuiltinGenerator)
    assert generator.c_dim == 0 and generator.img_resolution == 32 and generator.img_channels == 3
    assert not generator.training
    assert all(not p.requires_grad for p in generator.parameters())
    assert all(p.dtype == torch.float32 for p in generator.parameters())
    ws = generator.mapping(z64, None)
    assert ws.shape == (64, generator.num_ws, generator.w_dim)
    # Every one of the num_ws copies is the same w, as in StyleGAN's mapping output.
    assert torch.equal(ws[:, 0], ws[:, -1])
    img = generator.synthesis(ws, noise_mode="const")
    assert img.shape == (64, 3, 32, 32)
    assert img.min() >= -1 and img.max() <= 1
    assert torch.isfinite(img).all()


def test_forward_is_deterministic(generator, z64):
    a = generator(z64[:8], None)
    b = generator(z64[:8], None)
    assert torch.equal(a, b)
    assert torch.allclose(a, generator.synthesis(generator.mapping(z64[:8])))


def test_truncation_pulls_towards_w_avg(generator, z64):
    w = generator.mapping(z64)[:, 0]
    w_trunc = generator.mapping(z64, truncation_psi=0.5)[:, 0]
    w_avg = generator.mapping.w_avg
    assert torch.allclose(w_trunc - w_avg, 0.5 * (w - w_avg), atol=1e-5)


def test_samples_are_diverse(generator, z64):
    img = generator(z64)
    pixel_std = img.std(dim=0).mean().item()
    assert pixel_std > MIN_PIXEL_STD, pixel_std
    flat = img.flatten(1)
    dist = torch.cdist(flat, flat) / flat.shape[1] ** 0.5  # RMS per-pixel difference
    off_diag = dist[~torch.eye(len(flat), dtype=torch.bool)]
    assert off_diag.mean().item() > MIN_PAIR_DIST, off_diag.mean().item()
    # Two flat patches of sky can legitimately be close; many such pairs would be collapse.
    assert (off_diag < 0.02).float().mean().item() < 0.02


def test_w_space_is_spread(generator, z64):
    w = generator.mapping(z64)[:, 0]
    assert w.std(dim=0).mean().item() > MIN_W_STD, w.std(dim=0).mean().item()


def test_missing_weights_raise_user_error(tmp_path):
    with pytest.raises(UserError, match="scripts/train_builtin_generator.py"):
        load_builtin_generator(str(tmp_path / "nope.pt"))


def test_corrupt_weights_raise_user_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="scripts/train_builtin_generator.py"):
        load_builtin_generator(str(bad))


def test_weights_file_is_small_and_plain():
    assert os.path.getsize(BUILTIN_WEIGHTS) < 3_000_000
    blob = torch.load(BUILTIN_WEIGHTS, weights_only=True, map_location="cpu")
    assert set(blob) == {"config", "state_dict"}
    assert BuiltinGenerator(**blob["config"]).num_ws > 0


def test_training_steps_change_parameters_with_finite_losses():
    from scripts.train_builtin_generator import GanTrainer, PatchSampler

    tiny = {"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channels": {4: 16, 8: 16, 16: 8, 32: 8}}
    trainer = GanTrainer(generator_config=tiny, d_width=8, r1_every=2, seed=0)
    sampler = PatchSampler(num_levels=3)
    rng = torch.Generator().manual_seed(0)
    g_before = [p.detach().clone() for p in trainer.G.parameters()]
    d_before = [p.detach().clone() for p in trainer.D.parameters()]
    for _ in range(2):  # step 0 includes the lazy R1 term
        stats = trainer.train_step(sampler.sample(8, rng))
        assert all(torch.isfinite(torch.tensor(v)) for v in stats.values()), stats
    assert any(not torch.equal(a, b) for a, b in zip(g_before, trainer.G.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, trainer.D.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(g_before, trainer.G_ema.parameters()))
