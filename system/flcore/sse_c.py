"""SSE-C, FedLoGe's frozen classifier: a sparse simplex ETF, refined (ICLR 2024).

Start from a simplex ETF [d, K], zero a random 60% of its entries for good, then refine
the remaining entries with Adam on
    sum_k (||w_k|| - target_norm)^2 - mean_k acos(max_{j != k} cos(w_k, w_j)),
which pulls every class vector to the same small norm and pushes each away from its
nearest neighbour. The result is used as a fixed Linear(d, K) (weight = its transpose).
"""
import torch
import torch.nn.functional as F

from flcore.etf import simplex_etf

SPARSITY = 0.6
TARGET_NORM = 0.1
LEARNING_RATE = 1e-4
STEPS = 10_000


def sse_c_loss(vectors: torch.Tensor, target_norm: float = TARGET_NORM) -> torch.Tensor:
    """The refinement loss for class vectors in the columns of `vectors` [d, K]."""
    norm_term = (vectors.norm(dim=0) - target_norm).pow(2).sum()
    unit = F.normalize(vectors, dim=0)
    cosines = unit.T @ unit
    cosines = cosines - 2 * torch.eye(cosines.shape[0], device=cosines.device)  # never its own max
    nearest = cosines.max(dim=1).values.clamp(-1 + 1e-6, 1 - 1e-6)
    return norm_term - torch.acos(nearest).mean()


def sparse_etf_mask(dim: int, num_classes: int, generator: torch.Generator,
                    sparsity: float = SPARSITY) -> torch.Tensor:
    """A [dim, K] boolean mask keeping exactly round((1 - sparsity) * dim * K) random entries."""
    total = dim * num_classes
    kept = torch.randperm(total, generator=generator)[:round((1 - sparsity) * total)]
    mask = torch.zeros(total, dtype=torch.bool)
    mask[kept] = True
    return mask.view(dim, num_classes)


def build_sse_c(num_classes: int, dim: int, generator: torch.Generator, steps: int = STEPS,
                sparsity: float = SPARSITY, learning_rate: float = LEARNING_RATE) -> torch.Tensor:
    """The refined sparse ETF [dim, K]; its zero entries stay exactly zero."""
    mask = sparse_etf_mask(dim, num_classes, generator, sparsity)
    vectors = (simplex_etf(num_classes, dim, generator) * mask).requires_grad_(True)
    optimizer = torch.optim.Adam([vectors], lr=learning_rate)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        sse_c_loss(vectors).backward()
        vectors.grad.mul_(mask)  # zeroed entries get no update (Adam's step is then 0 too)
        optimizer.step()
    return vectors.detach() * mask
