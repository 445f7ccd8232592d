"""The driver shared by every `generate_<Name>.py` script.

A script only knows how to load its pooled images and labels; this module parses
PFLlib's command line (``noniid|iid  balance|-  pat|dir|-`` plus flags), partitions
the pool over clients, cuts each client 75/25 into train/test, writes the folder in
the PFLlib format and prints a summary.
"""
import argparse
import os
import sys
from typing import Callable, Optional, Sequence

import numpy as np

from dataset import partition
from utils import htfl_format

# PFLlib records this batch size in config.json and sizes `least_samples` from it.
BATCH_SIZE = 10
# Per-client lines in the summary are printed up to this many clients.
MAX_LISTED_CLIENTS = 50


def pixels_to_unit_range(pixels: np.ndarray) -> np.ndarray:
    """0..255 pixel values -> float32 in [-1, 1], i.e. (x / 255 - 0.5) / 0.5."""
    return (np.asarray(pixels, dtype=np.float32) / 255.0 - 0.5) / 0.5


def default_least_samples(num_samples: int, num_clients: int) -> int:
    """PFLlib's floor on a client's size: enough for a few test batches, but never
    more than half an equal share, so it can always be met."""
    test_fraction = 1.0 - partition.TRAIN_RATIO
    return int(min(BATCH_SIZE / test_fraction, num_samples / num_clients / 2))


def check_train_per_class(train_per_class: Optional[int]) -> None:
    if train_per_class is not None and (isinstance(train_per_class, bool)
                                        or int(train_per_class) != train_per_class
                                        or train_per_class < 1):
        raise ValueError(f"--train_per_class must be at least 1 (training samples kept per "
                         f"class and client), got {train_per_class}")


def keep_per_class(indices: np.ndarray, labels: np.ndarray, per_class: int,
                   rng: np.random.Generator) -> np.ndarray:
    """The entries of `indices` left when each class (by `labels[indices]`) keeps at most
    `per_class` of them, chosen at random; the kept ones stay in their given order."""
    indices = np.asarray(indices, dtype=np.int64)
    held = labels[indices]
    keep = np.zeros(len(indices), dtype=bool)
    for cls in np.unique(held):
        members = np.flatnonzero(held == cls)
        if len(members) > per_class:
            members = rng.choice(members, per_class, replace=False)
        keep[members] = True
    return indices[keep]


def build_dataset(out_dir: str, x: np.ndarray, y: np.ndarray, label_names: Sequence[str], *,
                  num_clients: int, niid: bool, balance: bool, partition_name: Optional[str],
                  alpha: float, class_per_client: int, seed: int,
                  imbalance_factor: float = 1.0,
                  partition_rule: str = "library",
                  train_per_class: Optional[int] = None,
                  style: Optional[str] = None) -> htfl_format.DatasetConfig:
    """Partition the pool (x, y) over clients, split each client and write `out_dir`.
    `imbalance_factor` < 1 first thins the pool to an exponential long tail.
    `partition_rule` 'pfllib' deals as PFLlib's generator did (see partition.pfllib_*),
    with PFLlib's floor of batch_size / (1 - train_size) = 40 samples per client.
    `train_per_class` N (few-shot): after the 75/25 split, each client's training set
    keeps at most N samples per class, drawn at random; the test sets stay whole and the
    partition and split are those of the same run without it. `style` is only recorded
    in config.json (the pool is restyled by the caller)."""
    y = np.asarray(y, dtype=np.int64)
    if len(x) != len(y):
        raise ValueError(f"pool has {len(x)} images but {len(y)} labels")
    check_train_per_class(train_per_class)
    partition_rng, split_rng = (np.random.default_rng(s)
                                for s in np.random.SeedSequence(seed).spawn(2))
    pool = np.arange(len(y))
    if imbalance_factor != 1.0:
        tail_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
        pool = partition.long_tail(y, imbalance_factor, tail_rng)
        y = y[pool]
    if partition_rule == "pfllib":
        least_samples = partition.PFLLIB_LEAST_SAMPLES
    else:
        least_samples = default_least_samples(len(y), num_clients)
    client_indices = partition.partition_indices(
        y, num_clients, partition_rng, niid=niid, balance=balance, partition=partition_name,
        alpha=alpha, class_per_client=class_per_client, least_samples=least_samples,
        rule=partition_rule)

    # its own stream (the 4th child), so the partition and split do not depend on it
    shots_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[3])
    train, test = [], []
    for indices in client_indices:
        train_idx, test_idx = partition.split_train_test(indices, split_rng)
        if train_per_class is not None:
            train_idx = keep_per_class(train_idx, y, train_per_class, shots_rng)
        train.append((x[pool[train_idx]], y[train_idx]))
        test.append((x[pool[test_idx]], y[test_idx]))
    return htfl_format.write_dataset(
        out_dir, train, test, num_classes=len(label_names), non_iid=niid, balance=balance,
        partition=partition_name if niid else None, alpha=alpha, batch_size=BATCH_SIZE,
        label_names=label_names, imbalance_factor=None if imbalance_factor == 1.0 else imbalance_factor,
        partition_rule=partition_rule, style=style,
        train_per_class=None if train_per_class is None else int(train_per_class))


