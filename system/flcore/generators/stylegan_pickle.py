"""Load a StyleGAN3 / StyleGAN-XL generator from an NVlabs network pickle.

NVlabs pickles (`{'G_ema': G, ...}`) carry the network's source code and import
NVlabs' `torch_utils` and `dnnlib` packages while unpickling, so a folder holding them
(a clone of NVlabs/stylegan3 or autonomousvision/stylegan-xl, or `stylegan/stylegan-utils`)
must be importable. Unpickling runs code from the file, and the utilities folder is put on
`sys.path`: only a pickle named with `-GPath` is loaded, and only a folder named with
`--stylegan_utils` is put on the path (never a default one, which could be planted).

Only `G_ema` is used. Other entries (StyleGAN-XL's projected discriminator `D` needs
`timm==0.4.12`, for one) may need packages that are missing or of another version: their
objects are unpickled as inert placeholders, skipped with one printed note, and the load
fails only when `G_ema` itself holds a placeholder.
"""
import contextlib
import functools
import importlib.metadata
import importlib.util
import logging
import os
import pickle
import sys
import types
from dataclasses import dataclass

import numpy as np
import torch

from flcore.generators.paths import REPO_ROOT, require_path, resolve_path
from utils.errors import UserError

REPOSITORY_UTILS_DIR = os.path.join("stylegan", "stylegan-utils")
NVLABS_PACKAGES = ("torch_utils", "dnnlib")
#: top-level modules of the stylegan3 / stylegan-xl clones that pickled code imports
NVLABS_MODULES = NVLABS_PACKAGES + ("training", "legacy", "pg_modules", "feature_networks", "metrics")
#: module -> (distribution, what to pip install): the versions NVlabs' and StyleGAN-XL's
#: environment.yml pin where the pickled code depends on one
KNOWN_PACKAGES = {
    "timm": ("timm", "timm==0.4.12"),  # StyleGAN-XL's D; timm >= 0.5 moved timm.models.layers.*
    "dill": ("dill", "dill"),
    "click": ("click", "click"),
    "scipy": ("scipy", "scipy"),
    "requests": ("requests", "requests"),
    "psutil": ("psutil", "psutil"),
    "PIL": ("pillow", "pillow"),
    "pkg_resources": ("packaging", "packaging"),  # the loader then provides pkg_resources
    "distutils": ("setuptools", "setuptools"),  # dnnlib.util imports it; gone from Python 3.12
}
README = "stylegan/README.md"
REQUIRED_ATTRIBUTES = ("z_dim", "w_dim", "num_ws", "mapping", "synthesis")


def repository_utils_dir():
    """The absolute `stylegan/stylegan-utils` of this repository when it holds torch_utils/
    (to suggest in errors; never used unless named), else None."""
    folder = os.path.join(REPO_ROOT, REPOSITORY_UTILS_DIR)
    return folder if os.path.isdir(os.path.join(folder, "torch_utils")) else None


def find_utils_dir(utils_dir):
    """The folder `--stylegan_utils` names (resolved, checked to hold `torch_utils` and
    `dnnlib`), else None: no folder is used unless the user named it."""
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
    return None


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


@dataclass(frozen=True)
class MissingCode:
    """Why a pickled object could not be rebuilt: `module` failed to import, or (when
    `attribute` is set) imported without it, or (`rebuild_failed`) dill's function
    `attribute` failed on what the pickle stored."""
    module: str
    error: str
    attribute: str = None
    rebuild_failed: bool = False

    @classmethod
    def from_import_error(cls, exc: ImportError, fallback: str):
        return cls(exc.name or fallback, first_line(exc))

    @property
    def top(self) -> str:
        return self.module.split(".")[0]

    @property
    def wanted(self) -> str:
        return f"{self.module}.{self.attribute}" if self.attribute else self.module


