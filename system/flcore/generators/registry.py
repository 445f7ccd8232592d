"""Which generator backs FedKTL: chosen by the algorithm, loaded from `-GPath`.

Loaders take the parsed flags (each backend reads its own: `--stylegan_utils`,
`-prompt`, `--sd_steps`, ...) and return a `GeneratorAdapter`. Backends import their
heavy dependencies only when chosen.

Trust: StyleGAN pickles run code when unpickled and Stable Diffusion folders hold weights,
so they are only loaded from paths the user names (`-GPath`); no such path is a default.
Only plain weights files are read by default, with `weights_only=True`: the bundled built-in
generator, and the face DCGAN's `weights.tar` from the installed `gan-face-generate` package.

`--generator_weights random` (plain FedKTL) swaps the pre-trained weights for a random network
of the same architecture, the control of FedKTL's ablation.
"""
import os
from typing import Callable

import torch

from flcore.generators.paths import require_path, resolve_path
from utils.errors import UserError

#: backends whose weights the user must name: what -GPath gives, how to download one, where
#: it is documented
NAMED_WEIGHTS = {
    "stylegan": ("a StyleGAN3 or StyleGAN-XL network pickle (.pkl)", "bash stylegan/download_weights.sh",
                 "stylegan/README.md"),
    "stable-diffusion": ("a local Stable Diffusion folder (diffusers layout)",
                         "python stable-diffusion/download_weights.py", "stable-diffusion/README.md"),
}
BUILTIN_WHAT = "a built-in generator weights file, or drop -GPath to use the bundled one"
FACES_WHAT = "the face DCGAN's weights.tar, or drop -GPath to use the gan-face-generate package's"
#: backends whose weights are optional in -GPath: what goes there
OPTIONAL_WEIGHTS = {"builtin": BUILTIN_WHAT, "faces": FACES_WHAT}
#: seed of the random networks of --generator_weights random: the same network in every run
RANDOM_GENERATOR_SEED = 0


def check_generator_flags(kind: str, args, example: str = None) -> None:
    """Refuse, before any data is loaded, generator flags that cannot work: no -GPath for a
    backend whose weights must be named (`example`: a path to suggest), or a named path that
    does not exist or is a file where a folder belongs (or the other way round)."""
    path = args.generator_path
    if kind in OPTIONAL_WEIGHTS:
        what = OPTIONAL_WEIGHTS[kind]
        if path is not None and os.path.isdir(require_path(path, "-GPath", what, "README.md")):
            raise UserError(f"-GPath {path!r} is a folder: give {what} (see README.md)")
        if kind == "faces" and path is None:
            from flcore.generators.face_dcgan import packaged_weights

            packaged_weights()  # raises: how to install the package
        return
    if kind not in NAMED_WEIGHTS:
        raise UserError(f"unknown generator {kind!r}: choose one of {', '.join(GENERATOR_LOADERS)}")
    what, download, readme = NAMED_WEIGHTS[kind]
    if not path:
        suggestion = f"-GPath {example}" if example else "-GPath PATH"
        if kind == "stylegan":
            suggestion += " --stylegan_utils stylegan/stylegan-utils"
        algorithm = getattr(args, "algorithm", "this algorithm")
        fetched = "them" if kind == "stylegan" else "it"
        raise UserError(f"{algorithm} needs -GPath: give {what}, e.g. {suggestion} ({download} downloads "
                        f"{fetched}; see {readme})")
    found = require_path(path, "-GPath", what, readme)
    if kind == "stylegan":
        from flcore.generators.stylegan_pickle import find_utils_dir

        if os.path.isdir(found):
            raise UserError(f"-GPath {path!r} is a folder: give {what} (see {readme})")
        find_utils_dir(getattr(args, "stylegan_utils", None))
    elif not os.path.isdir(found):
        raise UserError(f"-GPath {path!r} is a file: give the Stable Diffusion folder (the one holding "
                        f"model_index.json; see {readme})")


