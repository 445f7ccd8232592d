"""Payloads: what server and clients exchange. Plain containers of CPU tensors and numbers.

Only tensors count as traffic; numbers in a reply (sample counts, metrics) are
bookkeeping that a real deployment would send in a few bytes.
"""
from dataclasses import dataclass

import torch


def to_payload(tensor: torch.Tensor) -> torch.Tensor:
    """A detached CPU copy: the receiver may keep it while the sender goes on training."""
    return tensor.detach().to("cpu", copy=True)


def state_to_payload(module: torch.nn.Module) -> dict:
    return {k: to_payload(v) for k, v in module.state_dict().items()}


def iter_tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from iter_tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from iter_tensors(value)


def first_non_finite(obj, where: str = "") -> str | None:
    """The path (e.g. "['means']") of the first floating-point tensor in `obj` holding a NaN
    or an infinity, or None when all are finite."""
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
            return where or "tensor"
        return None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for key, value in items:
        found = first_non_finite(value, f"{where}[{key!r}]")
        if found is not None:
            return found
    return None


@torch.no_grad()
def first_non_finite_named(named):
    """The name of the first floating-point tensor among `named` ((name, tensor) pairs) that
    holds a NaN or an infinity, or None when all are finite.

    The per-tensor flags are computed where the tensors live and read back together: one
    synchronisation per device, however many tensors (a large model has hundreds)."""
    names = []
    flags = {}  # device -> ([position in names], [0-d flag])
    for name, tensor in named:
        if tensor.is_floating_point():
            positions, device_flags = flags.setdefault(tensor.device, ([], []))
            positions.append(len(names))
            device_flags.append(torch.isfinite(tensor).all())
            names.append(name)
    finite = torch.ones(len(names), dtype=torch.bool)
    for positions, device_flags in flags.values():
        finite[positions] = torch.stack(device_flags).cpu()
    if bool(finite.all()):
        return None
    return names[int(torch.nonzero(~finite)[0])]


def payload_size(obj) -> tuple[int, int]:
    """(bytes over all tensors, elements of floating-point tensors) inside `obj`.

    The second number is the papers' unit ("floats"): integer labels sent beside
    prototypes are bytes on the wire but not model knowledge.
    """
    nbytes = floats = 0
    for tensor in iter_tensors(obj):
        nbytes += tensor.numel() * tensor.element_size()
        if tensor.is_floating_point():
            floats += tensor.numel()
    return nbytes, floats


@dataclass
class Traffic:
    """Server-side view of one round's communication, summed over clients."""

    bytes_up: int = 0
    bytes_down: int = 0
    floats_up: int = 0
    floats_down: int = 0

    def add_down(self, obj, copies: int = 1) -> None:
        nbytes, numel = payload_size(obj)
        self.bytes_down += nbytes * copies
        self.floats_down += numel * copies

    def add_up(self, obj) -> None:
        nbytes, numel = payload_size(obj)
        self.bytes_up += nbytes
        self.floats_up += numel
