"""GeneratorAdapter.generate: chunked generation that adapts to GPU memory.

Out-of-memory is simulated on the CPU: the fakes raise torch.cuda.OutOfMemoryError (which a
CPU build of torch can construct) whenever a call gets more rows than "fit".
"""
import pytest
import torch
import torch.nn.functional as F

from flcore.generators.base import GeneratorAdapter
from flcore.generators.stable_diffusion import StableDiffusionAdapter, import_pipeline_module
from scripts.tiny_diffusion import save_tiny_stable_diffusion

STEPS = 2


def out_of_memory():
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class FakeAdapter(GeneratorAdapter):
    """Images that encode their latent: pixel value = latent[0]; fails above `fits` images
    per call, and also on the calls numbered in `fail_calls` (like a fragmented GPU)."""

    latent_dim = 4

    def __init__(self, fits=1000, fail_calls=()):
        self.fits, self.fail_calls, self.calls, self.done = fits, set(fail_calls), [], []

    def sample_latents(self, n, generator):
        return torch.randn(n, self.latent_dim, generator=generator)

    def synthesize(self, latents):
        self.calls.append(len(latents))
        if len(latents) > self.fits or len(self.calls) in self.fail_calls:
            raise out_of_memory()
        self.done.extend(latents[:, 0].tolist())
        return latents[:, :1, None, None].expand(-1, 3, 8, 8) / 10

    @property
    def device(self):
        return torch.device("cpu")

    def to(self, device):
        return self


class Finish:
    """Downsizes to 2x2 and normalises like client inputs; records the chunk sizes it got."""

    def __init__(self):
        self.sizes = []

    def __call__(self, images):
        self.sizes.append(len(images))
        return (F.avg_pool2d(images, 4) - 0.5) / 0.5


LATENTS = torch.arange(10.0).unsqueeze(1).repeat(1, 4)
EXPECTED = Finish()(FakeAdapter().synthesize(LATENTS))  # all at once, no memory limit


def test_fake_images_encode_their_latents():
    torch.testing.assert_close(EXPECTED, (LATENTS[:, 0] / 5 - 1)[:, None, None, None].expand(-1, 3, 2, 2))


def oom_lines(capsys):
    return [line for line in capsys.readouterr().out.splitlines() if "out of GPU memory" in line]


def test_out_of_memory_error_is_constructible_without_cuda():
    error = out_of_memory()
    assert isinstance(error, RuntimeError) and "CUDA out of memory" in str(error)


def test_automatic_batch_halves_remembers_and_keeps_finished_chunks(capsys):
    adapter, finish = FakeAdapter(fits=3), Finish()
    images = adapter.generate(LATENTS, finish)
    assert images.device.type == "cpu" and images.shape == (10, 3, 2, 2)
    assert torch.equal(images, EXPECTED)  # elementwise fake: chunking changes no bit
    assert adapter.calls == [10, 5, 3, 3, 3, 1]
    assert finish.sizes == [3, 3, 3, 1]
    assert adapter.auto_batch_size == 3
    assert oom_lines(capsys) == ["generation ran out of GPU memory: retrying with 5 images per call",
                                 "generation ran out of GPU memory: retrying with 3 images per call"]
    # a later call starts from the size that fitted, without running out again
    adapter.calls.clear()
    assert torch.equal(adapter.generate(LATENTS, Finish()), EXPECTED)
    assert adapter.calls == [3, 3, 3, 1] and oom_lines(capsys) == []


def test_only_the_failing_chunk_is_redone():
    # the second call runs out although the first, as large, fitted
    adapter, finish = FakeAdapter(fail_calls={2}), Finish()
    images = adapter.generate(LATENTS, finish, batch_size=4)
    assert torch.equal(images, EXPECTED)
    assert adapter.calls == [4, 4, 2, 2, 2]
    assert adapter.done == LATENTS[:, 0].tolist()  # every latent synthesized exactly once
    assert finish.sizes == [4, 2, 2, 2]


def test_fixed_batch_halves_within_the_call_but_is_not_remembered(capsys):
    adapter = FakeAdapter(fits=3)
    assert torch.equal(adapter.generate(LATENTS, Finish(), batch_size=4), EXPECTED)
    assert adapter.calls == [4, 2, 2, 2, 2, 2]
    assert oom_lines(capsys) == ["generation ran out of GPU memory: retrying with 2 images per call"]
    assert adapter.auto_batch_size is None
    adapter.calls.clear()
    adapter.generate(LATENTS, Finish(), batch_size=4)
    assert adapter.calls[0] == 4


