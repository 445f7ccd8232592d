"""The library's built-in pre-trained generator: a small style-based GAN for 32x32 RGB.

It is trained by `scripts/train_builtin_generator.py` on random multi-scale patches of
scikit-learn's two sample photographs (a temple in China and a flower), never on client data, and its
weights ship with the library so FedKTL runs offline on CPU. We chose a GAN over a VAE
because FedKTL transfers knowledge through the *clarity* of the generated images and a
VAE decoder trained for minutes gives blurry averages; the GAN is kept stable by a
spectral-normalised discriminator with hinge loss, lazy R1, an EMA copy of the generator
and heavily augmented patches.

The module mirrors the interface of NVlabs' StyleGAN generators (`z_dim`, `w_dim`,
`c_dim`, `num_ws`, `img_resolution`, `img_channels`, `mapping`, `synthesis`) so a single
adapter drives either this model or a real StyleGAN pickle.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import UserError

BUILTIN_WEIGHTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights", "builtin_generator.pt")
REBUILD_HINT = "rebuild it with `python scripts/train_builtin_generator.py`"


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    # Puts every z on (roughly) the same sphere, as StyleGAN does, so the mapping
    # network sees inputs of a fixed scale whatever the sampler.
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """MLP z -> w, broadcast to `num_ws` copies (one per synthesis layer)."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 4, w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        self.w_avg_beta = w_avg_beta
        layers = []
        in_dim = z_dim
        for _ in range(num_layers):
            linear = nn.Linear(in_dim, w_dim)
            # Variance-preserving init: PyTorch's default shrinks activations layer by
            # layer, which would start W collapsed to a point and every z on one image.
            nn.init.kaiming_normal_(linear.weight, a=0.2, nonlinearity="leaky_relu")
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.LeakyReLU(0.2)]
            in_dim = w_dim
        self.net = nn.Sequential(*layers)
        # Running mean of w, the centre that truncation pulls towards.
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, c=None, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                update_w_avg: bool = False, **_ignored) -> torch.Tensor:
        w = self.net(normalize_2nd_moment(z.float()))
        if update_w_avg:
            with torch.no_grad():
                self.w_avg.lerp_(w.detach().mean(dim=0), 1.0 - self.w_avg_beta)
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1.0:
            # As in StyleGAN: pull towards the mean w, optionally only for the first layers.
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws


class StyledConv(nn.Module):
    """3x3 conv, instance norm, then a per-channel scale and bias predicted from one w (AdaIN)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, upsample: bool):
        super().__init__()
        self.upsample = upsample
        # Reflect padding: with zero padding the net locates image borders and paints
        # fixed dots in the corners; reflecting makes that much weaker (faint ones remain).
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, padding_mode="reflect")
        self.style = nn.Linear(w_dim, 2 * out_ch)
        # Small random weights: images depend on w from the first step (zero weights would
        # start every z on the same image and diversity would have to grow from nothing).
        nn.init.normal_(self.style.weight, std=0.5 / w_dim ** 0.5)  # scale/bias std ~0.5 for unit-scale w
        nn.init.zeros_(self.style.bias)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.instance_norm(self.conv(x))
        scale, bias = self.style(w).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return F.leaky_relu(x * (1 + scale) + bias, 0.2)


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> images [N, img_channels, res, res] in [-1, 1].

    A learned 4x4 constant is refined by one styled conv, then two per doubling of
    resolution (8, 16, 32 for res 32), each taking its own w from `ws`. There is no noise injection, so
    synthesis is a deterministic function of ws whatever `noise_mode` says.
    """

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channels: dict):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        resolutions = [4]
        while resolutions[-1] < img_resolution:
            resolutions.append(resolutions[-1] * 2)
        if resolutions[-1] != img_resolution:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.const = nn.Parameter(torch.randn(channels[4], 4, 4))
        self.layers = nn.ModuleList()
        in_ch = channels[4]
        for res in resolutions:
            out_ch = channels[res]
            if res > 4:
                self.layers.append(StyledConv(in_ch, out_ch, w_dim, upsample=True))
            self.layers.append(StyledConv(out_ch, out_ch, w_dim, upsample=False))
            in_ch = out_ch
        self.to_rgb = nn.Conv2d(in_ch, img_channels, 1)
        self.num_ws = len(self.layers)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", **_ignored) -> torch.Tensor:
        if ws.dim() != 3 or ws.shape[1] != self.num_ws or ws.shape[2] != self.w_dim:
            raise ValueError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i])
        return torch.tanh(self.to_rgb(x))


DEFAULT_CHANNELS = {4: 128, 8: 128, 16: 64, 32: 32}


class BuiltinGenerator(nn.Module):
    """A StyleGAN-interfaced 32x32 generator: `forward(z) = synthesis(mapping(z))`."""

    def __init__(self, z_dim: int = 128, w_dim: int = 128, img_resolution: int = 32, img_channels: int = 3,
                 mapping_layers: int = 4, channels: dict | None = None):
        super().__init__()
        channels = {int(k): int(v) for k, v in (channels or DEFAULT_CHANNELS).items()}
        self.z_dim, self.w_dim, self.c_dim = z_dim, w_dim, 0
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channels)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, w_dim, self.num_ws, num_layers=mapping_layers)
        self.config = dict(z_dim=z_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                           mapping_layers=mapping_layers, channels=channels)

    def forward(self, z: torch.Tensor, c=None, truncation_psi: float = 1.0, noise_mode: str = "const") -> torch.Tensor:
        return self.synthesis(self.mapping(z, c, truncation_psi=truncation_psi), noise_mode=noise_mode)


def save_builtin_generator(generator: BuiltinGenerator, path: str) -> None:
    """Writes `{'config', 'state_dict'}` with fp16 tensors to keep the committed file small."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state = {k: v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()
             for k, v in generator.state_dict().items()}
    torch.save({"config": dict(generator.config), "state_dict": state}, path)


def load_builtin_generator(path: str | None = None, device="cpu") -> BuiltinGenerator:
    """The pre-trained built-in generator in eval mode with gradients off, in float32."""
    path = path or BUILTIN_WEIGHTS
    if not os.path.isfile(path):
        raise UserError(f"built-in generator weights not found at {path}; {REBUILD_HINT}")
    try:
        blob = torch.load(path, weights_only=True, map_location="cpu")
        generator = BuiltinGenerator(**blob["config"])
        generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    except Exception as exc:  # any unreadable or mismatched file is the same fix for the user
        raise UserError(f"built-in generator weights at {path} are unreadable ({type(exc).__name__}); "
                        f"{REBUILD_HINT}") from exc
    generator.eval().requires_grad_(False)
    return generator.to(device)
