"""What FML and FedKD share: the small model every client trains beside its private one,
and the distillation term between the two.

The shared model is HtFLlib's choice for both methods: a FedAvgCNN (two convolutions,
one hidden linear layer) with the same `feature_dim` and Linear(feature_dim, C) head as
the clients' models, so it is the same whatever family the private models come from.
"""
import torch
import torch.nn.functional as F

from trainmodel.models import BaseHeadSplit, build_model

SHARED_MODEL_ARCH = "FedAvgCNN"
# HtFLlib clips every gradient of both methods at this norm to keep training from diverging
# (FedKD's distillation weights 1 / (task losses) grow without bound as the models fit).
GRAD_CLIP = 10.0


def build_shared_model(num_classes: int, feature_dim: int, image_shape, seed: int) -> BaseHeadSplit:
    """The shared small model for images of `image_shape` (C, H, W), initialised from `seed`."""
    channels, _, width = image_shape
    return build_model(SHARED_MODEL_ARCH, num_classes=num_classes, feature_dim=feature_dim,
                       image_size=width, in_channels=channels, seed=seed)


def kl_to_target(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(target) || softmax(logits)), averaged over the batch.

    The target is detached: each model learns from the other's predictions through its
    own loss only, as in deep mutual learning.
    """
    return F.kl_div(F.log_softmax(logits, dim=1), F.log_softmax(target_logits.detach(), dim=1),
                    reduction="batchmean", log_target=True)
