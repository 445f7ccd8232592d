"""Small things several tests build: a tiny federated dataset and a tiny generator file."""
import os

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

from dataset.generate_common import build_dataset
from flcore.registry import SPECS, get_spec


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


# A stand-in for NVlabs' torch_utils.persistence writing the same pickle format: an object
# of a persistent class pickles as `_reconstruct_persistent_obj(meta)`, `meta` holding its
# module's source, which is executed again (in a fresh module, cached by source, registered
# before it runs) when the pickle is loaded.
STAND_IN_PERSISTENCE_SOURCE = """
import inspect
import sys
import types
import uuid

_version = 6
_module_to_src_dict = {}
_src_to_module_dict = {}
_decorated = {}


def _source_of(module):
    if module not in _module_to_src_dict:
        _module_to_src_dict[module] = inspect.getsource(module)
    return _module_to_src_dict[module]


def persistent_class(cls):
    if cls in _decorated.values():
        return cls
    if cls not in _decorated:
        source = _source_of(sys.modules[cls.__module__])

        def __reduce__(self):
            meta = dict(type="class", version=_version, module_src=source, class_name=cls.__name__,
                        state=dict(self.__dict__))
            return _reconstruct_persistent_obj, (meta,)

        _decorated[cls] = type(cls.__name__, (cls,), {"__reduce__": __reduce__, "__module__": cls.__module__})
    return _decorated[cls]


def _src_to_module(source):
    if source not in _src_to_module_dict:
        module = types.ModuleType("_imported_module_" + uuid.uuid4().hex)
        sys.modules[module.__name__] = module
        _module_to_src_dict[module] = source
        _src_to_module_dict[source] = module
        exec(source, module.__dict__)
    return _src_to_module_dict[source]


def _reconstruct_persistent_obj(meta):
    assert meta["version"] == _version and meta["type"] == "class"
    cls = persistent_class(_src_to_module(meta["module_src"]).__dict__[meta["class_name"]])
    obj = cls.__new__(cls)
    obj.__setstate__(meta["state"])
    return obj
"""

# A generator with NVlabs StyleGAN's interface, as the source of a module inside a
# stand-in `torch_utils` package: pickles of it, like NVlabs pickles, can only be
# loaded when that package is importable.
TINY_STYLEGAN_SOURCE = """
import torch
from torch import nn

from torch_utils import persistence


@persistence.persistent_class
class TinyStyleGAN(nn.Module):
    def __init__(self, z_dim=16, w_dim=24, c_dim=0, num_ws=5, img_resolution=8, read_on_load=None):
        super().__init__()
        self.z_dim, self.w_dim, self.c_dim, self.num_ws = z_dim, w_dim, c_dim, num_ws
        self.img_resolution, self.img_channels = img_resolution, 3
        self.read_on_load = read_on_load
        self.map = nn.Linear(z_dim + c_dim, w_dim)
        self.to_image = nn.Linear(w_dim, 3 * img_resolution ** 2)

    def mapping(self, z, c, truncation_psi=1):
        if self.c_dim:
            assert c.shape == (len(z), self.c_dim) and torch.all(c.sum(1) == 1), "needs one-hot classes"
            z = torch.cat([z, c], dim=1)
        else:
            assert c is None, "unconditional"
        return torch.tanh(self.map(z)).unsqueeze(1).repeat(1, self.num_ws, 1)

    def synthesis(self, ws, noise_mode="random"):
        assert ws.shape[1:] == (self.num_ws, self.w_dim) and noise_mode == "const"
        r = self.img_resolution
        return torch.tanh(3 * self.to_image(ws.mean(1))).view(-1, 3, r, r)

    def __setstate__(self, state):
        super().__setstate__(state)
        if self.read_on_load:  # like StyleGAN-XL, which opens in_embeddings/... from the cwd
            with open(self.read_on_load) as f:
                f.read()
"""


def write_files(folder: str, files: dict) -> str:
    """Write {relative path: text} under `folder`, creating folders; returns `folder`."""
    for name, text in files.items():
        target = os.path.join(folder, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as f:
            f.write(text)
    return folder


def make_stylegan_utils(folder: str, in_embeddings: bool = False, modules: dict = None) -> str:
    """A folder standing in for an NVlabs clone: torch_utils/ (persistence and the tiny
    network) and dnnlib/, plus `modules` ({relative path: source}, e.g. a discriminator)."""
    files = {"torch_utils/__init__.py": "", "dnnlib/__init__.py": "",
             "torch_utils/persistence.py": STAND_IN_PERSISTENCE_SOURCE,
             "torch_utils/tiny_stylegan.py": TINY_STYLEGAN_SOURCE}
    if in_embeddings:
        files["in_embeddings/embedding.txt"] = "0.0\n"
    files.update(modules or {})
    return write_files(folder, files)


def make_stylegan_pickle(utils_dir: str, path: str, content: str = "{'G_ema': G, 'D': None}", *, setup: str = "",
                         extra_path: str = None, **kwargs) -> str:
    """Pickle a TinyStyleGAN in a separate process (so this one never imports the stand-in
    torch_utils); `content` is the pickled object's expression in terms of G and of what
    the `setup` lines define; `extra_path` is put on that process's path only (packages the
    pickling needs and the loading may lack)."""
    import subprocess
    import sys

    paths = [utils_dir] + ([extra_path] if extra_path else [])
    script = (f"import sys, pickle, torch\nsys.path[:0] = {paths!r}\ntorch.manual_seed(0)\n"
              f"from torch_utils.tiny_stylegan import TinyStyleGAN\n"
              f"G = TinyStyleGAN(**{kwargs!r}).eval()\n{setup}\n"
              f"with open({path!r}, 'wb') as f: pickle.dump({content}, f)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return path


def build_server_from_flags(argv: list):
    """A server with its clients, built from command-line flags as main.py builds it, set up
    but not trained, to look inside after a round."""
    from cli import apply_algorithm_defaults, parse_args, validate
    from flcore.registry import get_server_class
    from utils.data_utils import load_federated_dataset

    args = parse_args(argv)
    server_class = get_server_class(args.algorithm)
    apply_algorithm_defaults(args)
    validate(args)
    data = load_federated_dataset(args.dataset, args.num_clients, None, args.data_root)
    args.num_classes = data.num_classes
    return server_class(args, 0, data)


# Every algorithm whose spec gives flags that make it quick on the "Tiny" dataset: the contract
# tests (resume, Ray) run each of them, so a new algorithm joins them by declaring its test_flags.
TESTED_SPECS = tuple(spec for spec in SPECS if spec.test_flags is not None)
ALGORITHM_FLAGS = {spec.name: list(spec.test_flags) for spec in TESTED_SPECS}


def needs_test_generator(algorithm: str) -> bool:
    """Whether the algorithm's test runs get a tiny built-in generator as -GPath."""
    return get_spec(algorithm).test_generator


def interrupt_in_round_2(monkeypatch, server_class, argv: list) -> None:
    """Run `main.main(argv)` and press Ctrl-C as `server_class` begins round 2: the run ends with
    exit status 130 after its checkpoint of round 2 (with --ckpt_every 1), as a real one does."""
    import main

    original = server_class.train_round

    def interrupted(self, round_idx, client_ids):
        if round_idx == 2:
            raise KeyboardInterrupt
        return original(self, round_idx, client_ids)

    monkeypatch.setattr(server_class, "train_round", interrupted)
    try:
        assert main.main(argv) == 130
    finally:
        monkeypatch.setattr(server_class, "train_round", original)
