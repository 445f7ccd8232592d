"""Stable Diffusion driven from outside: given initial latents, precomputed prompt embeddings.

FedKTL chooses the initial latent x_T of every image itself (the aligned class
centroids) and uses one fixed prompt for the whole run. The stock pipeline would
re-encode the prompt on every call, draw or rescale x_T, and run the safety checker;
this one only denoises and decodes:

    pipe = LatentInputDiffusionPipeline.from_folder("stable-diffusion/v1.5")
    cond, uncond = pipe.encode_prompt("a cat")                 # once per run
    images = pipe(latents, cond, uncond, num_inference_steps=50, guidance_scale=7.5)

`latents` are used as x_T unchanged (no `init_noise_sigma` scaling); `images` is a
float32 tensor [N, 3, H, W] in [0, 1]. The call is `decode(denoise(...))`; the two
stages can be run apart, so that each can be given its own batch size.
"""
import json
import os
import re

import torch
from diffusers import DiffusionPipeline

#: the components this pipeline needs from a Stable Diffusion folder
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
#: components whose weights follow `torch_dtype`
WEIGHTED = ("unet", "vae", "text_encoder")
#: the weight variant `download_weights.py --fp16` fetches (`unet/diffusion_pytorch_model.fp16.safetensors`)
FP16 = "fp16"
#: weight file names without variant, by the library that loads the component
WEIGHT_NAMES = {"diffusers": "diffusion_pytorch_model", "transformers": "model"}
_SHARD_SUFFIX = re.compile(r"-\d+-of-\d+$")


class PipelineFolderError(ValueError):
    """The folder is not a Stable Diffusion pipeline this class can load."""


class MissingWeightsError(PipelineFolderError):
    """A weighted component has no weight file this class can load."""


def weight_variants(component_dir: str) -> set:
    """The variants of the weight files in a component folder: None for plain files
    (`model.safetensors`, `diffusion_pytorch_model-00001-of-00002.safetensors`), else the
    name's variant (`fp16` for `model.fp16.safetensors`, also `non_ema` and the like)."""
    found = set()
    for name in os.listdir(component_dir):
        stem, extension = os.path.splitext(name)
        if extension not in (".safetensors", ".bin"):
            continue
        _, _, variant = stem.partition(".")
        # the older sharded layout puts the shard number after the variant: model.fp16-00001-of-00002
        found.add(_SHARD_SUFFIX.sub("", variant) or None)
    return found


def choose_variants(folder: str, index: dict, prefer_fp16: bool) -> dict:
    """{component: None or "fp16"} for the weighted components: the plain files when present
    (the fp16 ones first if `prefer_fp16`), the fp16 ones when they are all there is."""
    chosen, missing = {}, []
    for name in WEIGHTED:
        variants = weight_variants(os.path.join(folder, name))
        if prefer_fp16 and FP16 in variants:
            chosen[name] = FP16
        elif None in variants:
            chosen[name] = None
        elif FP16 in variants:
            chosen[name] = FP16
        else:
            weights = WEIGHT_NAMES.get(index[name][0], "model")
            others = sorted(v for v in variants if v is not None)
            found = f", found only the variant(s) {', '.join(others)}" if others else ""
            missing.append(f"{name}/{weights}.safetensors or {name}/{weights}.{FP16}.safetensors{found}")
    if missing:
        raise MissingWeightsError(f"{folder!r} has no weights for {'; '.join(missing)}")
    return chosen


def read_model_index(folder: str) -> dict:
    index_path = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index_path):
        raise PipelineFolderError(f"{folder!r} has no model_index.json")
    with open(index_path) as f:
        try:
            index = json.load(f)
        except ValueError as exc:
            raise PipelineFolderError(f"{index_path!r} is not valid JSON ({exc})") from None
    missing = [name for name in COMPONENTS
               if not isinstance(index.get(name), list) or None in index[name][:2]
               or not os.path.isdir(os.path.join(folder, name))]
    if missing:
        raise PipelineFolderError(f"{folder!r} lacks the component(s) {', '.join(missing)}")
    return index


def component_class(library: str, class_name: str):
    import diffusers
    import transformers

    modules = {"diffusers": diffusers, "transformers": transformers}
    if library not in modules or not hasattr(modules[library], class_name):
        raise PipelineFolderError(f"unknown component class {library}.{class_name}")
    return getattr(modules[library], class_name)


