"""Stable Diffusion backend: FedKTL's latents are the diffusion's initial noise x_T.

The pipeline (`stable-diffusion/pipelines/latent_input_pipeline.py`) is loaded from the
local folder `-GPath` without network access. The prompt `-prompt` is encoded once;
every `synthesize` call denoises the given latents for `--sd_steps` steps with
classifier-free guidance `--sd_guidance` and decodes them.
"""
import importlib.util
import math
import os
import warnings

import torch

from flcore.generators.base import GeneratorAdapter
from flcore.generators.registry import REPO_ROOT, require_path
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

    def synthesize(self, latents: torch.Tensor) -> torch.Tensor:
        x_T = latents.reshape(len(latents), *self.latent_shape)
        return self.pipe(x_T, self.prompt_embeds, self.negative_prompt_embeds,
                         num_inference_steps=self.num_inference_steps, guidance_scale=self.guidance_scale)


def load_stable_diffusion_adapter(args, device) -> StableDiffusionAdapter:
    folder = require_path(args.generator_path, "-GPath",
                          "a local Stable Diffusion folder such as stable-diffusion/v1.5", README)
    if not os.path.isdir(folder):
        raise UserError(f"-GPath {args.generator_path!r} is a file: give the Stable Diffusion folder "
                        f"(the one holding model_index.json; see {README})")
    module = import_pipeline_module()
    dtype = torch.float32
    if args.sd_fp16:
        if torch.device(device).type == "cuda":
            dtype = torch.float16
        else:
            print("--sd_fp16 needs CUDA: Stable Diffusion runs in float32 on the CPU")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pipe = module.LatentInputDiffusionPipeline.from_folder(folder, torch_dtype=dtype)
    except module.PipelineFolderError as exc:
        raise UserError(f"-GPath {args.generator_path!r} is not a Stable Diffusion pipeline folder: {exc} "
                        f"(save one with save_pretrained or download it; see {README})") from None
    except (OSError, ValueError, KeyError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot load the Stable Diffusion pipeline in {args.generator_path!r}: {first_line} "
                        f"(see {README})") from None
    pipe.to(device)
    return StableDiffusionAdapter(pipe, args.stable_diffusion_prompt, args.sd_steps, args.sd_guidance)
