"""Writing a file so that a kill or a full disk never leaves half of it under its name."""
import os

from utils.errors import UserError

TEMPORARY_SUFFIX = ".partial"


def atomic_write(path: str, write) -> None:
    """Call `write(file)` on a temporary binary file beside `path`, sync it, then rename it to
    `path`. A failed write (a full disk, a folder made read-only) leaves `path` as it was and
    no temporary file, and ends in a one-line UserError."""
    tmp = f"{path}.{os.getpid()}{TEMPORARY_SUFFIX}"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as error:
        reason = getattr(error, "strerror", None) or " ".join(str(error).split()) or type(error).__name__
        raise UserError(f"cannot write {path}: {reason}; free space or fix the folder's permissions, then "
                        f"run the same command with --resume") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
