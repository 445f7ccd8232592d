"""Peak memory of this process: host (resident set) and GPU (tensors allocated by torch)."""
import resource
import sys

import torch


def peak_host_mib() -> float:
    """The largest resident set this process has had, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def peak_gpu_mib() -> float:
    """The most GPU memory torch has held in tensors in this process, in MiB (0 without CUDA)."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return 0.0
    return sum(torch.cuda.max_memory_allocated(index) for index in range(torch.cuda.device_count())) / 2**20


def process_memory() -> dict:
    return {"host_mib": peak_host_mib(), "gpu_mib": peak_gpu_mib()}
