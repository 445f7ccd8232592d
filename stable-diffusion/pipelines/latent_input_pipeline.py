"""Stable Diffusion driven from outside: given initial latents, precomputed prompt embeddings.

FedKTL chooses the initial latent x_T of every image itself (the aligned class
centroids) and uses one fixed prompt for the whole run. The stock pipeline would
re-encode the prompt on every call, draw or rescale x_T, and run the safety checker;
this one only denoises and decodes:

    pipe = LatentInputDiffusionPipeline.from_folder("stable-diffusion/v1.5")
    cond, uncond = pipe.encode_prompt("a cat")                 # once per run
    images = pipe(latents, cond, uncond, num_inference_steps=50, guidance_scale=7.5)

`latents` are used as x_T unchanged (no `init_noise_sigma` scaling); `images` is a
float32 tensor [N, 3, H, W] in [0, 1].
"""
import json
import os

import torch
from diffusers import DiffusionPipeline

#: the components this pipeline needs from a Stable Diffusion folder
COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
#: components whose weights follow `torch_dtype`
WEIGHTED = ("unet", "vae", "text_encoder")


class PipelineFolderError(ValueError):
    """The folder is not a Stable Diffusion pipeline this class can load."""


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
    def from_folder(cls, folder: str, torch_dtype: torch.dtype = torch.float32):
        """Load the five components from a local Stable Diffusion folder; never touches the
        network, ignores the safety checker and feature extractor if present."""
        index = read_model_index(folder)
        parts = {}
        for name in COMPONENTS:
            library, class_name = index[name][:2]
            kwargs = {"torch_dtype": torch_dtype} if name in WEIGHTED else {}
            parts[name] = component_class(library, class_name).from_pretrained(
                folder, subfolder=name, local_files_only=True, **kwargs)
        return cls(**parts)

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
    def __call__(self, latents: torch.Tensor, prompt_embeds: torch.Tensor,
                 negative_prompt_embeds: torch.Tensor, num_inference_steps: int = 50,
                 guidance_scale: float = 7.5) -> torch.Tensor:
        unet, scheduler = self.unet, self.scheduler
        device, dtype = unet.device, unet.dtype
        n = len(latents)
        latents = latents.to(device=device, dtype=dtype)
        guided = guidance_scale > 1.0
        embeds = prompt_embeds.to(device, dtype).expand(n, -1, -1)
        if guided:
            embeds = torch.cat([negative_prompt_embeds.to(device, dtype).expand(n, -1, -1), embeds])
        scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(scheduler.timesteps):
            model_input = torch.cat([latents, latents]) if guided else latents
            model_input = scheduler.scale_model_input(model_input, t)
            noise = unet(model_input, t, encoder_hidden_states=embeds).sample
            if guided:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            latents = scheduler.step(noise, t, latents).prev_sample
        vae = self.vae
        images = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return ((images.float() + 1) / 2).clamp(0, 1)