def summary(out_dir: str, config: htfl_format.DatasetConfig) -> str:
    """A few lines: totals, then samples and classes per client."""
    sizes = np.array([sum(count for _, count in pairs) for pairs in config.label_counts])
    num_classes_held = np.array([len(pairs) for pairs in config.label_counts])
    if config.non_iid:
        how = f"non-IID {config.partition}"
        if config.partition == "dir":
            how += f" (alpha={config.alpha})"
    else:
        how = "IID"
    how += ", balanced" if config.balance else ", unbalanced"
    if config.partition_rule == "pfllib":
        how += ", PFLlib's rule"
    lines = [
        f"wrote {out_dir}: {config.num_clients} clients, {config.num_classes} classes, "
        f"{int(sizes.sum())} samples, {how}",
        f"samples per client: min {sizes.min()}, mean {sizes.mean():.1f}, max {sizes.max()}",
        f"classes per client: min {num_classes_held.min()}, mean {num_classes_held.mean():.1f}, "
        f"max {num_classes_held.max()}",
    ]
    if config.style is not None:
        lines.append(f"style: {config.style}")
    if config.train_per_class is not None:
        lines.append(f"shots: at most {config.train_per_class} training samples per class and "
                     f"client ({config.train_per_class}-shot); test sets whole")
    if config.num_clients <= MAX_LISTED_CLIENTS:
        for client, pairs in enumerate(config.label_counts):
            histogram = " ".join(f"{label}:{count}" for label, count in pairs)
            lines.append(f"client {client:3d}: {sizes[client]:5d} samples, "
                         f"{len(pairs):3d} classes  {histogram}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str], dataset_name: str, default_out: str,
               add_source_arguments: Optional[Callable] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"generate_{dataset_name}.py",
        description=f"Partition {dataset_name} over federated clients in the PFLlib format.")
    parser.add_argument("niid", choices=["noniid", "iid"], help="non-IID or IID clients")
    parser.add_argument("balance", choices=["balance", "-"],
                        help="'balance' for equal client sizes, '-' for random sizes")
    parser.add_argument("partition", choices=["pat", "dir", "-"],
                        help="non-IID partition: pathological, Dirichlet, or '-' for IID")
    parser.add_argument("--num_clients", type=int, default=20)
    parser.add_argument("--alpha", type=float, default=0.1, help="Dirichlet concentration")
    parser.add_argument("--class_per_client", type=int, default=2, help="classes per client for pat")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--imbalance_factor", type=float, default=1.0,
                        help="long-tailed pool: smallest / largest class size, exponential profile "
                             "(e.g. 0.01 for CIFAR-10-LT; default 1: as the source)")
    parser.add_argument("--partition_rule", choices=list(partition.PARTITION_RULES),
                        default="library",
                        help="how samples are dealt: 'library' (default: one Dirichlet draw per "
                             "class then a deterministic top-up; round-robin pat) or 'pfllib' "
                             "(as PFLlib's generator: Dirichlet redrawn until every client has "
                             "40 samples, clients capped at N/num_clients; PFLlib's pat and iid)")
    parser.add_argument("--train_per_class", type=int, default=None, metavar="N",
                        help="few-shot training sets: after the partition and the 75/25 split, "
                             "each client keeps at most N training samples per class (drawn "
                             "with --seed); test sets are kept whole (default: keep all)")
    parser.add_argument("--out", default=default_out, help="dataset folder to write")
    if add_source_arguments is not None:
        add_source_arguments(parser)
    args = parser.parse_args(list(argv))
    if args.niid == "noniid" and args.partition == "-":
        parser.error("noniid needs a partition: pass 'pat' or 'dir' as the third argument")
    return args