def test_out_of_memory_with_one_image_is_raised(capsys):
    adapter = FakeAdapter(fits=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        adapter.generate(LATENTS[:3], Finish())
    assert adapter.calls == [3, 2, 1]
    assert oom_lines(capsys)[-1] == "generation ran out of GPU memory: retrying with 1 images per call"


# ---- Stable Diffusion: denoising and decoding batched apart ----------------------------------------

@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    folder = save_tiny_stable_diffusion(str(tmp_path_factory.mktemp("sd") / "tiny"), seed=0, latent_size=16)
    pipe = import_pipeline_module().LatentInputDiffusionPipeline.from_folder(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def reference(pipe):
    """Latents, the un-chunked finished images, and the UNet calls one denoising run makes."""
    adapter = StableDiffusionAdapter(pipe, "a cat", STEPS, 7.5)
    latents = adapter.sample_latents(6, torch.Generator().manual_seed(0))
    calls = []
    original = pipe.unet.forward
    pipe.unet.forward = lambda sample, *a, **k: (calls.append(len(sample)), original(sample, *a, **k))[1]
    try:
        images = Finish()(adapter.synthesize(latents))
    finally:
        del pipe.unet.forward
    assert calls and set(calls) == {12}  # guidance: the UNet sees twice the images
    return latents, images, len(calls)


class Limits:
    """Wraps the pipeline's UNet and VAE decoder: records their batch sizes (images) and
    raises out-of-memory above `unet_fits` / `vae_fits` images."""

    def __init__(self, pipe, monkeypatch, unet_fits=1000, vae_fits=1000):
        self.unet, self.vae = [], []
        unet_forward, vae_decode = pipe.unet.forward, pipe.vae.decode

        def unet(sample, *args, **kwargs):
            self.unet.append(len(sample) // 2)
            if len(sample) // 2 > unet_fits:
                raise out_of_memory()
            return unet_forward(sample, *args, **kwargs)

        def vae(latents, *args, **kwargs):
            self.vae.append(len(latents))
            if len(latents) > vae_fits:
                raise out_of_memory()
            return vae_decode(latents, *args, **kwargs)

        monkeypatch.setattr(pipe.unet, "forward", unet)
        monkeypatch.setattr(pipe.vae, "decode", vae)


# Chunked and whole-batch runs are compared with allclose, not equal: float32 convolutions
# and matmuls on a different batch size may take other kernels, so the last bits differ
# (measured: at most ~1e-6 on these [-1, 1] images); 1e-5 still catches any mix-up of images.
def assert_same_images(actual, expected):
    assert actual.device.type == "cpu" and actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_sd_denoising_out_of_memory_halves_the_denoising_batch_only(pipe, reference, monkeypatch, capsys):
    latents, expected, steps = reference
    adapter = StableDiffusionAdapter(pipe, "a cat", STEPS, 7.5)
    limits, finish = Limits(pipe, monkeypatch, unet_fits=2), Finish()
    assert_same_images(adapter.generate(latents, finish), expected)
    # each failing attempt dies at its first UNet call; then 3 chunks of 2 run all steps
    assert limits.unet == [6, 3] + [2] * (3 * steps)
    assert limits.vae == [2, 2, 2] and finish.sizes == [2, 2, 2]
    assert (adapter.auto_denoise_batch, adapter.auto_decode_batch) == (2, None)
    assert oom_lines(capsys) == ["denoising ran out of GPU memory: retrying with 3 images per call",
                                 "denoising ran out of GPU memory: retrying with 2 images per call"]


def test_sd_decoding_out_of_memory_keeps_the_denoised_latents(pipe, reference, monkeypatch, capsys):
    latents, expected, steps = reference
    adapter = StableDiffusionAdapter(pipe, "a cat", STEPS, 7.5)
    limits, finish = Limits(pipe, monkeypatch, vae_fits=2), Finish()
    assert_same_images(adapter.generate(latents, finish), expected)
    assert limits.unet == [6] * steps  # one denoising run: decoding failures redo none of it
    assert limits.vae == [6, 3, 2, 2, 2] and finish.sizes == [2, 2, 2]
    assert (adapter.auto_denoise_batch, adapter.auto_decode_batch) == (None, 2)
    assert oom_lines(capsys) == ["VAE decoding ran out of GPU memory: retrying with 3 images per call",
                                 "VAE decoding ran out of GPU memory: retrying with 2 images per call"]
    # the next call denoises all at once and decodes in the remembered pieces straight away
    limits.unet.clear(), limits.vae.clear()
    assert_same_images(adapter.generate(latents, Finish()), expected)
    assert limits.unet == [6] * steps and limits.vae == [2, 2, 2] and oom_lines(capsys) == []


def test_sd_fixed_denoising_batch_with_both_stages_short_of_memory(pipe, reference, monkeypatch, capsys):
    latents, expected, steps = reference
    adapter = StableDiffusionAdapter(pipe, "a cat", STEPS, 7.5)
    limits, finish = Limits(pipe, monkeypatch, unet_fits=2, vae_fits=1), Finish()
    assert_same_images(adapter.generate(latents, finish, batch_size=4), expected)
    assert limits.unet == [4] + [2] * (3 * steps)
    # the first chunk finds the decoding size; later chunks start from it
    assert limits.vae == [2, 1, 1, 1, 1, 1, 1] and finish.sizes == [1] * 6
    # -gbs is not remembered; the decoding size (always automatic) is
    assert (adapter.auto_denoise_batch, adapter.auto_decode_batch) == (None, 1)
    assert oom_lines(capsys) == ["denoising ran out of GPU memory: retrying with 2 images per call",
                                 "VAE decoding ran out of GPU memory: retrying with 1 images per call"]


def test_sd_out_of_memory_decoding_one_image_is_raised_after_one_denoising(pipe, reference, monkeypatch):
    latents, _, steps = reference
    adapter = StableDiffusionAdapter(pipe, "a cat", STEPS, 7.5)
    limits = Limits(pipe, monkeypatch, vae_fits=0)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        adapter.generate(latents[:2], Finish())
    assert limits.unet == [2] * steps and limits.vae == [2, 1]
