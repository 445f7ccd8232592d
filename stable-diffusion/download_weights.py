#!/usr/bin/env python
"""Download Stable Diffusion v1.5 in the diffusers layout into stable-diffusion/v1.5.

Needs internet access and `pip install huggingface_hub`. The library never runs this:
runs and tests only read local folders.

    python stable-diffusion/download_weights.py [--fp16] [--repo ID] [--out DIR]
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
COMPONENT_FILES = ["model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
                   "tokenizer/*", "unet/config.json", "vae/config.json"]
# The Hub names a variant's file by inserting it before the extension
# (unet/diffusion_pytorch_model.fp16.safetensors), as save_pretrained(variant=...) does.
WEIGHTS = ["text_encoder/model{variant}.safetensors", "unet/diffusion_pytorch_model{variant}.safetensors",
           "vae/diffusion_pytorch_model{variant}.safetensors"]


def allow_patterns(fp16: bool = False) -> list:
    """The `snapshot_download` patterns (fnmatch, relative to the repository root) of the
    files the loader needs: configs, tokenizer and the plain or the fp16 weights only (no
    .bin duplicates, non-EMA UNet, safety checker or single-file checkpoints)."""
    variant = ".fp16" if fp16 else ""
    return COMPONENT_FILES + [pattern.format(variant=variant) for pattern in WEIGHTS]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=DEFAULT_REPO, help=f"Hugging Face repository (default {DEFAULT_REPO})")
    parser.add_argument("--out", default=os.path.join(HERE, "v1.5"), help="target folder (default stable-diffusion/v1.5)")
    parser.add_argument("--fp16", action="store_true",
                        help="only the float16 *.fp16.safetensors weight files (half the size; they load in "
                             "float32 on the CPU and in float16 with --sd_fp16 on CUDA)")
    args = parser.parse_args()
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        print("error: this helper needs huggingface_hub: pip install huggingface_hub", file=sys.stderr)
        return 2
    try:
        snapshot_download(args.repo, local_dir=args.out, allow_patterns=allow_patterns(args.fp16))
    except Exception as exc:  # network, authentication or repository errors: one line
        print(f"error: download from {args.repo} failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"Stable Diffusion weights in {args.out}: run with -GPath {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
