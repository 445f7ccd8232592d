"""Where generator files are looked for: the working directory, then the repository root.

Shared by the registry and the backends (which the registry imports, never the other way
round).
"""
import os

from utils.errors import UserError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def resolve_path(path: str):
    """`path` as given (relative to the working directory) if it exists, else relative to the
    repository root (so the original `cd system; sh run_me.sh` lines find `stylegan/...`),
    else None."""
    for candidate in (path, os.path.join(REPO_ROOT, path)):
        if os.path.exists(candidate):
            return os.path.abspath(candidate)
    return None


def require_path(path, flag: str, what: str, readme: str) -> str:
    """The resolved `path`, or a one-line error saying what belongs there."""
    if not path:
        raise UserError(f"this algorithm needs {flag}: give {what} (see {readme})")
    found = resolve_path(path)
    if found is None:
        raise UserError(f"{flag} {path!r} does not exist (neither in the working directory nor in the "
                        f"repository): give {what} (see {readme})")
    return found