def first_line(exc: BaseException) -> str:
    """`exc` in one line; an import error's text already says what it is."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, ImportError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


class Placeholder:
    """Inert stand-in for a pickled object whose code could not be imported. It absorbs
    whatever the unpickler does with it (construction, state, items, calls and attribute
    look-ups give placeholders) and keeps nothing, so the tensors of skipped entries are
    freed; `missing` (set per subclass) says what was missing."""
    missing: MissingCode = None
    pickled_name = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setattr__(self, name, value):  # setattr(obj, ...) reductions (dill writes some)
        pass

    def __call__(self, *args, **kwargs):  # e.g. a missing type that dill's _load_type returned
        return type(self)()

    def __getattr__(self, name):
        if name.startswith("__"):  # protocols (copy, numpy, ...) must not find a placeholder
            raise AttributeError(name)
        return type(self)()

    def __getitem__(self, key):
        return type(self)()

    # Objects of missing list or dict subclasses get their items through these.
    def append(self, item):
        pass

    def extend(self, items):
        pass

    def __setitem__(self, key, value):
        pass

    def __repr__(self):
        return f"<{self.pickled_name}: not loaded, {self.missing.error}>"


def placeholder_class(pickled_name: str, missing: MissingCode) -> type:
    return type(pickled_name.rsplit(".", 1)[-1], (Placeholder,), {"missing": missing, "pickled_name": pickled_name})


def holds_placeholder(values) -> MissingCode:
    for value in values:
        if isinstance(value, Placeholder) or (isinstance(value, type) and issubclass(value, Placeholder)):
            return value.missing
    return None


class TolerantUnpickler(pickle.Unpickler):
    """Unpickles what it can: a class or function whose module cannot be imported, and a
    persistent NVlabs class whose stored source fails to import, become placeholders.

    NVlabs' `persistent_class` pickles an object as a call to
    `torch_utils.persistence._reconstruct_persistent_obj(meta)`, which executes the class's
    module source (kept in `meta`) at unpickling time; that call is wrapped here. Other
    objects are plain `find_class` lookups. StyleGAN-XL's training writes its pickles with
    dill, whose rebuilding functions are wrapped too: fed a placeholder, or failing (a
    function pickled by value under another Python), they give a placeholder."""

    def __init__(self, file):
        super().__init__(file)
        self.failed_sources = {}  # module source -> MissingCode, one failure per source

    def find_class(self, module, name):
        try:
            found = super().find_class(module, name)
        except ImportError as exc:
            return placeholder_class(f"{module}.{name}", MissingCode.from_import_error(exc, module))
        except AttributeError as exc:  # the module is there, but another version of it
            return placeholder_class(f"{module}.{name}", MissingCode(module, str(exc), attribute=name))
        if module == "torch_utils.persistence" and name == "_reconstruct_persistent_obj":
            return functools.partial(self.reconstruct_persistent, found, sys.modules[module])
        if module.split(".")[0] == "dill" and isinstance(found, types.FunctionType):
            return functools.partial(self.rebuild_with_dill, found, module, name)
        return found

    @staticmethod
    def rebuild_with_dill(function, module, name, *args, **kwargs):
        missing = holds_placeholder(list(args) + list(kwargs.values()))
        if missing is not None:
            return placeholder_class(f"{module}.{name}", missing)()
        try:
            return function(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - whatever dill cannot rebuild stays out of G_ema
            return placeholder_class(f"{module}.{name}",
                                     MissingCode(module, first_line(exc), attribute=name, rebuild_failed=True))()

    def reconstruct_persistent(self, reconstruct, persistence, meta):
        source = meta.get("module_src") if isinstance(meta, dict) else None
        name = f"{meta.get('class_name', '?')} (pickled source)" if isinstance(meta, dict) else "?"
        if source in self.failed_sources:
            return placeholder_class(name, self.failed_sources[source])()
        cache = getattr(persistence, "_src_to_module_dict", None)
        cached_before = isinstance(cache, dict) and source in cache
        try:
            return reconstruct(meta)
        except ImportError as exc:
            if isinstance(cache, dict) and not cached_before:
                # NVlabs caches the module before executing the source: drop the half-run one,
                # or every later object of that source (now and in a later load) finds a module
                # without its class.
                partial = cache.pop(source, None)
                if partial is not None:
                    getattr(persistence, "_module_to_src_dict", {}).pop(partial, None)
                    sys.modules.pop(getattr(partial, "__name__", None), None)
            self.failed_sources[source] = MissingCode.from_import_error(exc, "?")
            return placeholder_class(name, self.failed_sources[source])()


#: what the walk below never looks into: no placeholder can hide there
LEAVES = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, torch.Tensor, np.ndarray, str,
          bytes, bytearray, int, float, complex, bool)


def find_placeholder(obj):
    """The MissingCode of the first placeholder reachable from `obj` (through containers,
    module trees and object attributes), or None."""
    stack, seen = [obj], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, Placeholder) or (isinstance(item, type) and issubclass(item, Placeholder)):
            return item.missing
        if item is None or isinstance(item, LEAVES):
            continue
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
        elif isinstance(item, functools.partial):
            stack.extend((item.func, item.args, item.keywords))
        elif isinstance(item, types.MethodType):  # dill rebinds pickled methods
            stack.extend((item.__func__, item.__self__))
        attributes = getattr(item, "__dict__", None)
        if isinstance(attributes, dict):
            stack.append(attributes)
    return None


def installed_version(top: str):
    """The installed version of the package providing module `top`, "" when it is there
    but its version is unknown, None when it is not installed."""
    try:
        spec = importlib.util.find_spec(top)
        if spec is None:
            return None
    except (ImportError, ValueError):  # ValueError: a module in sys.modules without a spec
        return None
    try:
        distribution = importlib.metadata.distribution(KNOWN_PACKAGES.get(top, (top,))[0])
    except importlib.metadata.PackageNotFoundError:
        return ""
    # Only the distribution the module is imported from says its version (another copy may
    # sit earlier on sys.path).
    origin = os.path.realpath(spec.origin or "")
    root = os.path.realpath(str(distribution.locate_file("")))
    return distribution.version if origin.startswith(root + os.sep) else ""


def diagnose(missing: MissingCode):
    """("unknown", None) when the error names no module, ("absent", None) when its package is
    not installed, ("failed", "dill <version>") when dill could not rebuild what it stored,
    else ("wrong", "<package> <version>"): installed, but without what the pickle needs."""
    if missing.module == "?":
        return "unknown", None
    version = installed_version(missing.top)
    if missing.rebuild_failed:
        return "failed", f"{missing.top} {version}" if version else missing.top
    if version is None or (missing.module == missing.top and not missing.attribute):
        return "absent", None
    return "wrong", f"{missing.top} {version}" if version else missing.top


def describe(missing: MissingCode) -> str:
    """Why an entry was skipped, for the note."""
    state, installed = diagnose(missing)
    if state == "absent":
        return f"needs {missing.top}, which is not installed"
    if state == "wrong":
        return f"needs {missing.wanted}, which {installed} does not have"
    if state == "failed":
        return f"{installed} could not rebuild what it pickled ({missing.wanted}: {missing.error})"
    return f"its code failed to import: {missing.error}"


def missing_error(path, utils, missing: MissingCode) -> UserError:
    """The one-line error for a G_ema that needs `missing`."""
    if missing.top in NVLABS_MODULES:
        kind = "package" if missing.top in NVLABS_PACKAGES else "module"
        where = f"--stylegan_utils {utils!r} did not provide it" if utils else "no --stylegan_utils was given"
        clone = repository_utils_dir() if utils is None else None
        fix = (f"--stylegan_utils {clone} (this repository's clone)" if clone else
               "--stylegan_utils DIR with a stylegan3 or stylegan-xl clone")
        return UserError(f"unpickling {path!r} needs NVlabs' {missing.wanted} {kind} and {where}: pass {fix} "
                         f"(a stylegan-xl one for StyleGAN-XL pickles; see {README})")
    state, installed = diagnose(missing)
    pip = KNOWN_PACKAGES.get(missing.top, (None, missing.top))[1]
    if state == "absent":
        return UserError(f"unpickling {path!r}: G_ema needs the Python package {missing.top!r}, which is not "
                         f"installed: pip install {pip}")
    if state == "wrong":
        fix = f"pip install {pip}" if "==" in pip else f"install the {missing.top} version the pickle was made with"
        return UserError(f"unpickling {path!r}: G_ema needs {missing.wanted}, which the installed {installed} does "
                         f"not have ({missing.error}), so it is the wrong version: {fix}")
    if state == "failed":
        return UserError(f"unpickling {path!r}: {installed} could not rebuild what it pickled in G_ema "
                         f"({missing.wanted}: {missing.error}): use the Python and dill versions the pickle "
                         f"was written with")
    return UserError(f"unpickling {path!r}: G_ema's code failed to import ({missing.error}); install what it "
                     f"names (see {README})")


def load_stylegan_pickle(path, utils_dir=None):
    """`G_ema` from the NVlabs pickle at `path` (CPU, eval mode); other entries that need
    missing code are skipped with one printed note."""
    path = require_path(path, "-GPath", "a StyleGAN3 or StyleGAN-XL network pickle (.pkl)", README)
    utils = find_utils_dir(utils_dir)
    print(f"loading StyleGAN network pickle {path}" + (f" with NVlabs' code from {utils}" if utils else ""),
          flush=True)
    if utils is not None and utils not in sys.path:
        # Appended, not prepended: NVlabs' top-level modules must not shadow this library's.
        sys.path.append(utils)
    provide_pkg_resources()
    # NVlabs' ops import torch's extension builder, which logs a warning on CUDA-less hosts;
    # their CPU reference implementations are used there, so the warning is noise.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        with open(path, "rb") as f, working_directory(utils):
            content = TolerantUnpickler(f).load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError,
            ValueError) as exc:
        raise UserError(f"-GPath {path!r} is not a readable StyleGAN network pickle "
                        f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(content, Placeholder):
        raise missing_error(path, utils, content.missing)
    if not isinstance(content, dict) or "G_ema" not in content:
        keys = ", ".join(map(str, content)) if isinstance(content, dict) else type(content).__name__
        raise UserError(f"-GPath {path!r} has no 'G_ema' generator (found: {keys}): give a network pickle "
                        f"as NVlabs' training writes it (see {README})")
    G = content["G_ema"]
    missing = find_placeholder(G)
    if missing is not None:
        raise missing_error(path, utils, missing)
    lacking = [name for name in REQUIRED_ATTRIBUTES if not hasattr(G, name)]
    if lacking:
        raise UserError(f"-GPath {path!r}: 'G_ema' lacks {', '.join(lacking)}, so it is not a StyleGAN "
                        f"generator (see {README})")
    skipped = {key: find_placeholder(value) for key, value in content.items() if key != "G_ema"}
    skipped = {key: why for key, why in skipped.items() if why is not None}
    if skipped:
        reasons = ", ".join(f"{key} ({describe(why)})" for key, why in skipped.items())
        print(f"note: -GPath {path!r}: skipped {reasons}; FedKTL only uses G_ema", flush=True)
    return G.eval().requires_grad_(False)
