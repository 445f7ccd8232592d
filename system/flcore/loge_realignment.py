"""FedLoGe's step 2: post-hoc realignment of the heads, as pure functions on weights.

Heads are `nn.Linear(d, K)` weights of shape [K, d]: row c is class c's classifier.
- Global realignment (GLA-FR): every row of the aggregated global head is rescaled to the
  same norm (1.7), which removes the long tail's bias towards head classes' larger norms.
- Local realignment (LA-FR): a client's copy of the global head has each class row scaled
  by the norm of that class's row in the client's personal head, so it follows the client's
  own class frequencies; the client's logits are l_k(f) + that head's logits, with classes
  the client never trained on masked out.
"""
import torch

#: logit given to classes a client holds no training data of
ABSENT_CLASS_LOGIT = -1e10


def row_norms(weight: torch.Tensor) -> torch.Tensor:
    return weight.norm(dim=1, keepdim=True)


def realign_global(weight: torch.Tensor, norm: float = 1.7) -> torch.Tensor:
    """W_c <- W_c * norm / ||W_c|| for every class row c (a zero row stays zero)."""
    norms = row_norms(weight)
    return torch.where(norms > 0, weight * (norm / norms.clamp_min(1e-12)), weight)


def realign_local(global_weight: torch.Tensor, personal_weight: torch.Tensor) -> torch.Tensor:
    """Row c: the global row W_c scaled by the norm of the personal row c."""
    if global_weight.shape != personal_weight.shape:
        raise ValueError(f"head shapes differ: {tuple(global_weight.shape)} vs {tuple(personal_weight.shape)}")
    return global_weight * row_norms(personal_weight)


def mask_absent_classes(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Logits of the classes not in the boolean mask `present` [K] set to ABSENT_CLASS_LOGIT."""
    return logits.masked_fill(~present.to(logits.device), ABSENT_CLASS_LOGIT)


def balanced_accuracy(class_correct: torch.Tensor, class_total: torch.Tensor) -> float:
    """Mean per-class recall over the classes with test samples: the accuracy a balanced test
    set would give, estimated from a (possibly long-tailed) one."""
    seen = class_total > 0
    if not bool(seen.any()):
        return float("nan")
    return float((class_correct[seen].double() / class_total[seen].double()).mean())
