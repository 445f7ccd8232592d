#!/usr/bin/env python
"""Dress rehearsal of the FedKTL paper's run on the CPU, at the paper's shapes.

    python scripts/rehearse_paper.py --nvlabs DIR_OF_STYLEGAN3_CLONE --stylegan_xl DIR_OF_STYLEGAN_XL_CLONE
    python scripts/rehearse_paper.py --nvlabs ... --stylegan_xl ... --quick          # a fast check
    python scripts/rehearse_paper.py --variants FedKTL,FedKTL-stable-diffusion --json rehearsal.json

The full rehearsal takes about an hour on 2 (shared) CPU cores, --quick about 10 minutes.

Each FedKTL variant (FedKTL with the bundled generator as the reference, FedKTL-stylegan-3,
FedKTL-stylegan-xl, FedKTL-stable-diffusion) runs `system/main.py` in a subprocess with the
paper's flags (run_me.sh's paper_suite: HtFE8, -fd 512, 20 clients, -lbs 10, -lr 0.01, ...)
on Cifar100-shaped data: communication_table.py's real Dirichlet-0.1 partition of 60,000
labels over 20 clients, thinned to a few random-pixel images per (client, class).
Generators have random weights and are built in a temporary folder with their authors' code:
NVlabs' StyleGAN3 (`--nvlabs`, pickled as their training loop does), StyleGAN-XL's
progressive ImageNet generator (`--stylegan_xl`) and a Stable Diffusion v1.5-shaped
diffusers pipeline (save_pretrained, a small-vocabulary tokenizer as tiny_diffusion.py's).

Measured, per round and per variant, from the results h5: seconds by phase
(`phase_seconds/<phase>`, `checkpoint_seconds`, `round_seconds`) and peak host memory
(`peak_host_mib`); from the files: bytes of the results h5 and config json, the image PNGs
and a checkpoint (runs use `--ckpt_every 1 --ckpt_keep_final`; a default-flag run of the
reference shows what a finished run leaves behind). It ends with the disk that
`bash run_me.sh paper` needs, extrapolated from these figures.

Real-size generators do not fit a round on a 2-core CPU (FedKTL generates one image per
class, 100 per round; StyleGAN3 at 512 px, StyleGAN-XL's 1024-channel ImageNet stem and
Stable Diffusion's UNet and VAE take tens of seconds per image there). So every variant's
generator is built at its real size, weighed, and timed by a probe (main.py, 2 classes, so
2 images, one round); the federated run uses the same code and latent interface at reduced
width (and StyleGAN3's resolution), reported with the table.
"""
import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from unittest import mock

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SCRIPTS_DIR)
SYSTEM_DIR = os.path.join(REPO_ROOT, "system")
for path in (SCRIPTS_DIR, SYSTEM_DIR, REPO_ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

MAIN = os.path.join(SYSTEM_DIR, "main.py")
RUN_ME = os.path.join(REPO_ROOT, "run_me.sh")
DATASET = "Cifar100Shaped"
PROBE_DATASET = "Probe2"
PHASES = ("generation", "alignment", "client_training", "prototype_collection", "evaluation", "communication")
MIB = 2 ** 20

# ---- generators: real sizes and the reduced ones the federated runs use ----------------------

#: NVlabs train.py --cfg stylegan3-t defaults (z 512, w 512, 2 mapping layers, --cbase 32768,
#: --cmax 512) at 512 px, as the AFHQv2 / Benches 512 pickles; batch 32 for the EMA beta.
STYLEGAN3_REAL = {"z_dim": 512, "c_dim": 0, "w_dim": 512, "img_resolution": 512, "img_channels": 3,
                  "channel_base": 32768, "channel_max": 512, "mapping_kwargs": {"num_layers": 2},
                  "magnitude_ema_beta": 0.5 ** (32 / 20e3)}
STYLEGAN3_RUN = {**STYLEGAN3_REAL, "img_resolution": 64, "channel_base": 4096, "channel_max": 64}
STYLEGAN3_QUICK = {**STYLEGAN3_REAL, "img_resolution": 32, "channel_base": 1024, "channel_max": 32}

#: StyleGAN-XL train.py --cfg stylegan3-t --cond True: channel base and max doubled (65536, 1024),
#: z 64, w 512, 2 mapping layers, ImageNet's 1000 classes embedded via in_embeddings/; the paper's
#: progressive growing: a 16 px stem of 11 layers (--syn_layers 10), then one superresolution
#: stage per doubling (--superres --up_factor 2 --head_layers 7) up to 64 px.
STYLEGAN_XL_REAL = {
    "stem": {"z_dim": 64, "c_dim": 1000, "w_dim": 512, "img_resolution": 16, "img_channels": 3,
             "channel_base": 65536, "channel_max": 1024, "conv_kernel": 3, "use_radial_filters": False,
             "num_layers": 10, "mapping_kwargs": {"num_layers": 2, "rand_embedding": False},
             "magnitude_ema_beta": 0.5 ** (2048 / 20e3)},
    "stages": [{"img_resolution": 32, "head_layers": 7, "up_factor": 2},
               {"img_resolution": 64, "head_layers": 7, "up_factor": 2}],
}
STYLEGAN_XL_RUN = {**STYLEGAN_XL_REAL, "stem": {**STYLEGAN_XL_REAL["stem"], "channel_base": 4096, "channel_max": 64}}
STYLEGAN_XL_QUICK = {"stem": {**STYLEGAN_XL_RUN["stem"], "channel_base": 1024, "channel_max": 32, "num_layers": 4},
                     "stages": [{"img_resolution": 32, "head_layers": 3, "up_factor": 2}]}

#: Stable Diffusion v1.5's component configs (unet, vae, text_encoder = CLIP ViT-L/14's text
#: tower, scheduler); the tokenizer is a small character vocabulary (shapes do not depend on it).
SD_REAL = {
    "unet": {"sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
             "block_out_channels": [320, 640, 1280, 1280],
             "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
             "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
             "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32, "act_fn": "silu",
             "center_input_sample": False, "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0,
             "mid_block_scale_factor": 1, "norm_eps": 1e-5},
    "vae": {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": [128, 256, 512, 512],
            "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
            "layers_per_block": 2, "norm_num_groups": 32, "act_fn": "silu", "sample_size": 512},
    "text_encoder": {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                     "num_hidden_layers": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
                     "projection_dim": 768},
    "scheduler": {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
                  "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1},
}
#: same blocks and 4x64x64 latents, narrower: UNet 32..128 channels with one attention head
#: (attention over 64x64 latents dominates otherwise), VAE 16..64 channels, 512 px images.
SD_RUN = {**SD_REAL,
          "unet": {**SD_REAL["unet"], "block_out_channels": [32, 64, 128, 128], "attention_head_dim": 1},
          "vae": {**SD_REAL["vae"], "block_out_channels": [16, 32, 64, 64], "norm_num_groups": 16}}
SD_QUICK = {**SD_RUN,
            "unet": {**SD_RUN["unet"], "block_out_channels": [32, 32, 32, 32],
                     "down_block_types": ["DownBlock2D"] * 3 + ["CrossAttnDownBlock2D"],
                     "up_block_types": ["CrossAttnUpBlock2D"] + ["UpBlock2D"] * 3},
            "vae": {**SD_RUN["vae"], "block_out_channels": [16, 16, 16, 16]},
            "text_encoder": {**SD_REAL["text_encoder"], "num_hidden_layers": 2}}

#: runs NVlabs' (or StyleGAN-XL's) own code from its clone, in a fresh interpreter: builds
#: G, pickles {'G_ema': copy of G} as their training loop does (stems also with 'G', which
#: StyleGAN-XL's SuperresGenerator reloads through legacy.load_network_pkl) and prints a summary.
STYLEGAN_BUILDER = r"""
import copy, json, os, pickle, sys, time
clone, system_dir, kind, out, spec = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
sys.path.insert(0, clone)
sys.path.append(system_dir)
from flcore.generators.stylegan_pickle import provide_pkg_resources
provide_pkg_resources()
os.chdir(clone)  # StyleGAN-XL's mapping network opens in_embeddings/ from here
import torch
torch.manual_seed(0)
started = time.time()

def dump(G, path, with_training_copy):
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    with open(path, "wb") as f:
        pickle.dump({"G": G, "G_ema": G_ema} if with_training_copy else {"G_ema": G_ema}, f)

if kind == "stylegan3":
    from training.networks_stylegan3 import Generator
    G = Generator(**spec)
    dump(G, out, False)
else:
    from training.networks_stylegan3_resetting import Generator, SuperresGenerator
    G = Generator(**spec["stem"])
    stem = out + ".stem16.pkl"
    dump(G, stem, True)
    for index, stage in enumerate(spec["stages"]):
        G = SuperresGenerator(path_stem=stem, c_dim=spec["stem"]["c_dim"], img_channels=3, **stage)
        last = index == len(spec["stages"]) - 1
        previous, stem = stem, out if last else f"{out}.stem{stage['img_resolution']}.pkl"
        dump(G, stem, not last)
        os.remove(previous)
print(json.dumps({"parameters": sum(p.numel() for p in G.parameters()), "z_dim": G.z_dim, "w_dim": G.w_dim,
                  "c_dim": G.c_dim, "num_ws": G.num_ws, "img_resolution": G.img_resolution,
                  "build_seconds": time.time() - started}))
"""

SD_BUILDER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from rehearse_paper import save_stable_diffusion
print(json.dumps(save_stable_diffusion(sys.argv[2], json.loads(sys.argv[3]))))
"""


class RehearsalError(Exception):
    """A one-line reason the rehearsal cannot go on."""


def save_stable_diffusion(folder: str, spec: dict) -> dict:
    """Build a Stable Diffusion pipeline of `spec`'s component configs with random weights and
    save_pretrained it into `folder`; returns parameter counts and build seconds."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import logging as diffusers_logging
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as transformers_logging

    from tiny_diffusion import tiny_tokenizer_vocabulary

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    started = time.time()
    vocab = tiny_tokenizer_vocabulary()
    text = spec["text_encoder"]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=text["max_position_embeddings"])
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**spec["unet"])
    vae = AutoencoderKL(**spec["vae"])
    text_encoder = CLIPTextModel(CLIPTextConfig(
        **text, bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"]))
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=PNDMScheduler(**spec["scheduler"]), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    counts = {name: sum(p.numel() for p in module.parameters())
              for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder))}
    return {"parameters": sum(counts.values()), **{f"{k}_parameters": v for k, v in counts.items()},
            "latent_shape": [spec["unet"]["in_channels"], spec["unet"]["sample_size"], spec["unet"]["sample_size"]],
            "build_seconds": time.time() - started}


