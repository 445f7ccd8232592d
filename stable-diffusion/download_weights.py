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
WEIGHTS = ["text_encoder/model{variant}.safetensors", "unet/diffusion_pytorch_model{variant}.safetensors",
           "vae/diffusion_pytorch_model{variant}.safetensors"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=DEFAULT_REPO, help=f"Hugging Face repository (default {DEFAULT_REPO})")
    parser.add_argument("--out", default=os.path.join(HERE, "v1.5"), help="target folder (default stable-diffusion/v1.5)")
    parser.add_argument("--fp16", action="store_true", help="the float16 weight files (half the size)")
    args = parser.parse_args()
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        print("error: this helper needs huggingface_hub: pip install huggingface_hub", file=sys.stderr)
        return 2
    variant = ".fp16" if args.fp16 else ""
    patterns = COMPONENT_FILES + [pattern.format(variant=variant) for pattern in WEIGHTS]
    try:
        snapshot_download(args.repo, local_dir=args.out, allow_patterns=patterns)
    except Exception as exc:  # network, authentication or repository errors: one line
        print(f"error: download from {args.repo} failed: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"Stable Diffusion weights in {args.out}: run with -GPath {os.path.relpath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
