"""Trains the built-in generator on patches of scikit-learn's sample photographs.

    python scripts/train_builtin_generator.py            # reproduces the committed weights

Writes `system/flcore/generators/weights/builtin_generator.pt`, a grid of samples from
fixed latents (`docs/builtin_generator_samples.png`) and a grid of real training patches
(`docs/builtin_generator_patches.png`) to compare against. CPU only, seeded.

Training data are random crops of `sklearn.datasets.load_sample_images()` (china.jpg and
flower.jpg, shipped with scikit-learn so nothing is downloaded) at many scales, with flips
and mild colour jitter: the generator must produce natural-image textures, and must never
see client data. Loss: hinge GAN with a spectral-normalised discriminator, lazy R1 on
real patches, random translation of every discriminator input, and an EMA of the
generator's weights, which is what gets saved.
"""
import argparse
import copy
import math
import os
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYSTEM_DIR = os.path.join(REPO_ROOT, "system")
if SYSTEM_DIR not in sys.path:
    sys.path.insert(0, SYSTEM_DIR)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.nn.utils.parametrizations import spectral_norm  # noqa: E402

from flcore.generators.builtin import BUILTIN_WEIGHTS, BuiltinGenerator, save_builtin_generator  # noqa: E402

SAMPLES_PNG = os.path.join(REPO_ROOT, "docs", "builtin_generator_samples.png")
PATCHES_PNG = os.path.join(REPO_ROOT, "docs", "builtin_generator_patches.png")


# ----------------------------------------------------------------------------- data

class PatchSampler:
    """Random `size`x`size` crops of the sample photos, in [-1, 1].

    Each photo is pre-resized to a geometric ladder of scales, so a crop at level s covers
    `size / s` original pixels: small scales give whole-object views (the flower, the
    roof), large ones fine texture (leaves, tiles). Levels are drawn in proportion to
    their number of possible crops' square root, so large levels don't swamp the rest.
    """

    def __init__(self, size: int = 32, min_scale: float = 0.12, max_scale: float = 1.0, num_levels: int = 12,
                 images: list | None = None):
        if images is None:
            from sklearn.datasets import load_sample_images
            images = load_sample_images().images
        self.size = size
        self.levels = []
        for img in images:
            full = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(127.5).sub(1).unsqueeze(0)
            for i in range(num_levels):
                scale = min_scale * (max_scale / min_scale) ** (i / max(num_levels - 1, 1))
                h, w = round(full.shape[2] * scale), round(full.shape[3] * scale)
                if min(h, w) < size:
                    continue
                level = F.interpolate(full, size=(h, w), mode="bilinear", antialias=True, align_corners=False)
                self.levels.append(level[0].clamp(-1, 1).contiguous())
        weights = torch.tensor([math.sqrt((lv.shape[1] - size + 1) * (lv.shape[2] - size + 1)) for lv in self.levels])
        self.level_probs = weights / weights.sum()

    def sample(self, n: int, generator: torch.Generator, jitter: float = 0.1) -> torch.Tensor:
        size = self.size
        picks = torch.multinomial(self.level_probs, n, replacement=True, generator=generator)
        uv = torch.rand(n, 2, generator=generator)
        crops = []
        for k in range(n):
            level = self.levels[picks[k]]
            top = int(uv[k, 0] * (level.shape[1] - size + 1))
            left = int(uv[k, 1] * (level.shape[2] - size + 1))
            crops.append(level[:, top:top + size, left:left + size])
        x = torch.stack(crops)
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip.view(n, 1, 1, 1), x.flip(3), x)
        if jitter > 0:
            # Brightness, contrast and saturation jitter: more colour variety than two
            # photos hold, without inventing hues that natural images lack.
            r = (torch.rand(n, 3, generator=generator) * 2 - 1) * jitter
            x = x + r[:, 0].view(n, 1, 1, 1)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * (1 + r[:, 1]).view(n, 1, 1, 1) + mean
            gray = x.mean(dim=1, keepdim=True)
            x = (x - gray) * (1 + 2 * r[:, 2]).view(n, 1, 1, 1) + gray
        return x.clamp(-1, 1)


