"""Load a PFLlib-format dataset folder once, as decoded CPU tensors per client.

Every later step (batching, augmentation, moving to the GPU) works from these
in-memory tensors, so no npz is read or decoded twice in a run.
"""
import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from utils import htfl_format
from utils.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA_ROOT = os.path.join(REPO_ROOT, "dataset")
# The one dataset small enough (and download-free) to build on first use.
AUTO_GENERATED = "MNIST5k"


@dataclass(frozen=True)
class ClientData:
    train_x: torch.Tensor  # float32 [n_train, C, H, W]
    train_y: torch.Tensor  # int64 [n_train]
    test_x: torch.Tensor   # float32 [n_test, C, H, W]
    test_y: torch.Tensor   # int64 [n_test]

    @property
    def num_train(self) -> int:
        return len(self.train_y)

    @property
    def num_test(self) -> int:
        return len(self.test_y)


@dataclass(frozen=True)
class FederatedData:
    name: str
    folder: str
    num_classes: int
    image_shape: tuple  # (C, H, W)
    label_names: tuple
    clients: tuple      # ClientData per client, index = client id

    @property
    def num_clients(self) -> int:
        return len(self.clients)


def load_federated_dataset(name: str, num_clients: int, num_classes: Optional[int] = None,
                           data_root: str = DEFAULT_DATA_ROOT,
                           generate: Optional[Callable[[str], object]] = None) -> FederatedData:
    """Clients 0..num_clients-1 of `<data_root>/<name>`, checked against the flags.

    MNIST5k is generated (default settings) if absent by `generate(folder)`, which the
    caller supplies since utilities import no generator (`dataset.loader` binds
    `dataset.generate_MNIST5k.generate`); any other missing, mismatched or damaged
    dataset raises a one-line `UserError` that says how to fix it.
    """
    _check_name(name)
    if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
        raise UserError(f"-nc must be a positive integer, got {num_clients!r}")
    folder = os.path.join(data_root, name)
    if not os.path.isfile(os.path.join(folder, htfl_format.CONFIG_FILE)):
        _make_or_explain_missing(name, folder, data_root, generate)

    try:
        config = htfl_format.read_config(folder)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot use dataset '{name}': {_one_line(exc)}; "
                        f"{_regenerate_hint(name, folder)}") from exc
    if num_clients > config.num_clients:
        raise UserError(f"-nc {num_clients} asks for more clients than dataset '{name}' "
                        f"has ({config.num_clients}): pass -nc {config.num_clients} or "
                        f"fewer, or regenerate the dataset with --num_clients {num_clients}")
    if num_classes is not None and num_classes != config.num_classes:
        raise UserError(f"-nb {num_classes} does not match dataset '{name}', which has "
                        f"{config.num_classes} classes: drop -nb or pass -nb {config.num_classes}")

    clients = tuple(_load_client(name, folder, config, client_id)
                    for client_id in range(num_clients))
    image_shape = config.image_shape or tuple(clients[0].train_x.shape[1:])
    for client_id, client in enumerate(clients):
        for split, x in (("train", client.train_x), ("test", client.test_x)):
            if tuple(x.shape[1:]) != tuple(image_shape):
                raise UserError(f"{htfl_format.client_file(folder, split, client_id)} holds images "
                                f"of shape {tuple(x.shape[1:])}, expected {tuple(image_shape)}; "
                                f"{_regenerate_hint(name, folder)}")
    label_names = config.label_names or [str(label) for label in range(config.num_classes)]
    return FederatedData(name=name, folder=folder, num_classes=config.num_classes,
                         image_shape=tuple(image_shape), label_names=tuple(label_names),
                         clients=clients)


def check_training_sizes(data: FederatedData, batch_size: int, stored_order: bool) -> list:
    """Warning lines for clients whose training set is smaller than one batch of `batch_size`.

    Such a client trains on one batch of its whole set each epoch, except with
    `stored_order` (the original loader drops partial batches: it never trains) and when it
    holds a single sample (training-mode BatchNorm cannot normalise a batch of one). Raises
    a one-line `UserError` when no client can train at all.
    """
    sizes = [client.num_train for client in data.clients]
    largest = max(sizes)
    if largest == 0:
        raise UserError(f"no client of dataset '{data.name}' has training samples: "
                        f"{_regenerate_hint(data.name, data.folder)}")
    smallest_trained = batch_size if stored_order else min(batch_size, 2)
    if largest < smallest_trained:
        if stored_order:
            other = " or drop --stored_order" if largest >= 2 else ""
            raise UserError(f"-lbs {batch_size} is larger than every client's training set (largest "
                            f"{largest}) and --stored_order trains on full batches only: pass -lbs "
                            f"{largest} or less{other}")
        raise UserError(f"every client of dataset '{data.name}' has at most one training sample, too "
                        f"few for a training batch: {_regenerate_hint(data.name, data.folder)}")

    warnings = []
    empty = [cid for cid, n in enumerate(sizes) if n == 0]
    if empty:
        who, has, they_do = _clients_phrase(empty)
        warnings.append(f"warning: {who} {has} no training samples: {they_do} not train")
    small = [cid for cid, n in enumerate(sizes) if 0 < n < batch_size]
    partial = small if stored_order else [cid for cid in small if sizes[cid] >= 2]
    single = [] if stored_order else [cid for cid in small if sizes[cid] == 1]
    if partial:
        who, has, they_do = _clients_phrase(partial)
        if stored_order:
            what = f"{they_do} not train (the original loader drops partial batches; --stored_order)"
        else:
            what = f"{'it' if len(partial) == 1 else 'each'} trains on one batch of all its samples per epoch"
        warnings.append(f"warning: {who} {has} fewer training samples than -lbs {batch_size} "
                        f"({_listed([sizes[cid] for cid in partial])}): {what}")
    if single:
        who, has, they_do = _clients_phrase(single)
        warnings.append(f"warning: {who} {has} a single training sample: {they_do} not train "
                        f"(training-mode BatchNorm cannot normalise a batch of one)")
    return warnings