# ---- variants --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    name: str  # the -algo value
    clone: str = None  # which clone flag it needs: "nvlabs", "stylegan_xl" or None
    kind: str = "builtin"  # "builtin", "stylegan3", "stylegan-xl", "stable-diffusion"
    sizes: dict = field(default_factory=dict)  # "real", "run", "quick" -> spec
    gen_batch: int = 0  # -gbs of the federated run (0: the library's default)
    describe: str = ""


VARIANTS = {v.name: v for v in (
    Variant("FedKTL", describe="bundled built-in generator (reference)"),
    Variant("FedKTL-stylegan-3", "nvlabs", "stylegan3",
            {"real": STYLEGAN3_REAL, "run": STYLEGAN3_RUN, "quick": STYLEGAN3_QUICK}, 10,
            "NVlabs StyleGAN3-T, unconditional, w 512"),
    Variant("FedKTL-stylegan-xl", "stylegan_xl", "stylegan-xl",
            {"real": STYLEGAN_XL_REAL, "run": STYLEGAN_XL_RUN, "quick": STYLEGAN_XL_QUICK}, 10,
            "StyleGAN-XL ImageNet, class-conditional (c 1000), w 512"),
    Variant("FedKTL-stable-diffusion", None, "stable-diffusion",
            {"real": SD_REAL, "run": SD_RUN, "quick": SD_QUICK}, 10,
            "Stable Diffusion v1.5 layout, latents 4x64x64"),
)}