def random_translate(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shifts each image by up to `max_shift` px (reflect padding), applied alike to real and
    fake discriminator inputs so D cannot memorise exact pixel positions of the patches."""
    if max_shift <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, [max_shift] * 4, mode="reflect")
    shifts = torch.randint(0, 2 * max_shift + 1, (n, 2), generator=generator)
    return torch.stack([padded[k, :, shifts[k, 0]:shifts[k, 0] + h, shifts[k, 1]:shifts[k, 1] + w] for k in range(n)])


# ----------------------------------------------------------------------------- discriminator

class MinibatchStd(nn.Module):
    """Appends the batch's mean feature std as a channel: a collapsed G makes it ~0, which D sees."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            g = 1 if n < 2 else math.gcd(n, g)
        if g < 2:
            return torch.cat([x, torch.zeros(n, 1, h, w, dtype=x.dtype, device=x.device)], dim=1)
        y = x.reshape(g, n // g, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [n // g]
        y = y.view(1, n // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w)
        return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """Spectral-normalised CNN: 32 -> 16 -> 8 -> 4 -> score."""

    def __init__(self, img_channels: int = 3, width: int = 32):
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width

        def sn_conv(i, o, k, s):
            return spectral_norm(nn.Conv2d(i, o, k, stride=s, padding=(k - 1) // 2 if s == 1 else 1))

        act = nn.LeakyReLU(0.2)
        self.features = nn.Sequential(
            sn_conv(img_channels, c1, 3, 1), act,
            sn_conv(c1, c2, 4, 2), act,          # 16x16
            sn_conv(c2, c2, 3, 1), act,
            sn_conv(c2, c3, 4, 2), act,          # 8x8
            sn_conv(c3, c3, 3, 1), act,
            sn_conv(c3, c3, 4, 2), act,          # 4x4
        )
        self.mbstd = MinibatchStd()
        self.head = nn.Sequential(sn_conv(c3 + 1, c3, 3, 1), act, nn.Flatten(),
                                  spectral_norm(nn.Linear(c3 * 16, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.mbstd(self.features(x))).squeeze(1)


# ----------------------------------------------------------------------------- training

class GanTrainer:
    """Holds G, its EMA copy, D and their optimisers; `train_step` does one D and one G update."""

    def __init__(self, generator_config: dict | None = None, d_width: int = 32, lr_g: float = 2e-4,
                 lr_d: float = 2e-4, mapping_lr_mult: float = 0.1, r1_gamma: float = 0.1, r1_every: int = 8,
                 translate: int = 3, ema_beta: float = 0.998, seed: int = 0):
        torch.manual_seed(seed)
        self.G = BuiltinGenerator(**(generator_config or {}))
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.D = Discriminator(self.G.img_channels, d_width)
        # A slower mapping network keeps W from drifting under the synthesis layers' feet.
        self.opt_g = torch.optim.Adam([
            {"params": self.G.synthesis.parameters(), "lr": lr_g},
            {"params": self.G.mapping.parameters(), "lr": lr_g * mapping_lr_mult},
        ], betas=(0.0, 0.99))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=(0.0, 0.99))
        self.r1_gamma, self.r1_every, self.translate, self.ema_beta = r1_gamma, r1_every, translate, ema_beta
        self.step = 0
        self.rng = torch.Generator().manual_seed(seed + 1)

    def _d_input(self, x: torch.Tensor) -> torch.Tensor:
        return random_translate(x, self.translate, self.rng)

    def train_step(self, real: torch.Tensor) -> dict:
        n = real.shape[0]
        G, D = self.G, self.D

        # Discriminator: hinge loss, plus R1 on real images every `r1_every` steps with
        # the penalty scaled up by the same factor (lazy regularisation).
        z = torch.randn(n, G.z_dim, generator=self.rng)
        with torch.no_grad():
            fake = G(z)
        D.requires_grad_(True)
        real_in = self._d_input(real)
        do_r1 = self.r1_gamma > 0 and self.step % self.r1_every == 0
        if do_r1:
            real_in = real_in.detach().requires_grad_(True)
        real_score = D(real_in)
        fake_score = D(self._d_input(fake))
        loss_d = F.relu(1 - real_score).mean() + F.relu(1 + fake_score).mean()
        r1 = torch.zeros(())
        if do_r1:
            (grad,) = torch.autograd.grad(real_score.sum(), real_in, create_graph=True)
            r1 = grad.square().sum(dim=(1, 2, 3)).mean()
            loss_d = loss_d + 0.5 * self.r1_gamma * self.r1_every * r1
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()

        # Generator: non-saturating hinge generator loss.
        D.requires_grad_(False)
        z = torch.randn(n, G.z_dim, generator=self.rng)
        ws = G.mapping(z, update_w_avg=True)
        fake = G.synthesis(ws)
        loss_g = -D(self._d_input(fake)).mean()
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()

        # EMA with a warm-up so early samples are not dominated by the random init.
        beta = min(self.ema_beta, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), G.parameters()):
                p_ema.lerp_(p, 1 - beta)
            for b_ema, b in zip(self.G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)
        self.step += 1
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), "r1": r1.item(),
                "real": real_score.mean().item(), "fake": fake_score.mean().item()}


# ----------------------------------------------------------------------------- output

def save_grid(images: torch.Tensor, path: str, nrow: int, upscale: int = 4, pad: int = 2) -> None:
    """Images in [-1, 1] -> a PNG grid, upscaled with nearest so single pixels stay visible."""
    from PIL import Image
    x = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    x = x.repeat_interleave(upscale, dim=2).repeat_interleave(upscale, dim=3)
    n, c, h, w = x.shape
    ncol = nrow
    nrows = math.ceil(n / ncol)
    canvas = torch.full((c, nrows * (h + pad) + pad, ncol * (w + pad) + pad), 255, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        canvas[:, pad + r * (h + pad):pad + r * (h + pad) + h, pad + q * (w + pad):pad + q * (w + pad) + w] = x[i]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(path)


def fixed_latents(generator: BuiltinGenerator, n: int = 64, seed: int = 1234) -> torch.Tensor:
    return torch.randn(n, generator.z_dim, generator=torch.Generator().manual_seed(seed))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3200, help="training steps (one D and one G update each)")
    parser.add_argument("--minutes", type=float, default=0.0, help="stop after this many minutes (0: no limit)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", default=BUILTIN_WEIGHTS, help="weights file to write")
    parser.add_argument("--samples", default=SAMPLES_PNG, help="sample grid PNG ('' to skip)")
    parser.add_argument("--patches", default=PATCHES_PNG, help="real-patch grid PNG ('' to skip)")
    parser.add_argument("--snapshot-every", type=int, default=0, help="also write the sample grid every N steps")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    sampler = PatchSampler()
    data_rng = torch.Generator().manual_seed(args.seed + 2)
    trainer = GanTrainer(seed=args.seed)
    z_fixed = fixed_latents(trainer.G)
    if args.patches:
        save_grid(sampler.sample(64, torch.Generator().manual_seed(99), jitter=0.0), args.patches, nrow=8)

    start = time.time()
    bar = tqdm(range(args.steps), desc="builtin generator", mininterval=5)
    for step in bar:
        stats = trainer.train_step(sampler.sample(args.batch_size, data_rng))
        if step % 50 == 0:
            bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items()})
        if args.snapshot_every and args.samples and (step + 1) % args.snapshot_every == 0:
            with torch.no_grad():
                save_grid(trainer.G_ema(z_fixed), args.samples, nrow=8)
        if args.minutes and time.time() - start > args.minutes * 60:
            bar.write(f"time limit reached after {step + 1} steps")
            break
    bar.close()

    # The EMA generator's own W centre, for truncation (the tracked one follows the live G).
    with torch.no_grad():
        z = torch.randn(8192, trainer.G_ema.z_dim, generator=torch.Generator().manual_seed(args.seed + 3))
        trainer.G_ema.mapping.w_avg.copy_(trainer.G_ema.mapping(z)[:, 0].mean(dim=0))
    save_builtin_generator(trainer.G_ema, args.out)
    if args.samples:
        with torch.no_grad():
            save_grid(trainer.G_ema(z_fixed), args.samples, nrow=8)
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB) after {trainer.step} steps "
          f"in {(time.time() - start) / 60:.1f} min with {args.threads} thread(s)")


if __name__ == "__main__":
    main()
