"""Losses shared by several methods."""
import torch
import torch.nn.functional as F

MMD_BANDWIDTHS = (10.0, 15.0, 20.0, 50.0)


def arcface_logits(cosine: torch.Tensor, labels: torch.Tensor, margin: float, scale: float) -> torch.Tensor:
    """ArcFace: add an angular margin to the true class, then scale.

    cos is clamped away from +-1 because d/dx acos(x) is infinite there.
    """
    cosine = cosine.clamp(-1 + 1e-7, 1 - 1e-7)
    with_margin = torch.cos(torch.acos(cosine) + margin)
    true_class = F.one_hot(labels, cosine.shape[1]).bool()
    return scale * torch.where(true_class, with_margin, cosine)


def pairwise_sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1).unsqueeze(0) - 2 * a @ b.T).clamp_min(0)


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidths=MMD_BANDWIDTHS) -> torch.Tensor:
    """Biased MMD^2 estimate with a sum of RBF kernels exp(-0.5 d^2 / a) over bandwidths a.

    x and y may have different numbers of rows.
    """
    def kernel(d2):
        return sum(torch.exp(-0.5 * d2 / a) for a in bandwidths)

    return (kernel(pairwise_sq_dists(x, x)).mean() + kernel(pairwise_sq_dists(y, y)).mean()
            - 2 * kernel(pairwise_sq_dists(x, y)).mean())
