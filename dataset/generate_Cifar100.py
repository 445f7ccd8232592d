"""CIFAR-100 pooled (train + test) and partitioned over clients, PFLlib style.

    python dataset/generate_Cifar100.py noniid - dir --root DIR [--download] [--num_clients 20] ...
"""
import os
import sys

if not __package__:  # run as a script: make `import dataset.…` resolve
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset import generate_common  # noqa: E402


def main(argv=None) -> int:
    return generate_common.run_torchvision(argv, "Cifar100", "CIFAR100", "CIFAR-100")


if __name__ == "__main__":
    sys.exit(main())
