"""CIFAR-10 pooled (train + test) and partitioned over clients, PFLlib style.

    python dataset/generate_Cifar10.py noniid - dir --root DIR [--download] [--num_clients 20] ...
"""
import os
import sys

if not __package__:  # run as a script: make `import dataset.…` resolve
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dataset import generate_common  # noqa: E402


def main(argv=None) -> int:
    return generate_common.run_torchvision(argv, "Cifar10", "CIFAR10", "CIFAR-10")


if __name__ == "__main__":
    sys.exit(main())
