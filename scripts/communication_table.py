#!/usr/bin/env python
"""Per-round traffic in million floats, measured by running the library on data shaped as
the FedKTL paper's communication table (Cifar100: 100 classes, 32x32, 600 images per class;
Dirichlet 0.1 over 20 clients; HtFE8): FedKTL for each generator's latent size, and the
baselines.

    python scripts/communication_table.py                       # everything, ~15 min on 2 CPU cores
    python scripts/communication_table.py --algorithms FedKTL    # FedKTL's generators only

Traffic depends only on shapes: which classes each client holds (prototypes up), the
number of classes, the clients' image size and the latent width (images and latents
down). So the run uses the real partition of 60,000 labels but keeps two training and
one test image per (client, class), random pixels, and small stand-in generators with
the real latent widths: w_dim 512 (StyleGAN-XL ImageNet, StyleGAN3) and 4x64x64 (Stable
Diffusion v1.5). Round 1 is reported: round 0 has no generated images to send yet.
"""
import argparse
import os
import sys
import tempfile

import numpy as np
import torch

SCRIPTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(SCRIPTS_DIR)
SYSTEM_DIR = os.path.join(REPO_ROOT, "system")
for path in (SCRIPTS_DIR, SYSTEM_DIR, REPO_ROOT):
    if path not in sys.path:
        sys.path.insert(0, path)

from benchmark_round import run_and_read_series  # noqa: E402
from dataset import partition  # noqa: E402
from dataset.generate_common import default_least_samples  # noqa: E402
from utils import htfl_format  # noqa: E402

#: the paper's figures (million floats up / down per round)
PAPER = {"FedKTL, StyleGAN-XL or StyleGAN3 (w 512)": (0.09, 7.17), "FedProto": (0.46, 1.02),
         "FD": (0.09, 0.20), "LG-FedAvg": (1.03, 1.03), "FedGH": (0.46, 1.03), "FedGen": (1.03, 7.66),
         "FML": (18.50, 18.50), "FedKD": (16.52, 16.52)}
BASELINES = ("FedProto", "FD", "LG-FedAvg", "FedGH", "FedGen", "FML", "FedKD", "FedTGP")
NUM_CLASSES, PER_CLASS, NUM_CLIENTS, IMAGE_SHAPE = 100, 600, 20, (3, 32, 32)


def keep_per_class(indices: np.ndarray, labels: np.ndarray, limit: int) -> np.ndarray:
    kept = [indices[labels[indices] == c][:limit] for c in np.unique(labels[indices])]
    return np.sort(np.concatenate(kept)) if kept else indices[:0]


def write_shaped_dataset(folder: str, seed: int = 1) -> None:
    """Cifar100's label layout partitioned as generate_Cifar100.py does, thinned to a few images."""
    labels = np.repeat(np.arange(NUM_CLASSES), PER_CLASS)
    partition_rng, split_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    parts = partition.partition_indices(labels, NUM_CLIENTS, partition_rng, niid=True, balance=False,
                                        partition="dir", alpha=0.1, class_per_client=10,
                                        least_samples=default_least_samples(len(labels), NUM_CLIENTS))
    pixels = np.random.default_rng(seed)
    train, test = [], []
    for indices in parts:
        train_idx, test_idx = partition.split_train_test(indices, split_rng)
        for split, idx, limit in ((train, train_idx, 2), (test, test_idx, 1)):
            idx = keep_per_class(idx, labels, limit)
            x = pixels.uniform(-1, 1, size=(len(idx), *IMAGE_SHAPE)).astype(np.float32)
            split.append((x, labels[idx]))
    htfl_format.write_dataset(folder, train, test, num_classes=NUM_CLASSES, non_iid=True, balance=False,
                              partition="dir", alpha=0.1, batch_size=10,
                              label_names=[str(c) for c in range(NUM_CLASSES)])


def measure(argv: list, out: str) -> tuple:
    series = run_and_read_series(argv + ["--out", out])
    return (int(series["floats_up"][1]), int(series["floats_down"][1]), int(series["setup_floats_down"][0]))


def main_cli(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model_family", default="HtFE8")
    parser.add_argument("--algorithms", default="FedKTL," + ",".join(BASELINES),
                        help="comma-separated; FedKTL stands for its two latent sizes")
    known = parser.parse_args(argv)
    from flcore.generators.builtin import BuiltinGenerator, save_builtin_generator
    from tiny_diffusion import save_tiny_stable_diffusion

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_shaped_dataset(os.path.join(tmp, "Cifar100Shaped"))
        w512 = os.path.join(tmp, "w512.pt")
        save_builtin_generator(BuiltinGenerator(z_dim=512, w_dim=512), w512)
        sd = save_tiny_stable_diffusion(os.path.join(tmp, "sd"), latent_size=64)
        common = ["-data", "Cifar100Shaped", "--data_root", tmp, "-nb", "100", "-nc", "20", "-m",
                  known.model_family, "-gr", "2", "-se", "1", "-eg", "10", "--save_generated_every", "0",
                  "-dev", "cpu"]
        runs = {}
        for algorithm in known.algorithms.split(","):
            if algorithm == "FedKTL":
                runs["FedKTL, StyleGAN-XL or StyleGAN3 (w 512)"] = ["-algo", "FedKTL", "-GPath", w512]
                runs["FedKTL, Stable Diffusion v1.5 (4x64x64)"] = [
                    "-algo", "FedKTL-stable-diffusion", "-GPath", sd, "--sd_steps", "1", "-gbs", "10"]
            else:
                runs[algorithm] = ["-algo", algorithm]
        for index, (label, flags) in enumerate(runs.items()):
            rows[label] = measure(common + flags, os.path.join(tmp, f"run{index}"))
    print(f"\nper-round traffic, million floats, all {NUM_CLIENTS} clients ({known.model_family}, "
          f"{NUM_CLASSES} classes, Dirichlet 0.1)")
    print("| method | upload | download | paper upload | paper download | one-time setup download |")
    print("|---|---|---|---|---|---|")
    for label, (up, down, setup) in rows.items():
        paper_up, paper_down = PAPER.get(label, ("-", "-"))
        print(f"| {label} | {up / 1e6:.2f} ({up:,}) | {down / 1e6:.2f} ({down:,}) | {paper_up} | {paper_down} "
              f"| {setup / 1e6:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main_cli())
