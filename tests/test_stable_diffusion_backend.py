"""Stable Diffusion backend: a tiny random pipeline saved with save_pretrained, loaded offline."""
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import h5py
import pytest
import torch

from flcore.generators.registry import load_generator
from flcore.generators.stable_diffusion import import_pipeline_module
from flcore.generators.tiny_diffusion import save_tiny_stable_diffusion
from tests.helpers import make_tiny_dataset
from utils.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 3


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    return save_tiny_stable_diffusion(str(tmp_path_factory.mktemp("sd") / "tiny"), seed=0)


@pytest.fixture(scope="module")
def adapter(pipeline_dir):
    return load_generator("stable-diffusion", sd_flags(pipeline_dir), "cpu")


def sd_flags(path, **overrides):
    values = dict(generator_path=path, stylegan_utils=None, stable_diffusion_prompt="a cat", sd_steps=STEPS,
                  sd_guidance=7.5, sd_fp16=False)
    values.update(overrides)
    return SimpleNamespace(**values)


def test_round_trip_keeps_every_weight(pipeline_dir):
    from flcore.generators.tiny_diffusion import build_tiny_stable_diffusion

    original = build_tiny_stable_diffusion(seed=0)
    loaded = import_pipeline_module().LatentInputDiffusionPipeline.from_folder(pipeline_dir)
    for name in ("unet", "vae", "text_encoder"):
        saved, reloaded = getattr(original, name).state_dict(), getattr(loaded, name).state_dict()
        assert saved.keys() == reloaded.keys()
        assert all(torch.equal(saved[k], reloaded[k]) for k in saved), name
    assert loaded.tokenizer("a cat").input_ids == original.tokenizer("a cat").input_ids
    assert type(loaded.scheduler).__name__ == "PNDMScheduler"
    assert loaded.latent_shape == (4, 32, 32) and loaded.image_size == (64, 64)


def test_latent_dim_and_initial_noise_distribution(adapter):
    assert adapter.latent_dim == 4 * 32 * 32
    noise = adapter.sample_latents(64, torch.Generator().manual_seed(0))
    assert noise.shape == (64, 4096) and noise.dtype == torch.float32
    assert abs(noise.std().item() - adapter.pipe.init_noise_sigma) < 0.02
    assert torch.equal(noise, adapter.sample_latents(64, torch.Generator().manual_seed(0)))


def test_prompt_is_encoded_once_per_adapter(adapter, monkeypatch):
    calls = []
    monkeypatch.setattr(adapter.pipe, "encode_prompt", lambda *a, **k: calls.append(a))
    adapter.synthesize(adapter.sample_latents(2, torch.Generator().manual_seed(0)))
    assert calls == []
    assert adapter.prompt_embeds.shape == (1, 16, 32)  # tokenizer max length x text width


def test_images_are_deterministic_per_latent_and_independent_of_batching(adapter):
    latents = adapter.sample_latents(3, torch.Generator().manual_seed(3))
    together = adapter.synthesize(latents)
    assert together.shape == (3, 3, 64, 64) and together.dtype == torch.float32
    assert together.min() >= 0 and together.max() <= 1
    one_by_one = torch.cat([adapter.synthesize(latents[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(together, one_by_one, atol=1e-4, rtol=0)
    assert (together[0] - together[1]).abs().max() > 1e-3  # different x_T, different image


def test_guidance_and_prompt_change_the_images(pipeline_dir, adapter):
    latents = adapter.sample_latents(1, torch.Generator().manual_seed(4))
    base = adapter.synthesize(latents)
    unguided = load_generator("stable-diffusion", sd_flags(pipeline_dir, sd_guidance=1.0), "cpu")
    dog = load_generator("stable-diffusion", sd_flags(pipeline_dir, stable_diffusion_prompt="a dog"), "cpu")
    assert (unguided.synthesize(latents) - base).abs().max() > 1e-4
    assert (dog.synthesize(latents) - base).abs().max() > 1e-4


def test_not_a_pipeline_folder_is_refused(pipeline_dir, tmp_path):
    with pytest.raises(UserError, match="has no model_index.json"):
        load_generator("stable-diffusion", sd_flags(str(tmp_path)), "cpu")
    with pytest.raises(UserError, match="is a file"):
        load_generator("stable-diffusion", sd_flags(os.path.join(pipeline_dir, "model_index.json")), "cpu")
    with pytest.raises(UserError, match="does not exist"):
        load_generator("stable-diffusion", sd_flags(str(tmp_path / "v1.5")), "cpu")
    partial = tmp_path / "partial"
    partial.mkdir()
    with open(os.path.join(pipeline_dir, "model_index.json")) as f:
        index = json.load(f)
    (partial / "model_index.json").write_text(json.dumps({k: v for k, v in index.items() if k != "vae"}))
    with pytest.raises(UserError, match="lacks the component"):
        load_generator("stable-diffusion", sd_flags(str(partial)), "cpu")


def test_damaged_weights_are_refused_in_one_line(pipeline_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(pipeline_dir, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"truncated")
    with pytest.raises(UserError, match="cannot load the Stable Diffusion pipeline") as info:
        load_generator("stable-diffusion", sd_flags(str(broken)), "cpu")
    assert "\n" not in str(info.value)


def test_stable_diffusion_variant_runs_a_round_end_to_end(pipeline_dir, tmp_path):
    data_root = tmp_path / "data"
    make_tiny_dataset(str(data_root), num_clients=4)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "system", "main.py"), "-dev", "cpu", "-algo", "FedKTL-stable-diffusion",
         "-GPath", pipeline_dir, "--sd_steps", "2", "-data", "Tiny", "-nc", "4", "--data_root", str(data_root),
         "--out", str(out), "-gr", "1", "-se", "2", "-lbs", "16"],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    with open(out / "Tiny_FedKTL-stable-diffusion_test_0.config.json") as f:
        config = json.load(f)
    assert (config["server_learning_rate"], config["lamda"], config["mu"]) == (0.1, 0.01, 100.0)
    with h5py.File(out / "Tiny_FedKTL-stable-diffusion_test_0.h5") as f:
        assert len(f["rs_test_acc"]) == 2
        # The projection layer maps 512 features to the 4x32x32 initial latent.
        assert f["setup_floats_down"][0] == 4 * (10 * 10 + 512 * 4096 + 4096)
    assert (out / "Tiny_FedKTL-stable-diffusion_test_0" / "generated_round_0000.png").exists()
