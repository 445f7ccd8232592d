"""NVlabs' custom CUDA ops on a GPU without a working compiler.

On CUDA, NVlabs' `torch_utils.ops.{bias_act, filtered_lrelu, upfirdn2d}` compile a plugin
(`custom_ops.get_plugin`) the first time they run, and re-raise when the build fails (no
nvcc, no ninja, a compiler torch does not accept), so a run would crash at its first
synthesis. Each module only takes its plugin path when its `_init()` returns True (in
both the stylegan3 and the stylegan-xl copies), so a module whose plugin cannot be built
gets an `_init` that returns False and runs its reference PyTorch implementation.
"""
import sys

import torch

OP_MODULES = ("torch_utils.ops.bias_act", "torch_utils.ops.filtered_lrelu", "torch_utils.ops.upfirdn2d")
FALLBACK_WARNING = ("warning: NVlabs' CUDA ops {ops} could not be built ({error}); StyleGAN synthesis uses "
                    "their reference PyTorch ops, which is slower. For the fast path, install a CUDA toolkit "
                    "matching torch's CUDA {cuda} with nvcc and ninja on PATH (pip install ninja)")


def _reference_only():
    return False


def prepare_nvlabs_ops(device) -> list:
    """Build the plugins of the loaded NVlabs op modules for a CUDA `device` now, before the
    first synthesis; a module whose build fails is switched to its reference implementation,
    with one printed warning for all of them. Returns the short names of the modules that
    fell back (none off CUDA, where NVlabs uses the reference ops anyway). Moves no tensors."""
    if torch.device(device).type != "cuda":
        return []
    failed = {}
    for name in OP_MODULES:
        module = sys.modules.get(name)
        init = getattr(module, "_init", None)
        if module is None or not callable(init) or init is _reference_only:
            continue  # not loaded, not NVlabs' layout, or switched already (warned then)
        try:
            init()
        except Exception as exc:  # any build failure: the reference ops still work
            module._init = _reference_only
            failed[name.rsplit(".", 1)[-1]] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    if failed:
        errors = sorted(set(failed.values()))
        print(FALLBACK_WARNING.format(ops=", ".join(failed), error="; ".join(errors),
                                      cuda=torch.version.cuda or "build"), flush=True)
    return list(failed)
