"""One process at a time writes a run: a lock on `<out>/<run name>/.lock`.

The lock is an advisory `flock` held for the run's whole life. The kernel releases it when
the process ends however it ends (SIGKILL included), so a killed run never leaves a stale
lock behind. The empty lock file itself stays: removing it while another process waits on
it would let two runs hold "the" lock at once.
"""
import os

from utils.errors import UserError

try:
    import fcntl
except ImportError:  # not on Windows: runs there are not locked
    fcntl = None

LOCK_FILE = ".lock"


def held_message(run_dir: str) -> str:
    name = os.path.basename(os.path.normpath(run_dir))
    return (f"another run is writing {name} in {os.path.dirname(os.path.abspath(run_dir))} (it holds "
            f"{os.path.join(run_dir, LOCK_FILE)}): wait for it to end, or give this run another -go or --out")


def is_held(run_dir: str) -> bool:
    """Whether a live process holds the run's lock. Opens the lock file only for reading
    (when it exists), so asking changes no file."""
    path = os.path.join(run_dir, LOCK_FILE)
    if fcntl is None or not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return False


class RunLock:
    """`with RunLock(run_dir):` holds the run's lock or raises a one-line UserError."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK_FILE)
        self.fd = None

    def __enter__(self):
        if fcntl is None:
            return self
        try:
            os.makedirs(self.run_dir, exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f"cannot create {self.path}: {error.strerror or error}: give --out a folder "
                            f"you can write to") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            raise UserError(held_message(self.run_dir)) from None
        return self

    def __exit__(self, *exc):
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False
