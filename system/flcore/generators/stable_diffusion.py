"""Stable Diffusion backend: FedKTL's latents are the diffusion's initial noise x_T.

The pipeline (`stable-diffusion/pipelines/latent_input_pipeline.py`) is loaded from the
local folder `-GPath` (which the user must name; there is no default) without network
access. The prompt `-prompt` is encoded once; every `synthesize` call denoises the given
latents for `--sd_steps` steps with classifier-free guidance `--sd_guidance` and decodes
them. `generate` runs the two stages with separate batch sizes, each halved on its own
when the GPU runs out of memory.
"""
import importlib.util
import math
import os
import warnings

import torch

from flcore.generators.base import GeneratorAdapter, map_in_chunks
from flcore.generators.paths import REPO_ROOT, require_path
from utils.errors import UserError

PIPELINE_FILE = os.path.join(REPO_ROOT, "stable-diffusion", "pipelines", "latent_input_pipeline.py")
README = "stable-diffusion/README.md"


def import_pipeline_module():
    """The pipeline module lives in `stable-diffusion/` (not an importable package name)."""
    try:
        import diffusers  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise UserError(f"the Stable Diffusion backend needs {exc.name}: pip install diffusers transformers") from None
    # Loading chatter (per-file progress bars, "install accelerate") is not the user's concern.
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    spec = importlib.util.spec_from_file_location("latent_input_pipeline", PIPELINE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StableDiffusionAdapter(GeneratorAdapter):
    #: images per denoising call and per VAE decoding call that fitted after an
    #: out-of-memory in `generate` (None: none yet, start with all of them)
    auto_denoise_batch = None
    auto_decode_batch = None

    def __init__(self, pipe, prompt: str, num_inference_steps: int = 50, guidance_scale: float = 7.5):
        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)
        self.latent_shape = tuple(pipe.latent_shape)
        self.latent_dim = math.prod(self.latent_shape)
        self.prompt = prompt
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.encode_prompt()

    def encode_prompt(self) -> None:
        self.prompt_embeds, self.negative_prompt_embeds = self.pipe.encode_prompt(self.prompt)

    @property
    def device(self) -> torch.device:
        return self.pipe.unet.device

    def to(self, device):
        self.pipe.to(device)
        self.encode_prompt()
        return self

    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """The initial-noise distribution: N(0, init_noise_sigma^2), flattened, float32."""
        noise = torch.randn(n, self.latent_dim, generator=generator) * self.pipe.init_noise_sigma
        return noise.to(self.device)

    def denoise(self, latents: torch.Tensor) -> torch.Tensor:
        """Denoised latents x_0 [n, C, h, w] for flattened initial latents x_T."""
        x_T = latents.reshape(len(latents), *self.latent_shape)
        return self.pipe.denoise(x_T, self.prompt_embeds, self.negative_prompt_embeds,
                                 num_inference_steps=self.num_inference_steps,
                                 guidance_scale=self.guidance_scale)

    def decode(self, denoised: torch.Tensor) -> torch.Tensor:
        return self.pipe.decode(denoised)

    def synthesize(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode(self.denoise(latents))

    @torch.no_grad()
    def generate(self, latents: torch.Tensor, finish, batch_size: int = 0) -> torch.Tensor:
        """As `GeneratorAdapter.generate`, with denoising and decoding batched apart.

        Denoising runs `batch_size` latents per call (with guidance the UNet sees twice as
        many rows); 0 starts from `auto_denoise_batch` or all latents, halves on CUDA
        out-of-memory and remembers the size that works there; N > 0 halves for the rest
        of this call only. Each denoised chunk is then decoded by the VAE in pieces of
        `auto_decode_batch` (or the whole chunk), halved and remembered on out-of-memory
        whatever `batch_size` is; an out-of-memory while decoding (or in `finish`, which
        gets each decoded piece) keeps the chunk's denoised latents and only decodes them
        in smaller pieces. Out of memory with one image per call is re-raised."""
        if len(latents) == 0:
            raise ValueError("generate needs at least one latent")
        automatic = batch_size <= 0
        denoise_start = (self.auto_denoise_batch or len(latents)) if automatic else batch_size

        def decode_piece(piece):
            return finish(self.decode(piece)).cpu()

        def decode_chunk(denoised):
            start = self.auto_decode_batch or len(denoised)
            pieces, size = map_in_chunks(decode_piece, denoised, start, stage="VAE decoding")
            if size < start:
                self.auto_decode_batch = size
            return torch.cat(pieces)

        chunks, size = map_in_chunks(self.denoise, latents, denoise_start, stage="denoising",
                                     then=decode_chunk)
        if automatic and size < denoise_start:
            self.auto_denoise_batch = size
        return torch.cat(chunks)


def load_stable_diffusion_adapter(args, device) -> StableDiffusionAdapter:
    """FedKTL's adapter: the pipeline, the prompt encoded once, the steps and the guidance."""
    pipe = load_stable_diffusion_pipeline(args, device)
    return StableDiffusionAdapter(pipe, args.stable_diffusion_prompt, args.sd_steps, args.sd_guidance)


def load_stable_diffusion_pipeline(args, device):
    """The pipeline in the -GPath folder on `device` (float16 with --sd_fp16 on CUDA)."""
    folder = require_path(args.generator_path, "-GPath",
                          "a local Stable Diffusion folder such as stable-diffusion/v1.5", README)
    if not os.path.isdir(folder):
        raise UserError(f"-GPath {args.generator_path!r} is a file: give the Stable Diffusion folder "
                        f"(the one holding model_index.json; see {README})")
    module = import_pipeline_module()
    print(f"loading Stable Diffusion pipeline {folder}", flush=True)
    dtype = torch.float32
    if args.sd_fp16:
        if torch.device(device).type == "cuda":
            dtype = torch.float16
        else:
            print("--sd_fp16 needs CUDA: Stable Diffusion runs in float32 on the CPU")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # fp16 weight files are read whichever dtype runs; with float16 they are preferred
            pipe = module.LatentInputDiffusionPipeline.from_folder(folder, torch_dtype=dtype)
    except module.MissingWeightsError as exc:
        raise UserError(f"-GPath {args.generator_path!r} lacks weights: {exc} (download them with "
                        f"python stable-diffusion/download_weights.py [--fp16]; see {README})") from None
    except module.PipelineFolderError as exc:
        raise UserError(f"-GPath {args.generator_path!r} is not a Stable Diffusion pipeline folder: {exc} "
                        f"(save one with save_pretrained or download it; see {README})") from None
    except (OSError, ValueError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load the Stable Diffusion pipeline in {args.generator_path!r}: {first_line} "
                        f"(see {README})") from None
    pipe.to(device)
    return pipe
