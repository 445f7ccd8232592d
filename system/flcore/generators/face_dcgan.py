"""The face generator: a DCGAN pre-trained on DigiFace-1M (64x64 RGB, z of 100 dimensions).

Its weights ship in the `gan-face-generate` package (MIT licence, `weights.tar`, the state
dict of the PyTorch tutorial's DCGAN under `netG_state_dict`). The package itself is never
imported: its own requirements (wandb with media extras) are not needed, so it is installed
with `pip install --no-deps gan-face-generate` and only its weights file is read, with
`weights_only=True`. The network is rebuilt here with the same layer layout, so the state
dict loads unchanged.

FedKTL works in z: latents are drawn from N(0, I), the distribution the DCGAN was trained on.
"""
import importlib.util
import os

import torch
import torch.nn as nn

from flcore.generators.base import GeneratorAdapter
from utils.errors import UserError

PACKAGE = "gan-face-generate"
INSTALL = f"pip install --no-deps {PACKAGE}"
STATE_KEY = "netG_state_dict"
#: the last transposed convolution's weight (4 blocks of conv, BatchNorm, ReLU come before it)
LAST_CONV = "main.12.weight"


class DCGANGenerator(nn.Module):
    """z [N, z_dim] -> images [N, channels, 64, 64] in [-1, 1]: transposed convolutions from
    4x4 up to 64x64, each but the last followed by BatchNorm and ReLU (`main.<i>` keys as in
    the PyTorch tutorial, so its state dicts load as they are)."""

    def __init__(self, z_dim: int = 100, width: int = 64, channels: int = 3):
        super().__init__()
        self.z_dim, self.width, self.channels = z_dim, width, channels
        widths = [width * 8, width * 4, width * 2, width]
        layers = [nn.ConvTranspose2d(z_dim, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()]
        for wide, narrow in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(wide, narrow, 4, 2, 1, bias=False), nn.BatchNorm2d(narrow), nn.ReLU()]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z.reshape(len(z), self.z_dim, 1, 1))

    @classmethod
    def from_state_dict(cls, state: dict) -> "DCGANGenerator":
        """A network shaped for `state` (widths read from its first and last layers)."""
        first, last = state["main.0.weight"], state[LAST_CONV]
        generator = cls(z_dim=first.shape[0], width=first.shape[1] // 8, channels=last.shape[1])
        generator.load_state_dict(state)
        return generator


def packaged_weights() -> str:
    """Path of the weights file inside the installed package (found without importing it)."""
    spec = importlib.util.find_spec("gan_face_generate")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the face generator's weights come with the {PACKAGE} package: {INSTALL} "
                        f"(or give a weights file with -GPath)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "weights.tar")
    if not os.path.isfile(path):
        raise UserError(f"{path} is missing from the installed {PACKAGE}: reinstall it with "
                        f"pip install --no-deps --force-reinstall {PACKAGE}")
    return path


def load_face_dcgan(path: str = None) -> DCGANGenerator:
    """The pre-trained DCGAN in eval mode with gradients off (`path`: a file with the same
    layout; default: the packaged weights)."""
    path = path or packaged_weights()
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
        generator = DCGANGenerator.from_state_dict(blob[STATE_KEY] if STATE_KEY in blob else blob)
    except Exception as exc:  # unreadable, or another layout: the fix is the same file
        raise UserError(f"{path} is not a face DCGAN state dict ({type(exc).__name__}): give the "
                        f"{PACKAGE} weights.tar, or drop -GPath to use the installed package's") from exc
    return generator.eval().requires_grad_(False)


class FaceDCGANAdapter(GeneratorAdapter):
    def __init__(self, G: DCGANGenerator, device="cpu"):
        self.G = G.eval().requires_grad_(False).to(device)
        self.latent_dim = int(G.z_dim)

    @property
    def device(self) -> torch.device:
        return next(self.G.parameters()).device

    def to(self, device):
        self.G.to(device)
        return self

    @torch.no_grad()
    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device)

    @torch.no_grad()
    def synthesize(self, latents: torch.Tensor) -> torch.Tensor:
        return ((self.G(latents.to(self.device)).float() + 1) / 2).clamp(0, 1)
