"""FedKD's dynamic gradient approximation: send each weight matrix as truncated SVD factors.

A tensor with two or more dimensions is viewed as a matrix [dim 0, rest] (a convolution
kernel [out, in, kh, kw] as [out, in*kh*kw]) and sent as U [m, k], S [k], V [k, n], keeping
the fewest leading singular values whose squared sum reaches a fraction `energy` of the
total. Vectors (biases) are sent as they are.
"""
import torch


def kept_rank(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest k with sum_{i<k} s_i^2 >= energy * sum_i s_i^2 (all of them at energy >= 1)."""
    if energy >= 1.0:
        return int(singular_values.numel())
    squared = singular_values.double().pow(2)
    total = float(squared.sum())
    if total == 0.0:
        return 0  # a zero matrix needs no factors at all
    cumulative = torch.cumsum(squared, 0)
    return min(int(torch.searchsorted(cumulative, energy * total)) + 1, int(singular_values.numel()))


def compress_tensor(tensor: torch.Tensor, energy: float):
    """A vector as it is; anything larger as {"u", "s", "v"} of its matrix view."""
    if tensor.dim() < 2:
        return tensor.detach().clone()
    matrix = tensor.detach().reshape(tensor.shape[0], -1)
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    k = kept_rank(s, energy)
    return {"u": u[:, :k].contiguous(), "s": s[:k].contiguous(), "v": vh[:k].contiguous()}


def decompress_tensor(compressed, shape) -> torch.Tensor:
    if isinstance(compressed, torch.Tensor):
        return compressed.reshape(shape)
    return ((compressed["u"] * compressed["s"]) @ compressed["v"]).reshape(shape)


def compress_state(state: dict, energy: float) -> dict:
    return {name: compress_tensor(tensor, energy) for name, tensor in state.items()}


def decompress_state(compressed: dict, shapes: dict) -> dict:
    """`shapes` ({name: torch.Size}) come from the receiver's own copy of the model."""
    return {name: decompress_tensor(value, shapes[name]) for name, value in compressed.items()}
