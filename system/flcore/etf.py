"""Simplex equiangular tight frame (ETF): fixed, maximally separated class vectors."""
import math

import torch


def random_orthogonal(dim: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """A dim x cols matrix with orthonormal columns (QR of a seeded uniform matrix)."""
    if cols > dim:
        raise ValueError(f"an ETF of {cols} classes needs at least {cols} dimensions, got {dim}")
    q, r = torch.linalg.qr(torch.rand(dim, cols, generator=generator, dtype=torch.float64))
    # Fix the signs so the factorisation is unique (diag(r) > 0).
    return (q * torch.sign(torch.diagonal(r))).float()


def simplex_etf(num_classes: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """ETF = sqrt(C/(C-1)) * P (I - 11^T / C), shape [dim, C]; column k is class k's vector.

    Columns have unit norm and pairwise cosine -1/(C-1).
    """
    if num_classes < 2:
        raise ValueError("an ETF needs at least 2 classes")
    p = random_orthogonal(dim, num_classes, generator)
    centering = torch.eye(num_classes) - torch.full((num_classes, num_classes), 1.0 / num_classes)
    return math.sqrt(num_classes / (num_classes - 1)) * p @ centering
