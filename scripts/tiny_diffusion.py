"""A tiny random Stable Diffusion pipeline, built in code.

It has the layout of a real Stable Diffusion v1.x folder (unet, vae, text_encoder,
tokenizer, scheduler, written by `save_pretrained`), so the Stable Diffusion backend
can be tested and timed offline: UNet about 1.4M parameters, 4x32x32 latents, 64x64
images. Its images are noise; only shapes, plumbing and speed mean anything.

    python scripts/tiny_diffusion.py OUT_DIR [--fp16]

`--fp16` writes only float16 `*.fp16.safetensors` weights, the layout
`stable-diffusion/download_weights.py --fp16` downloads.
"""
import argparse
import string

import torch

LETTERS = string.ascii_lowercase + string.digits + "-'"


def tiny_tokenizer_vocabulary():
    """A character-level CLIP BPE vocabulary: special tokens, characters, word-final characters."""
    tokens = ["<|startoftext|>", "<|endoftext|>", "!"]
    tokens += list(LETTERS) + [ch + "</w>" for ch in LETTERS]
    return {token: index for index, token in enumerate(tokens)}


def build_tiny_stable_diffusion(seed: int = 0, latent_size: int = 32):
    """A `StableDiffusionPipeline` with random weights and no safety checker; latents are
    4 x latent_size x latent_size, images twice that size."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab = tiny_tokenizer_vocabulary()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=latent_size, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
            attention_head_dim=8, norm_num_groups=32)
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64),
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), norm_num_groups=32,
            sample_size=2 * latent_size)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_attention_heads=4,
            num_hidden_layers=2, max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"], pad_token_id=vocab["<|endoftext|>"]))
    scheduler = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              skip_prk_steps=True, steps_offset=1)
    return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def save_tiny_stable_diffusion(folder: str, seed: int = 0, latent_size: int = 32, variant: str = None) -> str:
    """Save the tiny pipeline; `variant="fp16"` stores float16 weights as `*.fp16.safetensors`
    only (like the Hub's fp16 files), otherwise float32 under the plain names."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    if variant not in (None, "fp16"):
        raise ValueError(f"variant must be None or 'fp16', not {variant!r}")
    diffusers_logging.disable_progress_bar()  # a bar per file is noise for a 6 MB pipeline
    transformers_logging.disable_progress_bar()
    pipe = build_tiny_stable_diffusion(seed, latent_size)
    if variant == "fp16":
        verbosity = diffusers_logging.get_verbosity()
        diffusers_logging.set_verbosity_error()  # its advice on casting with to() concerns inference
        pipe.to(torch.float16)
        diffusers_logging.set_verbosity(verbosity)
    pipe.save_pretrained(folder, variant=variant)
    return folder


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Save a tiny random Stable Diffusion pipeline.")
    parser.add_argument("out_dir")
    parser.add_argument("--fp16", action="store_true", help="float16 weights as *.fp16.safetensors only")
    cli = parser.parse_args()
    print(save_tiny_stable_diffusion(cli.out_dir, variant="fp16" if cli.fp16 else None))
