"""Text-to-image generation over the library's generator backends, for GPT-FL.

Interface: `generate(prompts, generator)` gives one image per prompt, [n, 3, H, W] in
[0, 1] on the CPU, with all randomness drawn from `generator` (a CPU torch.Generator).

- `StableDiffusionTextToImage`: the local Stable Diffusion pipeline of
  `flcore.generators.stable_diffusion`, each distinct prompt encoded once, initial
  noise from the seeded stream, classifier-free guidance drawn uniformly in [1, 5]
  per call (GPT-FL's recipe for diverse images).
- `BuiltinTextToImage`: the bundled 32x32 GAN, which reads no text. A prompt only
  picks a fixed anchor in its W space (seeded by a hash of the prompt) and images
  are drawn near it, so one prompt's images share a look. It knows nothing of what
  the words mean; it exists so GPT-FL runs offline and in tests.
"""
import os
from abc import ABC, abstractmethod

import torch

from flcore.generators.paths import require_path
from flcore.generators.registry import load_generator
from utils.seeding import derive_seed

GUIDANCE_RANGE = (1.0, 5.0)
#: how far a built-in image's w moves from its prompt's anchor towards a random w
DEFAULT_ANCHOR_SPREAD = 0.4

BUILTIN_NOTICE = (
    "GPT-FL with the built-in generator: it reads no text, so each prompt only picks a fixed point of its "
    "latent space and the synthetic classes carry no knowledge of what the labels mean (it is there to run "
    "offline and in tests); give -GPath a Stable Diffusion folder for the method as published")
_notice_shown = False


class TextToImage(ABC):
    #: images per generator call when -gbs is 0
    default_batch_size: int

    @abstractmethod
    def generate(self, prompts: list[str], generator: torch.Generator) -> torch.Tensor:
        """One image per prompt, [len(prompts), 3, H, W] in [0, 1], on the CPU."""


def prompt_seed(prompt: str) -> int:
    """A seed that depends on the prompt's text only (not on the run's seed), so a prompt
    names the same anchor in every run."""
    return derive_seed(0, "prompt-anchor", prompt)


class BuiltinTextToImage(TextToImage):
    default_batch_size = 64  # faster on CPU than larger batches (cache-sized activations)

    def __init__(self, adapter, spread: float = DEFAULT_ANCHOR_SPREAD):
        """`adapter`: a StyleGANLikeAdapter (w-space `sample_latents`, `synthesize`)."""
        if not 0 <= spread <= 1:
            raise ValueError(f"spread must be in [0, 1], got {spread}")
        self.adapter = adapter
        self.spread = spread
        self._anchors = {}

    def anchor(self, prompt: str) -> torch.Tensor:
        """The prompt's w: the generator's mapping of a z drawn from the prompt's own seed."""
        if prompt not in self._anchors:
            stream = torch.Generator().manual_seed(prompt_seed(prompt))
            self._anchors[prompt] = self.adapter.sample_latents(1, stream)[0]
        return self._anchors[prompt]

    @torch.no_grad()
    def generate(self, prompts, generator):
        anchors = torch.stack([self.anchor(prompt) for prompt in prompts])
        free = self.adapter.sample_latents(len(prompts), generator)
        # Interpolating in W keeps every w on the generator's learnt manifold (as truncation does).
        latents = anchors.lerp(free, self.spread)
        return self.adapter.synthesize(latents).float().cpu()


class StableDiffusionTextToImage(TextToImage):
    default_batch_size = 8

    def __init__(self, pipe, num_inference_steps: int, guidance_range=GUIDANCE_RANGE):
        """`pipe`: a LatentInputDiffusionPipeline (stable-diffusion/pipelines/)."""
        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)
        self.num_inference_steps = num_inference_steps
        self.guidance_range = guidance_range
        self._embeddings = {}
        self._negative = None

    def embedding(self, prompt: str) -> torch.Tensor:
        """[1, L, D] text-encoder states of `prompt`, encoded once per adapter."""
        if prompt not in self._embeddings:
            self._embeddings[prompt], negative = self.pipe.encode_prompt(prompt)
            if self._negative is None:
                self._negative = negative  # the empty prompt's states: the same for every prompt
        return self._embeddings[prompt]

    def draw_guidance(self, generator: torch.Generator) -> float:
        low, high = self.guidance_range
        return low + (high - low) * float(torch.rand((), generator=generator))

    @torch.no_grad()
    def generate(self, prompts, generator):
        # One stacked [n, L, D] condition lets a batch mix prompts (the pipeline expands
        # [1, L, D] and leaves [n, L, D] as it is).
        conditions = torch.cat([self.embedding(prompt) for prompt in prompts])
        shape = (len(prompts), *self.pipe.latent_shape)
        noise = torch.randn(shape, generator=generator) * self.pipe.init_noise_sigma
        guidance = self.draw_guidance(generator)
        images = self.pipe(noise, conditions, self._negative, num_inference_steps=self.num_inference_steps,
                           guidance_scale=guidance)
        return images.float().cpu()


GPATH_WHAT = ("a local Stable Diffusion folder, or a built-in generator .pt file, or drop -GPath to use the "
              "bundled generator")


def check_text_to_image_flags(args) -> None:
    """Refuse a named -GPath that does not exist, before any data is loaded."""
    if args.generator_path is not None:
        require_path(args.generator_path, "-GPath", GPATH_WHAT, "README.md")


def load_text_to_image(args, device, spread: float = DEFAULT_ANCHOR_SPREAD) -> TextToImage:
    """Stable Diffusion when -GPath is a folder; else the built-in generator (the bundled
    weights, or the .pt file -GPath names)."""
    global _notice_shown
    path = args.generator_path
    if path is not None:
        found = require_path(path, "-GPath", GPATH_WHAT, "README.md")
        if os.path.isdir(found):
            pipe = load_generator("stable-diffusion-pipeline", args, device)
            return StableDiffusionTextToImage(pipe, args.sd_steps)
    if not _notice_shown:
        print(BUILTIN_NOTICE)
        _notice_shown = True
    return BuiltinTextToImage(load_generator("builtin", args, device), spread)

