"""Small things several tests build: a tiny federated dataset and a tiny generator file."""
import os

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from dataset.generate_common import build_dataset


def make_tiny_dataset(data_root: str, name: str = "Tiny", num_clients: int = 4, size: int = 16,
                      partition: str = "dir", seed: int = 0) -> str:
    """sklearn's 8x8 digits, upsampled to size x size, 3 channels, in [-1, 1], on disk."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x.repeat(1, 3, 1, 1) - 0.5) / 0.5
    folder = os.path.join(data_root, name)
    build_dataset(folder, x.numpy().astype(np.float32), digits.target.astype(np.int64),
                  [str(i) for i in range(10)], num_clients=num_clients, niid=True, balance=False,
                  partition_name=partition, alpha=0.5, class_per_client=2, seed=seed)
    return folder


def make_tiny_generator(path: str, seed: int = 0) -> str:
    from flcore.generators.builtin import BuiltinGenerator, save_builtin_generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        save_builtin_generator(BuiltinGenerator(), path)
    return path