def load_bundled(args, kind: str, load: Callable, rebuild: Callable):
    """A backend whose weights -GPath may name (else its bundled ones): `load(path or None)`,
    or with --generator_weights random a randomly initialised `rebuild(G)` of its architecture
    (z ~ N(0, I) feeds the BatchNorm calibration)."""
    from flcore.generators.base import randomly_initialised

    path = args.generator_path
    if path is not None:
        path = require_path(path, "-GPath", OPTIONAL_WEIGHTS[kind], "README.md")
    G = load(path)
    if getattr(args, "generator_weights", "pretrained") == "random":
        G = randomly_initialised(lambda: rebuild(G), RANDOM_GENERATOR_SEED,
                                 lambda n, rng: torch.randn(n, G.z_dim, generator=rng))
    return G


def load_builtin(args, device):
    from flcore.generators.builtin import BuiltinGenerator, load_builtin_generator
    from flcore.generators.stylegan_like import StyleGANLikeAdapter

    G = load_bundled(args, "builtin", load_builtin_generator, lambda G: BuiltinGenerator(**G.config))
    return StyleGANLikeAdapter(G, device=device)


def load_faces(args, device):
    from flcore.generators.face_dcgan import DCGANGenerator, FaceDCGANAdapter, load_face_dcgan

    G = load_bundled(args, "faces", load_face_dcgan, lambda G: DCGANGenerator(G.z_dim, G.width, G.channels))
    return FaceDCGANAdapter(G, device=device)


def load_stylegan(args, device):
    from flcore.generators.stylegan_pickle import load_stylegan_pickle
    from flcore.generators.stylegan_like import StyleGANLikeAdapter

    if not args.generator_path:
        check_generator_flags("stylegan", args)  # raises: the message asking for -GPath
    # nvlabs_ops: NVlabs' CUDA plugins are built (or fall back) before the first synthesis.
    return StyleGANLikeAdapter(load_stylegan_pickle(args.generator_path, args.stylegan_utils), device=device,
                               nvlabs_ops=True)


def load_stable_diffusion(args, device):
    from flcore.generators.stable_diffusion import load_stable_diffusion_adapter

    return load_stable_diffusion_adapter(args, device)


def load_stable_diffusion_pipeline(args, device):
    from flcore.generators.stable_diffusion import load_stable_diffusion_pipeline as load_pipeline

    return load_pipeline(args, device)


GENERATOR_LOADERS = {
    "builtin": load_builtin,
    "faces": load_faces,
    "stylegan": load_stylegan,
    "stable-diffusion": load_stable_diffusion,
    # the bare pipeline, for text-to-image use (GPT-FL), which reads no FedKTL prompt or guidance
    "stable-diffusion-pipeline": load_stable_diffusion_pipeline,
}


#: flags that change what a loader returns; runs that agree on them share one loaded generator
LOADER_FLAGS = ("generator_path", "generator_weights", "stylegan_utils", "stable_diffusion_prompt", "sd_steps",
                "sd_guidance", "sd_fp16")
_loaded = {}


def load_generator(kind: str, args, device):
    """The adapter for `kind`, loaded once per process for the same flags and device (the
    repetitions of `-t` reuse it; generators are frozen, so sharing changes nothing)."""
    try:
        loader = GENERATOR_LOADERS[kind]
    except KeyError:
        raise UserError(f"unknown generator {kind!r}: choose one of {', '.join(GENERATOR_LOADERS)}") from None
    path = resolve_path(args.generator_path) if args.generator_path else None
    stamp = os.path.getmtime(path) if path else None  # a rewritten file is loaded afresh
    key = (kind, str(device), stamp, *(repr(getattr(args, flag, None)) for flag in LOADER_FLAGS))
    if key not in _loaded:
        _loaded.clear()  # keep at most one generator in memory
        _loaded[key] = loader(args, device)
    return _loaded[key]