class LatentInputDiffusionPipeline(DiffusionPipeline):
    def __init__(self, vae, text_encoder, tokenizer, unet, scheduler):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @classmethod
    def from_folder(cls, folder: str, torch_dtype: torch.dtype = torch.float32, prefer_fp16=None):
        """Load the five components from a local Stable Diffusion folder; never touches the
        network, ignores the safety checker and feature extractor if present.

        Each of unet, vae and text_encoder loads its plain weight files, or its `.fp16`
        ones where only those are present (as `download_weights.py --fp16` leaves them);
        `prefer_fp16` (default: when `torch_dtype` is float16) takes the fp16 files where
        both exist. Weights end up in `torch_dtype` whichever files they came from.
        `loaded_variants` records the choice ({component: None or "fp16"})."""
        index = read_model_index(folder)
        if prefer_fp16 is None:
            prefer_fp16 = torch_dtype == torch.float16
        variants = choose_variants(folder, index, prefer_fp16)
        parts = {}
        for name in COMPONENTS:
            library, class_name = index[name][:2]
            kwargs = {}
            if name in WEIGHTED:
                kwargs = {"torch_dtype": torch_dtype}
                if variants[name] is not None:
                    kwargs["variant"] = variants[name]
            part = component_class(library, class_name).from_pretrained(
                folder, subfolder=name, local_files_only=True, **kwargs)
            if name in WEIGHTED and torch_dtype == torch.float32 and any(
                    p.dtype != torch.float32 for p in part.parameters()):
                part.to(torch.float32)  # float16 files must never leave float16 weights on the CPU
            parts[name] = part
        pipe = cls(**parts)
        pipe.loaded_variants = variants
        return pipe

    @property
    def latent_shape(self) -> tuple:
        """(C, H/f, W/f) of the UNet's default sample size."""
        size = self.unet.config.sample_size
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return (self.unet.config.in_channels, height, width)

    @property
    def image_size(self) -> tuple:
        _, height, width = self.latent_shape
        return (height * self.vae_scale_factor, width * self.vae_scale_factor)

    @property
    def init_noise_sigma(self) -> float:
        return float(self.scheduler.init_noise_sigma)

    @torch.inference_mode()
    def encode_prompt(self, prompt: str, negative_prompt: str = ""):
        """Text-encoder hidden states [1, L, D] for the prompt and the negative prompt."""
        def encode(text):
            tokens = self.tokenizer(text, padding="max_length", max_length=self.tokenizer.model_max_length,
                                    truncation=True, return_tensors="pt")
            ids = tokens.input_ids.to(self.text_encoder.device)
            return self.text_encoder(ids)[0]

        return encode(prompt), encode(negative_prompt)

    @torch.inference_mode()
    def denoise(self, latents: torch.Tensor, prompt_embeds: torch.Tensor,
                negative_prompt_embeds: torch.Tensor, num_inference_steps: int = 50,
                guidance_scale: float = 7.5) -> torch.Tensor:
        """The denoised latents x_0 for the initial latents x_T, on the UNet's device and in
        its dtype. With guidance (scale > 1) every UNet call sees twice the batch."""
        unet, scheduler = self.unet, self.scheduler
        device, dtype = unet.device, unet.dtype
        n = len(latents)
        latents = latents.to(device=device, dtype=dtype)
        guided = guidance_scale > 1.0
        embeds = prompt_embeds.to(device, dtype).expand(n, -1, -1)
        if guided:
            embeds = torch.cat([negative_prompt_embeds.to(device, dtype).expand(n, -1, -1), embeds])
        # set_timesteps also resets the scheduler's multistep history, so calls are independent
        scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(scheduler.timesteps):
            model_input = torch.cat([latents, latents]) if guided else latents
            model_input = scheduler.scale_model_input(model_input, t)
            noise = unet(model_input, t, encoder_hidden_states=embeds).sample
            if guided:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            latents = scheduler.step(noise, t, latents).prev_sample
        return latents

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (float32 [N, 3, H, W], on the VAE's device) for denoised latents."""
        vae = self.vae
        latents = latents.to(device=vae.device, dtype=vae.dtype)
        images = vae.decode(latents / vae.config.scaling_factor).sample
        return ((images.float() + 1) / 2).clamp(0, 1)

    def __call__(self, latents: torch.Tensor, prompt_embeds: torch.Tensor,
                 negative_prompt_embeds: torch.Tensor, num_inference_steps: int = 50,
                 guidance_scale: float = 7.5) -> torch.Tensor:
        return self.decode(self.denoise(latents, prompt_embeds, negative_prompt_embeds,
                                        num_inference_steps, guidance_scale))