#: files a clone must hold: NVlabs' packages, the generator's module (and StyleGAN-XL's embeddings)
CLONE_FILES = {
    "nvlabs": ("dnnlib/__init__.py", "torch_utils/persistence.py", "torch_utils/ops/filtered_lrelu.py",
               "training/networks_stylegan3.py"),
    "stylegan_xl": ("dnnlib/__init__.py", "torch_utils/persistence.py", "legacy.py",
                    "training/networks_stylegan3_resetting.py", "in_embeddings/tf_efficientnet_lite0.pkl"),
}
CLONE_NAMES = {"nvlabs": "NVlabs/stylegan3", "stylegan_xl": "autonomousvision/stylegan-xl"}


def check_clone(flag: str, folder) -> str:
    """The clone's absolute path, or a RehearsalError naming what is missing."""
    option = "--" + flag
    if not folder:
        raise RehearsalError(f"{option} is required for the chosen variants: give a clone of {CLONE_NAMES[flag]}")
    if not os.path.isdir(folder):
        raise RehearsalError(f"{option} {folder!r} is not a folder: give a clone of {CLONE_NAMES[flag]}")
    missing = [name for name in CLONE_FILES[flag] if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise RehearsalError(f"{option} {folder!r} lacks {', '.join(missing)}: give a clone of {CLONE_NAMES[flag]}")
    return os.path.abspath(folder)


def check_requirements(variants, clones: dict) -> dict:
    """Clone paths by flag for the chosen variants; one-line errors for anything missing."""
    found = {}
    for variant in variants:
        if variant.clone and variant.clone not in found:
            found[variant.clone] = check_clone(variant.clone, clones.get(variant.clone))
        if variant.kind == "stylegan-xl" and importlib.util.find_spec("dill") is None:
            raise RehearsalError("building StyleGAN-XL needs dill (its in_embeddings pickle was written with it): "
                                 "pip install dill")
        if variant.kind == "stable-diffusion":
            for module in ("diffusers", "transformers"):
                if importlib.util.find_spec(module) is None:
                    raise RehearsalError(f"the Stable Diffusion variant needs {module}: "
                                         f"pip install diffusers transformers")
    return found


def parse_variants(text: str) -> list:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in VARIANTS]
    if unknown or not names:
        shown = ", ".join(unknown) if unknown else repr(text)
        raise RehearsalError(f"unknown --variants {shown}: choose from {', '.join(VARIANTS)}")
    return [VARIANTS[name] for name in names]


# ---- data ------------------------------------------------------------------------------------

def write_rehearsal_dataset(folder: str, train_per_class: int, test_per_class: int) -> None:
    """communication_table's Cifar100-shaped dataset (the real Dirichlet-0.1 partition over 20
    clients, random pixels) keeping `train_per_class` / `test_per_class` images per
    (client, class) instead of its 2 / 1."""
    import communication_table

    keep = communication_table.keep_per_class
    limits = {2: train_per_class, 1: test_per_class}  # write_shaped_dataset's own train / test limits

    def keep_scaled(indices, labels, limit):
        if limit not in limits:
            raise RehearsalError(f"communication_table.write_shaped_dataset now keeps {limit} images per class: "
                                 f"update write_rehearsal_dataset's limits")
        return keep(indices, labels, limits[limit])

    with mock.patch.object(communication_table, "keep_per_class", keep_scaled):
        communication_table.write_shaped_dataset(folder)


def write_probe_dataset(folder: str) -> None:
    """2 clients, 2 classes, 32x32 RGB: FedKTL then generates 2 images a round."""
    import numpy as np

    from utils import htfl_format

    pixels = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 1])
    split = [(pixels.uniform(-1, 1, size=(4, 3, 32, 32)).astype(np.float32), labels) for _ in range(2)]
    htfl_format.write_dataset(folder, split, split, num_classes=2, non_iid=False, balance=True, partition=None,
                              alpha=None, batch_size=10, label_names=["0", "1"])


