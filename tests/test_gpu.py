"""GPU tier (`python -m pytest -m gpu`): a short FedKTL run on CUDA, and the real generator
weights when they are in their documented places (skipped otherwise)."""
import os

import numpy as np
import pytest
import torch

import main
from tests.helpers import make_tiny_dataset
from utils.result_utils import read_results

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fedktl_two_rounds_on_cuda(tmp_path):
    make_tiny_dataset(str(tmp_path / "data"), num_clients=4)
    argv = ["-data", "Tiny", "--data_root", str(tmp_path / "data"), "-nc", "4", "-gr", "2",
            "-dev", "cuda", "--out", str(tmp_path / "out"), "-se", "3"]
    assert main.main(argv) == 0
    series, config = read_results(os.path.join(tmp_path / "out", "Tiny_FedKTL_test_0.h5"))
    assert config["device"].startswith("cuda")
    assert np.all(np.isfinite(series["rs_test_acc"])) and len(series["rs_test_acc"]) == 3


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STYLEGAN_XL = os.path.join(REPO, "stylegan", "stylegan-xl-models", "imagenet64.pkl")
STYLEGAN_3 = os.path.join(REPO, "stylegan", "stylegan-3-models", "Benches-512.pkl")
STYLEGAN_UTILS = os.path.join(REPO, "stylegan", "stylegan-utils")
SD_FOLDER = os.path.join(REPO, "stable-diffusion", "v1.5")


def flags(**values):
    from types import SimpleNamespace

    base = dict(algorithm="test", generator_path=None, stylegan_utils=None, stable_diffusion_prompt="a cat",
                sd_steps=50, sd_guidance=7.5, sd_fp16=False)
    base.update(values)
    return SimpleNamespace(**base)


@pytest.mark.parametrize("path,w_dim,conditional", [(STYLEGAN_XL, 512, True), (STYLEGAN_3, 512, False)])
def test_real_stylegan_pickles_generate_on_cuda(path, w_dim, conditional):
    if not (os.path.exists(path) and os.path.isdir(STYLEGAN_UTILS) and torch.cuda.is_available()):
        pytest.skip(f"needs CUDA, {os.path.relpath(path, REPO)} and stylegan/stylegan-utils")
    from flcore.generators.registry import load_generator

    adapter = load_generator("stylegan", flags(generator_path=path, stylegan_utils=STYLEGAN_UTILS), "cuda")
    assert adapter.latent_dim == w_dim and bool(adapter.G.c_dim) is conditional
    w = adapter.sample_latents(4, torch.Generator().manual_seed(0))
    images = adapter.synthesize(w)
    assert images.shape[:2] == (4, 3) and images.is_cuda
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0.05


def test_real_stable_diffusion_generates_in_fp16_on_cuda():
    if not (os.path.isdir(SD_FOLDER) and torch.cuda.is_available()):
        pytest.skip("needs CUDA and stable-diffusion/v1.5")
    from flcore.generators.registry import load_generator

    adapter = load_generator("stable-diffusion", flags(generator_path=SD_FOLDER, sd_steps=10, sd_fp16=True), "cuda")
    assert adapter.latent_dim == 4 * 64 * 64
    images = adapter.synthesize(adapter.sample_latents(2, torch.Generator().manual_seed(0)))
    assert images.shape == (2, 3, 512, 512) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.std() > 0.05
