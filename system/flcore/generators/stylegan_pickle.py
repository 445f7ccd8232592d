"""Load a StyleGAN3 / StyleGAN-XL generator from an NVlabs network pickle.

NVlabs pickles (`{'G_ema': G, ...}`) carry the network's source code and import
NVlabs' `torch_utils` and `dnnlib` packages while unpickling, so a folder holding them
(a clone of NVlabs/stylegan3 or autonomousvision/stylegan-xl, or `stylegan/stylegan-utils`)
must be importable. Unpickling runs code from the file: only paths the user names are
loaded.
"""
import contextlib
import logging
import os
import pickle
import sys
import types

from flcore.generators.registry import REPO_ROOT, require_path, resolve_path
from utils.errors import UserError

DEFAULT_UTILS_DIR = os.path.join("stylegan", "stylegan-utils")
NVLABS_PACKAGES = ("torch_utils", "dnnlib")
README = "stylegan/README.md"
REQUIRED_ATTRIBUTES = ("z_dim", "w_dim", "num_ws", "mapping", "synthesis")


def find_utils_dir(utils_dir):
    """The folder holding `torch_utils` and `dnnlib`: `--stylegan_utils`, else the default
    `stylegan/stylegan-utils` when present, else None."""
    if utils_dir:
        found = resolve_path(utils_dir)
        if found is None or not os.path.isdir(found):
            raise UserError(f"--stylegan_utils {utils_dir!r} is not a folder: give the folder that holds "
                            f"NVlabs' torch_utils/ and dnnlib/ (a stylegan3 or stylegan-xl clone; see {README})")
        missing = [name for name in NVLABS_PACKAGES if not os.path.isdir(os.path.join(found, name))]
        if missing:
            raise UserError(f"--stylegan_utils {utils_dir!r} has no {' or '.join(missing)}/: give the folder "
                            f"that holds NVlabs' torch_utils/ and dnnlib/ (a stylegan3 or stylegan-xl clone; "
                            f"see {README})")
        return found
    default = os.path.join(REPO_ROOT, DEFAULT_UTILS_DIR)
    return default if os.path.isdir(os.path.join(default, "torch_utils")) else None


def provide_pkg_resources() -> None:
    """NVlabs' torch_utils imports `pkg_resources.parse_version`, which setuptools >= 81 no
    longer ships; the pickled network code re-imports it while loading. Stand in for that one
    function (with `packaging`, which it wrapped) when the real module is absent."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        try:
            from packaging.version import parse
        except ImportError:
            return  # then unpickling reports the missing module itself
        stand_in = types.ModuleType("pkg_resources")
        stand_in.parse_version = parse
        sys.modules["pkg_resources"] = stand_in


@contextlib.contextmanager
def working_directory(folder):
    """StyleGAN-XL's mapping network opens `in_embeddings/...` relative to the working
    directory; run the unpickling from the utilities folder so any working directory works."""
    if folder is None or not os.path.isdir(os.path.join(folder, "in_embeddings")):
        yield
        return
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def load_stylegan_pickle(path, utils_dir=None):
    """`G_ema` from the NVlabs pickle at `path` (CPU, eval mode)."""
    path = require_path(path, "-GPath", "a StyleGAN3 or StyleGAN-XL network pickle (.pkl)", README)
    utils = find_utils_dir(utils_dir)
    if utils is not None and utils not in sys.path:
        # Appended, not prepended: NVlabs' top-level modules must not shadow this library's.
        sys.path.append(utils)
    provide_pkg_resources()
    # NVlabs' ops import torch's extension builder, which logs a warning on CUDA-less hosts;
    # their CPU reference implementations are used there, so the warning is noise.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        with open(path, "rb") as f, working_directory(utils):
            content = pickle.load(f)
    except ModuleNotFoundError as exc:
        if exc.name in NVLABS_PACKAGES or (exc.name or "").split(".")[0] in NVLABS_PACKAGES:
            where = f"--stylegan_utils {utils!r} did not provide it" if utils else "none was found"
            raise UserError(f"unpickling {path!r} needs NVlabs' {exc.name} package and {where}: pass "
                            f"--stylegan_utils DIR with a stylegan3 or stylegan-xl clone (see {README})") from None
        raise UserError(f"unpickling {path!r} needs the Python package {exc.name!r}: "
                        f"pip install {(exc.name or '').split('.')[0]}") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError,
            ValueError) as exc:
        raise UserError(f"-GPath {path!r} is not a readable StyleGAN network pickle "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if not isinstance(content, dict) or "G_ema" not in content:
        keys = ", ".join(map(str, content)) if isinstance(content, dict) else type(content).__name__
        raise UserError(f"-GPath {path!r} has no 'G_ema' generator (found: {keys}): give a network pickle "
                        f"as NVlabs' training writes it (see {README})")
    G = content["G_ema"]
    missing = [name for name in REQUIRED_ATTRIBUTES if not hasattr(G, name)]
    if missing:
        raise UserError(f"-GPath {path!r}: 'G_ema' lacks {', '.join(missing)}, so it is not a StyleGAN "
                        f"generator (see {README})")
    return G.eval().requires_grad_(False)