def run(argv: Sequence[str], dataset_name: str, default_out: str,
        load_pool: Callable[[argparse.Namespace], tuple],
        add_source_arguments: Optional[Callable] = None,
        style_of: Optional[Callable[[argparse.Namespace], Optional[str]]] = None) -> int:
    """The whole command: `load_pool(args)` returns (x, y, label_names); `style_of(args)`,
    if given, names the style to record in config.json (None: as the source). Returns the
    exit status; a problem the user can fix is printed as one line with status 2."""
    args = parse_args(argv, dataset_name, default_out, add_source_arguments)
    try:
        check_train_per_class(args.train_per_class)
        x, y, label_names = load_pool(args)
        config = build_dataset(
            args.out, x, y, label_names, num_clients=args.num_clients,
            niid=args.niid == "noniid", balance=args.balance == "balance",
            partition_name=None if args.partition == "-" else args.partition,
            alpha=args.alpha, class_per_client=args.class_per_client, seed=args.seed,
            imbalance_factor=args.imbalance_factor, partition_rule=args.partition_rule,
            train_per_class=args.train_per_class,
            style=None if style_of is None else style_of(args))
    except (ValueError, OSError, ImportError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(summary(args.out, config))
    return 0


def add_torchvision_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="folder holding (or, with --download, receiving) "
                                       "the torchvision copy of the dataset")
    parser.add_argument("--download", action="store_true",
                        help="download the dataset into --root if it is not there")


def check_torchvision_root(root: Optional[str], title: str, download: bool, expected: str = "") -> None:
    """--root must be given, and must exist unless --download will create it."""
    if not root:
        raise ValueError(f"{title} needs --root DIR (the folder with torchvision's copy); "
                         f"add --download to fetch it there")
    if not download and not os.path.isdir(root):
        raise FileNotFoundError(f"--root {root} does not exist: pass the folder with "
                                f"torchvision's {title} files{expected}, or add --download")


def load_torchvision_pool(dataset_class: Callable, title: str, root: Optional[str],
                          download: bool) -> tuple:
    """Train and test splits of a torchvision CIFAR-style dataset (uint8 NHWC `data`,
    `targets`, `classes`) pooled into (x [N, C, H, W] in [-1, 1], y, label names)."""
    check_torchvision_root(root, title, download)
    splits = []
    for train in (True, False):
        try:
            splits.append(dataset_class(root=root, train=train, download=download))
        except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
            raise FileNotFoundError(f"{title} files not found or corrupted under --root {root}: "
                                    f"add --download to fetch them") from exc
    images = np.concatenate([np.asarray(split.data) for split in splits])
    labels = np.concatenate([np.asarray(split.targets, dtype=np.int64) for split in splits])
    x = pixels_to_unit_range(images.transpose(0, 3, 1, 2))  # NHWC -> NCHW
    return x, labels, [str(name) for name in splits[0].classes]


def run_torchvision(argv: Optional[Sequence[str]], dataset_name: str, class_name: str, title: str) -> int:
    """The command for a torchvision CIFAR-style dataset (`class_name` in torchvision.datasets)."""
    def load(args):
        import torchvision.datasets
        return load_torchvision_pool(getattr(torchvision.datasets, class_name), title, args.root, args.download)

    return run(sys.argv[1:] if argv is None else argv, dataset_name,
               default_out=os.path.join(repo_dataset_dir(), dataset_name),
               load_pool=load, add_source_arguments=add_torchvision_arguments)


def repo_dataset_dir() -> str:
    """The repository's dataset/ folder, where generated datasets live by default."""
    return os.path.dirname(os.path.abspath(__file__))
