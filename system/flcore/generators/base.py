"""The interface every FedKTL generator backend implements.

FedKTL's server code only ever talks to this: how wide the latent space is, how to
draw from the generator's own latent distribution (the target of the MMD alignment),
and how to turn latents into images in [0, 1].
"""
from abc import ABC, abstractmethod

import torch


class GeneratorAdapter(ABC):
    #: width of one latent vector as FedKTL sees it (flattened)
    latent_dim: int

    @abstractmethod
    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """`n` latents from the generator's latent distribution, shape [n, latent_dim],
        on `self.device`. All randomness comes from `generator` (a CPU torch.Generator)."""

    @abstractmethod
    def synthesize(self, latents: torch.Tensor) -> torch.Tensor:
        """Images for `latents` ([n, latent_dim]) as a float tensor [n, 3, H, W] in [0, 1]."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        ...

    @abstractmethod
    def to(self, device) -> "GeneratorAdapter":
        ...
