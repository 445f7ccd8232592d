"""CIFAR-100 pooled (train + test) and partitioned over clients, PFLlib style.

    python dataset/generate_Cifar100.py noniid - dir --root DIR [--download] [--num_clients 20] ...
"""
import os
import sys

if not __package__:  # run as a script: make `import dataset.…` resolve
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset import generate_common  # noqa: E402

NAME = "Cifar100"


def load_pool(root, download: bool) -> tuple:
    """(x float32 [60000, 3, 32, 32] in [-1, 1], y int64, torchvision's class names)."""
    from torchvision.datasets import CIFAR100
    return generate_common.load_torchvision_pool(CIFAR100, "CIFAR-100", root, download)


def main(argv=None) -> int:
    return generate_common.run(
        sys.argv[1:] if argv is None else argv, NAME,
        default_out=os.path.join(generate_common.repo_dataset_dir(), NAME),
        load_pool=lambda args: load_pool(args.root, args.download),
        add_source_arguments=generate_common.add_torchvision_arguments)


if __name__ == "__main__":
    sys.exit(main())