# ---- running main.py ---------------------------------------------------------------------------

def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


#: main.py lines worth echoing as progress
PROGRESS = re.compile(r"after \d+ round\(s\)|repetition \d+ took|^error|^warning|Traceback")


def run_main(argv: list, log_path: str, label: str) -> None:
    """Run main.py with `argv` in a subprocess, its output going to `log_path`; progress lines
    are echoed. Raises RehearsalError when it fails."""
    with open(log_path, "w") as log:
        process = subprocess.Popen([sys.executable, MAIN, *argv], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
        for line in process.stdout:
            log.write(line)
            if PROGRESS.search(line):
                say(f"  {label}: {line.strip()[:160]}")
        code = process.wait()
    if code != 0:
        with open(log_path) as f:
            tail = [line.strip() for line in f if line.strip()][-1:] or ["(no output)"]
        raise RehearsalError(f"main.py failed for {label} (exit {code}): {tail[0][:300]}")


def build_generator(variant: Variant, size: str, folder: str, clones: dict, log_path: str) -> dict:
    """Build `variant`'s generator at `size` under `folder`; returns {"path", "summary"}
    (summary: parameters, shapes, build seconds, bytes on disk); path None for the bundled one."""
    if variant.kind == "builtin":
        return {"path": None, "summary": {}}
    spec = variant.sizes[size]
    if variant.kind == "stable-diffusion":
        path = os.path.join(folder, f"sd-{size}")
        command = [sys.executable, "-c", SD_BUILDER, SCRIPTS_DIR, path, json.dumps(spec)]
    else:
        path = os.path.join(folder, f"{variant.kind}-{size}.pkl")
        command = [sys.executable, "-c", STYLEGAN_BUILDER, clones[variant.clone], SYSTEM_DIR, variant.kind, path,
                   json.dumps(spec)]
    with open(log_path, "w") as log:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=log, text=True)
    if done.returncode != 0:
        with open(log_path) as f:
            tail = [line.strip() for line in f if line.strip()][-1:] or ["(no output)"]
        raise RehearsalError(f"building the {size}-size generator of {variant.name} failed: {tail[0][:300]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    summary["bytes"] = tree_bytes(path)
    return {"path": path, "summary": summary}


def generator_flags(variant: Variant, path, clones: dict) -> list:
    flags = [] if path is None else ["-GPath", path]
    if variant.clone:
        flags += ["--stylegan_utils", clones[variant.clone]]
    if variant.kind == "stable-diffusion":
        flags += ["--sd_steps", "2"]
    return flags


def paper_flags(suite: dict, rounds: int, threads: int) -> list:
    """run_me.sh paper_suite's common flags (less -t and --out) for one repetition of `rounds`
    rounds on the CPU."""
    flags, kept = suite["common_flags"], []
    index = 0
    while index < len(flags):
        if flags[index] in ("-t", "--out", "-gr"):
            index += 2
            continue
        kept.append(flags[index])
        index += 1
    return [*kept, "-gr", str(rounds), "-dev", "cpu", "--threads", str(threads), "--seed", "0"]


# ---- reading what a run wrote ----------------------------------------------------------------

def tree_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def list_files(folder: str) -> list:
    """[(path relative to folder, bytes)] of every file under `folder`, sorted."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            full = os.path.join(root, name)
            found.append((os.path.relpath(full, folder), os.path.getsize(full)))
    return sorted(found)


def classify(relative: str) -> str:
    if relative.endswith(".h5"):
        return "results_h5"
    if relative.endswith(".config.json"):
        return "config_json"
    if relative.endswith(".png"):
        return "png"
    if "checkpoints" in relative.split(os.sep) and relative.endswith(".pt"):
        return "checkpoint"
    return "other"


def bytes_by_kind(files: list) -> dict:
    kinds = {}
    for relative, size in files:
        entry = kinds.setdefault(classify(relative), {"files": 0, "bytes": 0})
        entry["files"] += 1
        entry["bytes"] += size
    return kinds


def h5_layout(series: dict, rounds: int, file_bytes: int) -> dict:
    """How the results h5 grows: float64 values of series that gain one per round (or per
    evaluation, eval_gap 1; `setup_*` ones are written once), and the fixed rest (metadata,
    config attribute)."""
    import numpy as np

    flat = {}
    for name, values in series.items():
        if isinstance(values, dict):
            flat.update({f"{name}/{sub}": v for sub, v in values.items()})
        else:
            flat[name] = values
    lengths = {name: int(np.size(values)) for name, values in flat.items()}
    growing = [name for name, length in lengths.items() if length >= rounds > 0 and not name.startswith("setup_")]
    values = sum(lengths.values())
    return {"series": len(flat), "growing_series": len(growing), "bytes_per_round": 8 * len(growing),
            "fixed_bytes": file_bytes - 8 * values, "rounds": rounds}


def read_run(out: str, variant_name: str) -> dict:
    """Per-round figures and bytes written by the run of `variant_name` under `out`."""
    from utils.result_utils import read_results, result_name

    name = result_name(DATASET, variant_name, "test", 0)
    series, _ = read_results(os.path.join(out, name + ".h5"))
    rounds = len(series["round_seconds"])
    per_round = []
    checkpoint_seconds = list(series.get("checkpoint_seconds", []))
    for index in range(rounds):
        phases = {phase: float(values[index]) for phase, values in series["phase_seconds"].items()}
        checkpoint = float(checkpoint_seconds[index]) if index < len(checkpoint_seconds) else None
        per_round.append({"phases": phases, "checkpoint_seconds": checkpoint,
                          "round_seconds": float(series["round_seconds"][index]),
                          "peak_host_mib": float(series["peak_host_mib"][index])})
    files = list_files(out)
    h5_bytes = os.path.getsize(os.path.join(out, name + ".h5"))
    return {"rounds": per_round, "files": files, "bytes": bytes_by_kind(files),
            "h5_layout": h5_layout(series, rounds, h5_bytes),
            "test_acc": [float(a) for a in series["rs_test_acc"]]}


def read_probe(out: str, variant_name: str, images: int) -> dict:
    from utils.result_utils import read_results, result_name

    series, _ = read_results(os.path.join(out, result_name(PROBE_DATASET, variant_name, "test", 0) + ".h5"))
    seconds = float(series["phase_seconds"]["generation"][0])
    return {"generation_seconds": seconds, "images": images, "seconds_per_image": seconds / images,
            "peak_host_mib": float(series["peak_host_mib"][0])}


# ---- the disk estimate -----------------------------------------------------------------------

#: images in each paper dataset's pool (PFLlib's layout) and their side in pixels
POOL_IMAGES = {"Cifar10": 60000, "Cifar100": 60000, "Flowers102": 8189, "TinyImagenet": 110000}
IMAGE_SIDE = {"Cifar10": 32, "Cifar100": 32, "Flowers102": 64, "TinyImagenet": 64}


def read_paper_suite(path: str = RUN_ME) -> dict:
    """From run_me.sh's paper_suite: its algorithms, settings (dataset, classes), repetitions (-t),
    common flags, and the most rounds a run can take (-gr, else 2,000 with -ab 1 as main.py)."""
    with open(path) as f:
        text = f.read()
    body = re.search(r"^paper_suite\(\)\s*\{(.*?)^\}", text, re.S | re.M)
    if not body:
        raise RehearsalError(f"{path} has no paper_suite function")
    body = body.group(1)
    common = re.search(r'local common="([^"]*)"', body)
    loop = re.search(r"for algo in ([^;]+);", body)
    settings = re.search(r"local settings=\(([^)]*)\)", body)
    if not (common and loop and settings):
        raise RehearsalError(f"cannot read paper_suite's common flags, algorithms or settings in {path}")
    from cli import DEFAULT_ROUNDS, DEFAULT_ROUNDS_AUTO_BREAK, str2bool

    flags = common.group(1).split()
    value = {flag: flags[index + 1] for index, flag in enumerate(flags[:-1]) if flag.startswith("-")}
    auto_break = "-ab" in value and str2bool(value["-ab"])
    rounds = int(value["-gr"]) if "-gr" in value else DEFAULT_ROUNDS_AUTO_BREAK if auto_break else DEFAULT_ROUNDS
    pairs = [item.split(":") for item in settings.group(1).split()]
    return {"algorithms": loop.group(1).split(), "settings": [(name, int(classes)) for name, classes in pairs],
            "repetitions": int(value.get("-t", 1)), "auto_break": auto_break, "max_rounds": rounds,
            "common_flags": flags}


def image_grids_per_run(rounds: int) -> int:
    """PNG grids a run of `rounds` rounds saves with the default --save_generated_every."""
    from flcore.generators.images import image_round_due

    return sum(image_round_due(r, None, rounds) for r in range(rounds))


def disk_row(item: str, size: float, basis: str, how: str, optional: bool = False) -> dict:
    return {"item": item, "bytes": size, "basis": basis, "how": how, "optional": optional}


def estimate_paper_disk(suite: dict, measured: dict, grids: int = None) -> list:
    """Disk for `bash run_me.sh paper`, as rows {item, bytes, basis, how, optional}. `measured`:
    h5_fixed_bytes, h5_bytes_per_round, config_bytes, finished_bytes (a default run's
    checkpoints/finished.json), png_bytes_per_pixel (a grid's bytes / (images x pixels)),
    checkpoint_bytes, dataset_bytes_per_value (npz bytes / stored float32 values), and
    optionally generator_bytes ({name: bytes} of weights the suite loads)."""
    runs_per_algorithm = len(suite["settings"]) * suite["repetitions"]
    runs = len(suite["algorithms"]) * runs_per_algorithm
    rounds = suite["max_rounds"]
    grids = image_grids_per_run(rounds) if grids is None else grids
    ktl_algorithms = sum(1 for algorithm in suite["algorithms"] if algorithm.startswith("FedKTL"))
    pixels_per_repetition = sum(classes * IMAGE_SIDE[dataset_of(name)] ** 2 for name, classes in suite["settings"])
    grid_bytes = measured["png_bytes_per_pixel"] * pixels_per_repetition * suite["repetitions"] * grids
    h5_run = measured["h5_fixed_bytes"] + measured["h5_bytes_per_round"] * rounds
    checkpoint = measured["checkpoint_bytes"]
    rows = [
        disk_row(f"results h5, {runs} runs x {rounds} rounds", runs * h5_run, "extrapolated",
                 f"{measured['h5_fixed_bytes']:,} B fixed + {measured['h5_bytes_per_round']} B/round (measured layout)"),
        disk_row(f"config json, {runs} runs", runs * measured["config_bytes"], "measured",
                 f"{measured['config_bytes']:,} B each"),
        disk_row(f"checkpoints/finished.json, {runs} runs", runs * measured["finished_bytes"], "measured",
                 "a finished run removes its checkpoints and keeps this mark"),
        disk_row(f"image grids, {ktl_algorithms * runs_per_algorithm} FedKTL runs x {grids} grids",
                 ktl_algorithms * grid_bytes, "extrapolated",
                 f"{measured['png_bytes_per_pixel']:.3f} B per image pixel (measured: 100 classes, 32 px) "
                 f"x classes x side^2"),
        disk_row(f"datasets, {len(suite['settings'])} folders (float32 npz)",
                 dataset_bytes(suite, measured["dataset_bytes_per_value"]), "extrapolated",
                 f"{measured['dataset_bytes_per_value']:.2f} B per stored value (measured on random pixels: an "
                 f"upper bound) x pool images x 3 x side^2"),
    ]
    for name, size in (measured.get("generator_bytes") or {}).items():
        rows.append(disk_row(f"generator weights: {name}", size, "measured",
                             "G_ema only; a downloaded pickle also holds G and D"))
    rows.append(disk_row("while running: checkpoints of the current run", 2 * checkpoint, "measured",
                         f"--ckpt_keep 1 plus the one being written ({int(checkpoint):,} B each, Cifar100); "
                         f"removed when the run finishes"))
    rows.append(disk_row(f"with --ckpt_keep_final (not the default): {runs} checkpoints", runs * checkpoint,
                         "extrapolated", "the FedKTL HtFE8 Cifar100 checkpoint taken for every run", optional=True))
    return rows


def dataset_of(setting: str) -> str:
    return setting.split("-")[0]


def dataset_bytes(suite: dict, bytes_per_value: float) -> float:
    return sum(bytes_per_value * POOL_IMAGES[dataset_of(name)] * 3 * IMAGE_SIDE[dataset_of(name)] ** 2
               for name, _ in suite["settings"])


def disk_totals(rows: list) -> dict:
    kept = sum(row["bytes"] for row in rows if not row["optional"] and not row["item"].startswith("while"))
    peak = kept + sum(row["bytes"] for row in rows if row["item"].startswith("while"))
    return {"after_the_suite": kept, "peak_while_running": peak}


# ---- printing --------------------------------------------------------------------------------

def human(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{int(size)} B"


def variant_table(name: str, result: dict) -> str:
    rounds = result["rounds"]
    header = f"{'':<26}" + "".join(f"{f'round {i}':>12}" for i in range(len(rounds)))
    lines = [f"== {name}: {result['generator_line']}", header]
    phases = [p for p in PHASES if any(p in r["phases"] for r in rounds)]
    phases += sorted({p for r in rounds for p in r["phases"]} - set(phases))
    for phase in phases:
        lines.append(f"{phase + ' s':<26}" + "".join(f"{r['phases'].get(phase, 0.0):>12.1f}" for r in rounds))
    lines.append(f"{'checkpoint s':<26}" + "".join(
        f"{r['checkpoint_seconds']:>12.1f}" if r["checkpoint_seconds"] is not None else f"{'-':>12}" for r in rounds))
    lines.append(f"{'total round s':<26}" + "".join(f"{r['round_seconds']:>12.1f}" for r in rounds))
    lines.append(f"{'peak host MiB':<26}" + "".join(f"{r['peak_host_mib']:>12.0f}" for r in rounds))
    lines.append("(a round's seconds hold its phases; the checkpoint written after it comes on top)")
    for kind, entry in sorted(result["bytes"].items()):
        lines.append(f"{'bytes ' + kind:<26}{entry['bytes']:>12,} ({entry['files']} file(s))")
    return "\n".join(lines)


def probe_table(probes: dict) -> str:
    lines = ["== real-size generators (built here; probe: main.py, 2 classes, 2 clients, 1 round, -gbs 1)",
             f"{'variant':<26}{'parameters':>13}{'weights':>11}{'build s':>9}{'s/image':>9}{'peak MiB':>10}"
             f"{'100 classes s':>15}"]
    for name, probe in probes.items():
        s = probe["summary"]
        per_image = probe.get("seconds_per_image")
        cells = (f"{per_image:>9.1f}{probe['peak_host_mib']:>10.0f}{100 * per_image:>15.0f}" if per_image is not None
                 else f"{'-':>9}{'-':>10}{'-':>15}")
        lines.append(f"{name:<26}{s['parameters']:>13,}{human(s['bytes']):>11}{s['build_seconds']:>9.0f}" + cells)
    lines.append("(100 classes s: one round's generation at real size, extrapolated linearly from the probe)")
    return "\n".join(lines)


def disk_table(rows: list, totals: dict) -> str:
    lines = ["== disk for `bash run_me.sh paper` (runs up to 2,000 rounds)"]
    for row in rows:
        lines.append(f"{row['item']:<58}{human(row['bytes']):>11}  {row['basis']}: {row['how']}")
    lines.append(f"{'total left after the suite':<58}{human(totals['after_the_suite']):>11}")
    lines.append(f"{'peak while it runs':<58}{human(totals['peak_while_running']):>11}")
    return "\n".join(lines)


def describe_generator(variant: Variant, size: str, summary: dict) -> str:
    if variant.kind == "builtin":
        return variant.describe
    spec = variant.sizes[size]
    if variant.kind == "stylegan3":
        detail = f"{spec['img_resolution']} px, channel_base {spec['channel_base']}, channel_max {spec['channel_max']}"
    elif variant.kind == "stylegan-xl":
        detail = (f"{summary.get('img_resolution')} px, stem 16 px + {len(spec['stages'])} stage(s), channel_base "
                  f"{spec['stem']['channel_base']}, channel_max {spec['stem']['channel_max']}")
    else:
        detail = (f"UNet {tuple(spec['unet']['block_out_channels'])}, VAE {tuple(spec['vae']['block_out_channels'])}, "
                  f"{summary.get('latent_shape')} latents, 2 steps")
    return f"{variant.describe}; {size}-size: {detail}; {summary['parameters']:,} parameters, {human(summary['bytes'])}"


# ---- the rehearsal ---------------------------------------------------------------------------

def measured_for_estimate(results: dict, default_run: dict, data_folder: str, probes: dict) -> dict:
    """The figures estimate_paper_disk needs, from the runs (the paper's variant,
    FedKTL-stylegan-xl, when it ran; else the first variant)."""
    source = results.get("FedKTL-stylegan-xl") or next(iter(results.values()))
    layout = (default_run or source)["h5_layout"]
    png = source["bytes"].get("png", {"files": 0, "bytes": 0})
    checkpoint = source["bytes"].get("checkpoint", {"files": 1, "bytes": 0})
    files = dict(default_run["files"]) if default_run else {}
    finished = next((size for path, size in files.items() if path.endswith("finished.json")), 0)
    config = next((size for path, size in source["files"] if path.endswith(".config.json")), 0)
    from utils import htfl_format  # reads data files without unpickling them

    values = 0
    for split in htfl_format.SPLITS:
        split_dir = os.path.join(data_folder, split)
        for name in os.listdir(split_dir) if os.path.isdir(split_dir) else []:
            if name.endswith(".npz"):
                x, _ = htfl_format.read_client_split(data_folder, split, int(name[:-len(".npz")]))
                values += x.size
    return {"h5_fixed_bytes": layout["fixed_bytes"], "h5_bytes_per_round": layout["bytes_per_round"],
            "config_bytes": config, "finished_bytes": finished,
            "png_bytes_per_pixel": png["bytes"] / max(1, png["files"]) / (100 * 32 * 32),
            "checkpoint_bytes": checkpoint["bytes"] / max(1, checkpoint["files"]),
            "dataset_bytes_per_value": tree_bytes(data_folder) / max(1, values),
            "generator_bytes": {name: probe["summary"]["bytes"] for name, probe in probes.items()
                                if name == "FedKTL-stylegan-xl"},
            "source": "FedKTL-stylegan-xl" if "FedKTL-stylegan-xl" in results else next(iter(results))}


def run_variant(variant: Variant, size: str, work: str, clones: dict, suite: dict, rounds: int,
                threads: int) -> dict:
    logs = os.path.join(work, "logs")
    say(f"{variant.name}: building its {size}-size generator" if variant.kind != "builtin"
        else f"{variant.name}: bundled generator")
    built = build_generator(variant, size, os.path.join(work, "generators"), clones,
                            os.path.join(logs, f"build-{variant.name}-{size}.log"))
    out = os.path.join(work, "runs", variant.name)
    argv = ["-algo", variant.name, "-data", DATASET, "--data_root", os.path.join(work, "data"), "-nb", "100",
            *paper_flags(suite, rounds, threads), "--out", out, "--ckpt_every", "1", "--ckpt_keep_final",
            *generator_flags(variant, built["path"], clones)]
    if variant.gen_batch:
        argv += ["-gbs", str(variant.gen_batch)]
    say(f"{variant.name}: {rounds} round(s) of main.py (HtFE8, 20 clients, 100 classes, a checkpoint every round)")
    run_main(argv, os.path.join(logs, f"run-{variant.name}.log"), variant.name)
    result = read_run(out, variant.name)
    result["generator"] = built["summary"]
    result["generator_line"] = describe_generator(variant, size, built["summary"])
    result["argv"] = argv
    shutil.rmtree(out)  # checkpoints are GBs; their sizes are in `result`
    if built["path"]:
        remove(built["path"])
    return result


def run_default_flags(variant: Variant, work: str, suite: dict, threads: int) -> dict:
    out = os.path.join(work, "runs", "default-flags")
    argv = ["-algo", variant.name, "-data", DATASET, "--data_root", os.path.join(work, "data"), "-nb", "100",
            *paper_flags(suite, 1, threads), "--out", out]
    say(f"{variant.name}: 1 round with default output flags (what a finished run leaves behind)")
    run_main(argv, os.path.join(work, "logs", "run-default-flags.log"), "default flags")
    result = read_run(out, variant.name)
    shutil.rmtree(out)
    return result


def probe_real_size(variant: Variant, work: str, clones: dict, threads: int, size: str = "real") -> dict:
    """Build `variant`'s generator at `size` and time it generating 2 images in main.py."""
    logs = os.path.join(work, "logs")
    say(f"{variant.name}: building its {size}-size generator")
    built = build_generator(variant, size, os.path.join(work, "generators"), clones,
                            os.path.join(logs, f"build-{variant.name}-{size}.log"))
    out = os.path.join(work, "runs", f"probe-{variant.name}")
    argv = ["-algo", variant.name, "-data", PROBE_DATASET, "--data_root", os.path.join(work, "data"), "-nb", "2",
            "-nc", "2", "-m", "FedAvgCNN", "-fd", "512", "-gr", "1", "-gbs", "1", "-dev", "cpu", "--threads",
            str(threads), "--save_generated_every", "0", "--ckpt_every", "0", "--out", out,
            *generator_flags(variant, built["path"], clones)]
    say(f"{variant.name}: probing the {size}-size generator (2 images)")
    try:
        run_main(argv, os.path.join(logs, f"probe-{variant.name}.log"), f"{variant.name} probe")
        probe = read_probe(out, variant.name, images=2)
    finally:
        remove(built["path"])
        shutil.rmtree(out, ignore_errors=True)
    return {"summary": built["summary"], **probe}


def remove(path: str) -> None:
    if os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.exists(path):
        os.remove(path)


def rehearse(args, variants: list, clones: dict, work: str) -> dict:
    for folder in ("logs", "generators", "runs", "data"):
        os.makedirs(os.path.join(work, folder), exist_ok=True)
    size = "quick" if args.quick else "run"
    suite = read_paper_suite()
    say(f"writing the Cifar100-shaped dataset ({args.train_per_class} train + {args.test_per_class} test "
        f"image(s) per client and class)")
    write_rehearsal_dataset(os.path.join(work, "data", DATASET), args.train_per_class, args.test_per_class)
    write_probe_dataset(os.path.join(work, "data", PROBE_DATASET))
    results = {}
    for variant in variants:
        results[variant.name] = run_variant(variant, size, work, clones, suite, args.rounds, args.threads)
        print(variant_table(variant.name, results[variant.name]), flush=True)
    default_run = run_default_flags(variants[0], work, suite, args.threads) if args.default_run else None
    if default_run:
        print("== files a default-flag run leaves behind (" + variants[0].name + ", 1 round)")
        for relative, size_bytes in default_run["files"]:
            print(f"  {relative:<60}{size_bytes:>14,}")
    probes = {}
    if args.probe_real:
        for variant in variants:
            if variant.kind != "builtin":
                probes[variant.name] = probe_real_size(variant, work, clones, args.threads)
        if probes:
            print(probe_table(probes), flush=True)
    measured = measured_for_estimate(results, default_run, os.path.join(work, "data", DATASET), probes)
    rows = estimate_paper_disk(suite, measured)
    totals = disk_totals(rows)
    print(f"(per-run figures from the {measured['source']} run; {len(suite['algorithms'])} algorithms x "
          f"{len(suite['settings'])} settings x {suite['repetitions']} repetitions read from run_me.sh)")
    print(disk_table(rows, totals), flush=True)
    return {"settings": {"rounds": args.rounds, "train_per_class": args.train_per_class,
                         "test_per_class": args.test_per_class, "threads": args.threads, "quick": args.quick,
                         "generator_size": size},
            "variants": results, "default_run": default_run, "real_size_probes": probes,
            "paper_suite": suite, "measured_for_estimate": measured, "disk_estimate": rows, "disk_totals": totals}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nvlabs", help="a clone of NVlabs/stylegan3 (for FedKTL-stylegan-3)")
    parser.add_argument("--stylegan_xl", help="a clone of autonomousvision/stylegan-xl (for FedKTL-stylegan-xl)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated (default {','.join(VARIANTS)})")
    parser.add_argument("--quick", action="store_true",
                        help="a fast check: 1 round, 1 + 1 images per client and class, small generators, no "
                             "real-size probes")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per variant (default 2; --quick 1)")
    parser.add_argument("--train_per_class", type=int, default=None,
                        help="training images kept per (client, class) (default 2; --quick 1)")
    parser.add_argument("--test_per_class", type=int, default=1, help="test images per (client, class) (default 1)")
    parser.add_argument("--probe_real", type=int, choices=(0, 1), default=None,
                        help="build real-size generators and time them (default 1; --quick 0)")
    parser.add_argument("--default_run", type=int, choices=(0, 1), default=1,
                        help="also run the first variant once with default output flags (default 1)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads of each run")
    parser.add_argument("--json", help="also write the measurements as JSON here")
    parser.add_argument("--workdir", default=None, help="parent of the temporary folder (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, dataset)")
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 2)
    args.train_per_class = args.train_per_class or (1 if args.quick else 2)
    args.probe_real = bool((0 if args.quick else 1) if args.probe_real is None else args.probe_real)
    for name in ("rounds", "train_per_class", "test_per_class", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main_cli(argv=None) -> int:
    args = parse_args(argv)
    try:
        variants = parse_variants(args.variants)
        clones = check_requirements(variants, {"nvlabs": args.nvlabs, "stylegan_xl": args.stylegan_xl})
    except RehearsalError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    work = tempfile.mkdtemp(prefix="rehearse_paper_", dir=args.workdir)
    started = time.time()
    say(f"working in {work}")
    try:
        report = rehearse(args, variants, clones, work)
    except RehearsalError as error:
        print(f"error: {error} (logs in {os.path.join(work, 'logs')})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"kept {work}")
    report["wall_seconds"] = time.time() - started
    say(f"done in {report['wall_seconds'] / 60:.1f} min")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main_cli())
