"""Adapter for generators with NVlabs StyleGAN's interface (the built-in one included).

Such a generator has `z_dim`, `w_dim`, `c_dim`, `num_ws`, `mapping(z, c)` giving
[N, num_ws, w_dim] and `synthesis(ws, noise_mode=...)` giving images in [-1, 1].
FedKTL works in W: one w per image, repeated over all `num_ws` inputs.
"""
import torch

from flcore.generators.base import GeneratorAdapter


class StyleGANLikeAdapter(GeneratorAdapter):
    def __init__(self, G: torch.nn.Module, device="cpu", nvlabs_ops: bool = False):
        """`nvlabs_ops`: G runs NVlabs' custom ops (a pickled StyleGAN), whose CUDA plugins are
        then built, or replaced by the reference ops, whenever G is put on a device."""
        self.uses_nvlabs_ops = nvlabs_ops
        self.G = G.eval().requires_grad_(False).to(device)
        self.latent_dim = int(G.w_dim)
        self._prepare_ops(device)

    def _prepare_ops(self, device):
        if self.uses_nvlabs_ops:
            from flcore.generators import nvlabs_ops

            nvlabs_ops.prepare_nvlabs_ops(device)

    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device

    def to(self, device):
        self.G.to(device)
        self._prepare_ops(device)
        return self

    @torch.no_grad()
    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(n, self.G.z_dim, generator=generator).to(self.device)
        c = None
        if getattr(self.G, "c_dim", 0):
            # Class-conditional generators (StyleGAN-XL on ImageNet): a random class per sample.
            classes = torch.randint(self.G.c_dim, (n,), generator=generator)
            c = torch.nn.functional.one_hot(classes, self.G.c_dim).float().to(self.device)
        return self.G.mapping(z, c)[:, 0]

    @torch.no_grad()
    def synthesize(self, latents: torch.Tensor) -> torch.Tensor:
        ws = latents.to(self.device).unsqueeze(1).repeat(1, self.G.num_ws, 1)
        images = self.G.synthesis(ws, noise_mode="const")
        return ((images.float() + 1) / 2).clamp(0, 1)