def _listed(values: list, limit: int = 10) -> str:
    """"a, b, c", or the first `limit` of them and "and N more"."""
    shown = ", ".join(str(value) for value in values[:limit])
    return shown if len(values) <= limit else f"{shown} and {len(values) - limit} more"


def _clients_phrase(ids: list) -> tuple:
    """("client 3", "has", "it does") or ("clients 3, 7", "have", "they do")."""
    if len(ids) == 1:
        return f"client {ids[0]}", "has", "it does"
    return f"clients {_listed(ids)}", "have", "they do"


def available_datasets(data_root: str) -> list:
    """Sub-folders of `data_root` that hold a config.json, sorted."""
    if not os.path.isdir(data_root):
        return []
    return sorted(entry for entry in os.listdir(data_root)
                  if os.path.isfile(os.path.join(data_root, entry, htfl_format.CONFIG_FILE)))


def _load_client(name: str, folder: str, config, client_id: int) -> ClientData:
    tensors = []
    for split in htfl_format.SPLITS:
        try:
            x, y = htfl_format.read_client_split(folder, split, client_id)
        except (OSError, ValueError) as exc:
            raise UserError(f"{_one_line(exc)}; {_regenerate_hint(name, folder)}") from exc
        if len(y) and y.max() >= config.num_classes:
            raise UserError(f"{htfl_format.client_file(folder, split, client_id)} has label "
                            f"{int(y.max())} but config.json says {config.num_classes} classes; "
                            f"{_regenerate_hint(name, folder)}")
        tensors += [_to_tensor(x), _to_tensor(y)]
    return ClientData(*tensors)


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    # torch.from_numpy shares memory and refuses read-only arrays, so copy only those.
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


def _make_or_explain_missing(name: str, folder: str, data_root: str, generate) -> None:
    """Generate MNIST5k (with `generate`, when given), or raise the UserError that says how
    to get the dataset."""
    if name == AUTO_GENERATED and generate is not None:
        print(f"dataset '{name}' not found at {folder}: generating it "
              f"(20 clients, Dirichlet alpha=0.1, seed 1)")
        try:
            generate(folder)
        except (ImportError, OSError, ValueError) as exc:
            raise UserError(f"could not generate '{name}' at {folder}: {_one_line(exc)}") from exc
        return
    if os.path.isdir(folder):
        raise UserError(f"dataset folder {folder} has no {htfl_format.CONFIG_FILE} (its generation "
                        f"did not finish); {_regenerate_hint(name, folder)}")
    if _generator_script(name):
        raise UserError(f"dataset '{name}' not found at {folder}: generate it with "
                        f"`python dataset/generate_{name}.py noniid - dir`")
    found = available_datasets(data_root)
    raise UserError(f"dataset '{name}' not found at {folder} and there is no "
                    f"dataset/generate_{name}.py: available datasets in {data_root}: "
                    f"{', '.join(found) if found else 'none'}")


def _generator_script(name: str) -> Optional[str]:
    path = os.path.join(REPO_ROOT, "dataset", f"generate_{name}.py")
    return path if os.path.isfile(path) else None


def _regenerate_hint(name: str, folder: str) -> str:
    if name == AUTO_GENERATED:
        return f"delete {folder} to have it regenerated on the next run"
    if _generator_script(name):
        return f"regenerate it with `python dataset/generate_{name}.py noniid - dir`"
    return f"regenerate {folder} with the generator that made it"


def _check_name(name: str) -> None:
    if (not isinstance(name, str) or not name or name in (".", "..")
            or os.path.basename(name) != name or (os.altsep and os.altsep in name)):
        raise UserError(f"dataset name must be a plain folder name under the data root, "
                        f"got {name!r}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
