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
from scripts.tiny_diffusion import save_tiny_stable_diffusion
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
    from scripts.tiny_diffusion import build_tiny_stable_diffusion

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


# ---- fp16 weight files ---------------------------------------------------------------------------

WEIGHT_FILES = {"unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model", "text_encoder": "model"}


@pytest.fixture(scope="module")
def fp16_dir(tmp_path_factory):
    return save_tiny_stable_diffusion(str(tmp_path_factory.mktemp("sd16") / "tiny16"), seed=0, variant="fp16")


def files_under(folder):
    return {os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            for root, _, names in os.walk(folder) for name in names}


def test_fp16_folder_holds_only_float16_variant_files(fp16_dir):
    from safetensors.torch import load_file

    weights = {f for f in files_under(fp16_dir) if f.endswith((".safetensors", ".bin"))}
    assert weights == {f"{name}/{stem}.fp16.safetensors" for name, stem in WEIGHT_FILES.items()}
    for path in weights:
        assert {t.dtype for t in load_file(os.path.join(fp16_dir, path)).values()} == {torch.float16}, path


def test_fp16_only_folder_loads_in_float32_on_the_cpu(fp16_dir):
    from scripts.tiny_diffusion import build_tiny_stable_diffusion

    adapter = load_generator("stable-diffusion", sd_flags(fp16_dir), "cpu")
    pipe = adapter.pipe
    assert pipe.loaded_variants == {"unet": "fp16", "vae": "fp16", "text_encoder": "fp16"}
    original = build_tiny_stable_diffusion(seed=0)
    for name in WEIGHT_FILES:
        loaded = getattr(pipe, name).state_dict()
        assert {t.dtype for t in loaded.values() if t.is_floating_point()} == {torch.float32}, name
        # the float32 weights are the float16 files' values, not a fresh initialisation
        for key, value in getattr(original, name).state_dict().items():
            if value.is_floating_point():
                assert torch.equal(loaded[key], value.half().float()), (name, key)
    images = adapter.synthesize(adapter.sample_latents(2, torch.Generator().manual_seed(0)))
    assert images.shape == (2, 3, 64, 64) and images.dtype == torch.float32
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1


def test_folder_with_both_variants_uses_plain_files_unless_float16(pipeline_dir, fp16_dir, tmp_path):
    import shutil

    Pipeline = import_pipeline_module().LatentInputDiffusionPipeline
    both = tmp_path / "both"
    shutil.copytree(pipeline_dir, both)
    for name, stem in WEIGHT_FILES.items():
        shutil.copy(os.path.join(fp16_dir, name, f"{stem}.fp16.safetensors"), both / name)
    plain = Pipeline.from_folder(str(both))
    assert plain.loaded_variants == dict.fromkeys(WEIGHT_FILES)
    reference = Pipeline.from_folder(pipeline_dir)
    assert all(torch.equal(a, b) for a, b in zip(plain.unet.parameters(), reference.unet.parameters()))
    # float16 (what --sd_fp16 asks for on CUDA) prefers the fp16 files; loading itself works on the CPU
    half = Pipeline.from_folder(str(both), torch_dtype=torch.float16)
    assert half.loaded_variants == dict.fromkeys(WEIGHT_FILES, "fp16")
    assert {p.dtype for p in half.unet.parameters()} == {torch.float16}
    # components are decided one by one: a UNet with only fp16 files next to plain others loads
    os.remove(both / "unet" / "diffusion_pytorch_model.safetensors")
    mixed = Pipeline.from_folder(str(both))
    assert mixed.loaded_variants == {"unet": "fp16", "vae": None, "text_encoder": None}
    assert {p.dtype for p in mixed.unet.parameters()} == {torch.float32}


def test_missing_weights_are_named_in_one_line(fp16_dir, tmp_path):
    import shutil

    folder = tmp_path / "incomplete"
    shutil.copytree(fp16_dir, folder)
    os.remove(folder / "vae" / "diffusion_pytorch_model.fp16.safetensors")
    os.rename(folder / "unet" / "diffusion_pytorch_model.fp16.safetensors",
              folder / "unet" / "diffusion_pytorch_model.non_ema.safetensors")
    with pytest.raises(UserError) as info:
        load_generator("stable-diffusion", sd_flags(str(folder)), "cpu")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"-GPath {str(folder)!r} lacks weights: {str(folder)!r} has no weights for ")
    assert ("unet/diffusion_pytorch_model.safetensors or unet/diffusion_pytorch_model.fp16.safetensors, "
            "found only the variant(s) non_ema; "
            "vae/diffusion_pytorch_model.safetensors or vae/diffusion_pytorch_model.fp16.safetensors") in message
    assert "text_encoder" not in message and "download_weights.py" in message


def load_download_helper():
    import importlib.util

    spec = importlib.util.spec_from_file_location("download_weights",
                                                  os.path.join(ROOT, "stable-diffusion", "download_weights.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_download_patterns_fetch_exactly_what_the_loader_reads(pipeline_dir, fp16_dir):
    # snapshot_download filters the repository's file list with this function
    from huggingface_hub.utils import filter_repo_objects

    helper = load_download_helper()
    # A repository laid out like stable-diffusion-v1-5: both variants, .bin copies, non-EMA
    # UNet, safety checker, single-file checkpoints.
    repo = files_under(pipeline_dir) | files_under(fp16_dir) | {
        "README.md", ".gitattributes", "v1-5-pruned-emaonly.ckpt", "v1-5-pruned-emaonly.safetensors",
        "feature_extractor/preprocessor_config.json", "safety_checker/config.json",
        "safety_checker/model.safetensors", "safety_checker/model.fp16.safetensors",
        "unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.bin",
        "unet/diffusion_pytorch_model.non_ema.safetensors", "text_encoder/pytorch_model.bin"}
    fetched = {fp16: set(filter_repo_objects(sorted(repo), allow_patterns=helper.allow_patterns(fp16)))
               for fp16 in (False, True)}
    # save_pretrained writes exactly what from_pretrained reads, and those folders load
    assert fetched[True] == files_under(fp16_dir)
    assert fetched[False] == files_under(pipeline_dir)
    assert {"unet/diffusion_pytorch_model.fp16.safetensors", "text_encoder/model.fp16.safetensors",
            "vae/diffusion_pytorch_model.fp16.safetensors"} <= fetched[True]


def test_fp16_folder_runs_a_round_end_to_end(fp16_dir, tmp_path):
    data_root = tmp_path / "data"
    make_tiny_dataset(str(data_root), num_clients=2)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "system", "main.py"), "-dev", "cpu", "-algo", "FedKTL-stable-diffusion",
         "-GPath", fp16_dir, "-gr", "1", "--sd_steps", "2", "-data", "Tiny", "-nc", "2",
         "--data_root", str(data_root), "--out", str(out), "-se", "2", "-lbs", "16"],
        capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr
    with h5py.File(out / "Tiny_FedKTL-stable-diffusion_test_0.h5") as f:
        assert len(f["rs_test_acc"]) == 2
        assert f["setup_floats_down"][0] == 2 * (10 * 10 + 512 * 4096 + 4096)
    assert (out / "Tiny_FedKTL-stable-diffusion_test_0" / "generated_round_0000.png").exists()
