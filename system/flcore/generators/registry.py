"""Which generator backs FedKTL: chosen by the algorithm name, loaded from `-GPath`."""
import os

from utils.errors import UserError


def load_builtin(path, device):
    from flcore.generators.builtin import load_builtin_generator
    from flcore.generators.stylegan_like import StyleGANLikeAdapter

    if path is not None and not os.path.exists(path):
        raise UserError(f"-GPath {path!r} does not exist: give the path of a built-in generator "
                        "weights file, or drop -GPath to use the bundled one")
    return StyleGANLikeAdapter(load_builtin_generator(path, device=device), device=device)


GENERATOR_LOADERS = {
    "builtin": load_builtin,
}


def load_generator(kind: str, path, device):
    try:
        loader = GENERATOR_LOADERS[kind]
    except KeyError:
        raise UserError(f"unknown generator {kind!r}: choose one of {', '.join(GENERATOR_LOADERS)}") from None
    return loader(path, device)
