"""Snapshot an object's changing state as plain containers of CPU tensors, and put it back.

Servers and clients keep their state in attributes: modules, optimisers, random
generators, tensors, numbers and containers of those. `capture_state` turns every
attribute not named static into something `torch.load(..., weights_only=True)` can read;
`restore_state` loads it back into the live object of the same construction (modules,
optimisers and generators in place, everything else replaced).

Unknown types are refused with a message naming the attribute, so a new attribute that
cannot be saved is found by the resume tests instead of being silently left out.
"""
import itertools

import numpy as np
import torch
import torch.nn as nn

from utils.payload import first_non_finite_named

#: marks a tensor that lived on the object's accelerator and goes back there on restore
ON_DEVICE = "__on_device__"
#: marks a NumPy random generator's state
NUMPY_RNG = "__numpy_rng__"

PLAIN = (bool, int, float, str, type(None), torch.Size, torch.dtype)
STATEFUL = (nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler, torch.Generator)


def _tensor(tensor: torch.Tensor, copy: bool):
    tensor = tensor.detach()
    if tensor.device.type != "cpu":
        return {ON_DEVICE: tensor.to("cpu")}
    return tensor.clone() if copy else tensor


def capture_value(value, copy: bool = False, where: str = "value"):
    """A weights_only-loadable snapshot of `value` (`copy=True`: never shares memory with it)."""
    if isinstance(value, torch.Tensor):
        return _tensor(value, copy)
    if isinstance(value, PLAIN):
        return value
    if isinstance(value, nn.Module):
        return {name: _tensor(tensor, copy) for name, tensor in value.state_dict().items()}
    if isinstance(value, (torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)):
        return capture_value(value.state_dict(), copy, where)
    if isinstance(value, torch.Generator):
        return value.get_state()  # a fresh CPU byte tensor
    if isinstance(value, np.random.Generator):
        return {NUMPY_RNG: value.bit_generator.state}
    if isinstance(value, dict):
        return {key: capture_value(item, copy, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [capture_value(item, copy, f"{where}[{i}]") for i, item in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"cannot checkpoint {where} of type {type(value).__name__}: list it in the class's "
                    f"CHECKPOINT_STATIC if it never changes after construction and setup, or override "
                    f"checkpoint_state/restore_checkpoint_state")


def _holds_stateful(value) -> bool:
    if isinstance(value, STATEFUL):
        return True
    if isinstance(value, dict):
        return any(_holds_stateful(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_stateful(item) for item in value)
    return False


def restore_value(live, saved, device, where: str = "value"):
    """The value to hold after restoring `saved` over `live`: `live` itself, loaded in
    place, when it is (or holds) a module, optimiser or generator; otherwise `saved`,
    with tensors marked as on-device moved to `device`."""
    if isinstance(live, (nn.Module, torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler)):
        live.load_state_dict(restore_value(None, saved, device, where))
        return live
    if isinstance(live, torch.Generator):
        live.set_state(saved)
        return live
    if _holds_stateful(live):
        if isinstance(live, dict) and isinstance(saved, dict) and set(live) == set(saved):
            for key in live:
                live[key] = restore_value(live[key], saved[key], device, f"{where}[{key!r}]")
            return live
        if isinstance(live, (list, tuple)) and isinstance(saved, (list, tuple)) and len(live) == len(saved):
            items = [restore_value(item, part, device, f"{where}[{i}]")
                     for i, (item, part) in enumerate(zip(live, saved))]
            return items if isinstance(live, list) else tuple(items)
        raise ValueError(f"cannot restore {where}: the checkpoint's structure differs from the live one")
    if isinstance(saved, dict):
        if set(saved) == {ON_DEVICE}:
            return saved[ON_DEVICE].to(device)
        if set(saved) == {NUMPY_RNG}:
            rng = np.random.default_rng()
            rng.bit_generator.state = saved[NUMPY_RNG]
            return rng
        return {key: restore_value(None, item, device, f"{where}[{key!r}]") for key, item in saved.items()}
    if isinstance(saved, (list, tuple)):
        items = [restore_value(None, item, device, f"{where}[{i}]") for i, item in enumerate(saved)]
        return items if isinstance(saved, list) else tuple(items)
    return saved


def capture_state(obj, static, copy: bool = False) -> dict:
    """{attribute: snapshot} for every attribute of `obj` not named in `static`."""
    owner = type(obj).__name__
    return {name: capture_value(value, copy, f"{owner}.{name}")
            for name, value in vars(obj).items() if name not in static}


def restore_state(obj, state: dict, device, static=frozenset()) -> None:
    """Put a `capture_state` snapshot back into `obj` (built and set up the same way).

    Only the object's own state is restored: an attribute it holds that `static` does not
    exclude, or one its class declares in `CHECKPOINT_LATER` (made after setup). Any other
    name in `state` is refused before anything changes, so a crafted checkpoint cannot set,
    say, a run's name or results folder."""
    owner = type(obj).__name__
    declared = (set(vars(obj)) | set(getattr(type(obj), "CHECKPOINT_LATER", ()))) - set(static)
    foreign = sorted(str(name) for name in state if name not in declared)
    if foreign:
        raise ValueError(f"the checkpoint sets {', '.join(f'{owner}.{name}' for name in foreign[:5])}, "
                         f"which {'is' if len(foreign) == 1 else 'are'} not state of {owner}")
    for name, saved in state.items():
        setattr(obj, name, restore_value(getattr(obj, name, None), saved, device, f"{owner}.{name}"))


def _float_tensors(value, where: str, modules_only: bool):
    """(name, tensor) for the floating-point parameters and buffers of the modules in `value`
    (a module, or containers of them) and, unless `modules_only`, its bare tensors."""
    if isinstance(value, nn.Module):
        for name, tensor in itertools.chain(value.named_parameters(), value.named_buffers()):
            if tensor.is_floating_point():
                yield f"{where}.{name}", tensor
    elif isinstance(value, torch.Tensor):
        if not modules_only and value.is_floating_point():
            yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _float_tensors(item, f"{where}[{key!r}]", modules_only)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _float_tensors(item, f"{where}[{i}]", modules_only)


def named_float_tensors(obj, static, modules_only: bool = False):
    """(name, tensor) for every floating-point tensor among `obj`'s non-static attributes (only
    those of its modules with `modules_only`), each tensor once."""
    seen = set()
    for attr, value in vars(obj).items():
        if attr not in static:
            for name, tensor in _float_tensors(value, attr, modules_only):
                if id(tensor) not in seen:
                    seen.add(id(tensor))
                    yield name, tensor


def first_non_finite_state(obj, static) -> "str | None":
    """The name of the first floating-point tensor among `obj`'s non-static attributes that
    holds a NaN or an infinity, or None. One synchronisation per device, not per tensor."""
    return first_non_finite_named(named_float_tensors(obj, static))


def same_device(a: torch.device, b: torch.device) -> bool:
    """`cuda` and `cuda:0` are the same device here (clients run on one device each)."""
    return a.type == b.type and (a.index or 0) == (b.index or 0)


def _first_tensor_device(module: nn.Module):
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


def _on(value, device) -> bool:
    """Whether `value` holds anything on `device`."""
    if isinstance(value, nn.Module):
        found = _first_tensor_device(value)
        return found is not None and same_device(found, device)
    if isinstance(value, torch.optim.Optimizer):
        return any(isinstance(item, torch.Tensor) and same_device(item.device, device)
                   for state in value.state.values() for item in state.values())
    if isinstance(value, torch.Tensor):
        return same_device(value.device, device)
    if isinstance(value, dict):
        return any(_on(item, device) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_on(item, device) for item in value)
    return False



def _move_optimizer_state(optimizer: torch.optim.Optimizer, device) -> None:
    for state in optimizer.state.values():
        for key, item in state.items():
            # Scalar step counters stay where the optimiser keeps them (on the CPU).
            if isinstance(item, torch.Tensor) and item.dim() > 0:
                state[key] = item.to(device)


def _relocate(value, device, flags: list, replay: bool):
    """Move the leaves (modules, optimisers, tensors) of `value`: when parking
    (`replay=False`) those on the accelerator `device` go to the CPU and `flags` records, in
    traversal order, which ones did; when unparking (`replay=True`) `flags` says which go
    back to `device`."""
    if isinstance(value, (nn.Module, torch.optim.Optimizer, torch.Tensor)):
        if replay:
            move = flags.pop(0)
        else:
            move = _on(value, device)
            flags.append(move)
        if move:
            target = device if replay else torch.device("cpu")
            if isinstance(value, torch.optim.Optimizer):
                _move_optimizer_state(value, target)
            else:
                value = value.to(target)
        return value
    if isinstance(value, dict):
        for key in list(value):
            value[key] = _relocate(value[key], device, flags, replay)
        return value
    if isinstance(value, (list, tuple)):
        items = [_relocate(item, device, flags, replay) for item in value]
        if isinstance(value, list):
            value[:] = items
            return value
        return tuple(items)
    return value


def park_state(obj, device) -> dict:
    """Move every module, optimiser state and tensor that `obj` holds on the accelerator
    `device` to host memory, freeing the accelerator between calls. Returns what
    `unpark_state` needs to put exactly those back."""
    parked = {}
    for name, value in vars(obj).items():
        if _on(value, device):
            flags = []
            setattr(obj, name, _relocate(value, device, flags, replay=False))
            parked[name] = flags
    return parked


def unpark_state(obj, parked: dict, device) -> None:
    for name, flags in parked.items():
        setattr(obj, name, _relocate(getattr(obj, name), device, list(flags), replay=True))
