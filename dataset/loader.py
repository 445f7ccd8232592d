"""The system's dataset loader, with MNIST5k generated on first use.

`utils.data_utils` reads dataset folders but imports no generator (utilities sit below
the generators), so the one dataset small and download-free enough to build on demand
is bound to it here. The entry point (`system/main.py`) loads through this.
"""
from dataset import generate_MNIST5k
from utils import data_utils
from utils.data_utils import DEFAULT_DATA_ROOT, FederatedData


def load_federated_dataset(name: str, num_clients: int, num_classes=None,
                           data_root: str = DEFAULT_DATA_ROOT) -> FederatedData:
    """`utils.data_utils.load_federated_dataset`, generating MNIST5k (default settings,
    `generate_MNIST5k.generate`) when it is absent."""
    return data_utils.load_federated_dataset(name, num_clients, num_classes, data_root,
                                             generate=generate_MNIST5k.generate)
