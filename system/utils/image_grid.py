"""Images as one labelled grid (a PIL image): each image with its label written under it.

Images are client inputs in [-1, 1], (N, C, H, W) with C = 1 (grey) or 3. Small images are
enlarged by a whole factor (nearest neighbour, so every input pixel stays a sharp square)
until their shorter side is at least `MIN_SIDE` pixels, which leaves room under each for a
label in Pillow's default font. Images fill rows of `nrow` left to right, top to bottom,
on a white background with `PADDING` pixels between cells and around the grid; a label
too wide for its cell is cut short with "..".

    cell width  = W * scale
    cell height = H * scale + label strip (0 without labels)
    grid        = (cols * (cell width + PADDING) + PADDING) x (rows * (cell height + PADDING) + PADDING)
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

#: the shorter side of an image in the grid is enlarged to at least this many pixels
MIN_SIDE = 64
#: pixels between cells and around the grid
PADDING = 2
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (0, 0, 0)
#: pixels above and below a label's text in its strip
LABEL_MARGIN = 2
ELLIPSIS = ".."


def default_font():
    return ImageFont.load_default()


def text_height(font) -> int:
    """Height of a line of text in `font` (ascenders to descenders)."""
    left, top, right, bottom = font.getbbox("Ag|")
    return int(bottom - top) if bottom > top else 11


def label_strip_height(font=None) -> int:
    """Height of the strip under each image holding its label."""
    return text_height(font or default_font()) + 2 * LABEL_MARGIN


def upscale_factor(height: int, width: int, min_side: int = MIN_SIDE) -> int:
    """The smallest whole factor that makes the shorter side at least `min_side` (1 for
    images already that large)."""
    return max(1, math.ceil(min_side / max(1, min(height, width))))


@dataclass(frozen=True)
class GridLayout:
    count: int
    cols: int
    rows: int
    cell_width: int  # the enlarged image's width
    image_height: int  # the enlarged image's height
    label_height: int  # 0 without labels
    scale: int

    @property
    def cell_height(self) -> int:
        return self.image_height + self.label_height

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole grid, as PIL gives sizes."""
        return (self.cols * (self.cell_width + PADDING) + PADDING,
                self.rows * (self.cell_height + PADDING) + PADDING)

    def origin(self, index: int) -> tuple[int, int]:
        """(x, y) of the top left corner of image `index`."""
        row, col = divmod(index, self.cols)
        return (PADDING + col * (self.cell_width + PADDING), PADDING + row * (self.cell_height + PADDING))


def grid_layout(count: int, nrow: int, height: int, width: int, labelled: bool, font=None,
                min_side: int = MIN_SIDE) -> GridLayout:
    """Where `count` images of `height` x `width` go, `nrow` to a row (as torchvision's `nrow`)."""
    if count < 1:
        raise ValueError("a grid needs at least one image")
    cols = max(1, min(int(nrow), count))
    scale = upscale_factor(height, width, min_side)
    return GridLayout(count=count, cols=cols, rows=math.ceil(count / cols), cell_width=width * scale,
                      image_height=height * scale, label_height=label_strip_height(font) if labelled else 0,
                      scale=scale)


def to_pixels(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] (N, C, H, W), C = 1 or 3 -> uint8 (N, H, W, 3), rounded as torchvision's
    `save_image` rounds; non-finite values are drawn black."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 1 or 3, H, W), got {tuple(images.shape)}")
    x = torch.nan_to_num(images.detach().cpu().float(), nan=-1.0, posinf=1.0, neginf=-1.0)
    x = ((x + 1) / 2 * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).numpy()


def fit_text(draw: ImageDraw.ImageDraw, text: str, width: int, font) -> str:
    """`text`, cut short with ".." when wider than `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + ELLIPSIS, font=font) > width:
        text = text[:-1]
    return text + ELLIPSIS if text else ""


def labelled_grid(images: torch.Tensor, nrow: int, labels: Optional[Sequence[str]] = None,
                  min_side: int = MIN_SIDE) -> Image.Image:
    """An RGB PIL image of `images` (see the module's docstring) with `labels[i]` centred
    under image i; None (no labels) leaves out the label strips, an empty label leaves its
    strip blank (e.g. under filler images)."""
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    font = default_font()
    pixels = to_pixels(images)
    count, height, width = pixels.shape[:3]
    layout = grid_layout(count, nrow, height, width, labels is not None, font, min_side)
    canvas = np.empty((layout.size[1], layout.size[0], 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    for index, image in enumerate(pixels):
        x, y = layout.origin(index)
        big = image.repeat(layout.scale, axis=0).repeat(layout.scale, axis=1)
        canvas[y:y + layout.image_height, x:x + layout.cell_width] = big
    grid = Image.fromarray(canvas)
    if labels is not None:
        draw = ImageDraw.Draw(grid)
        top_offset = font.getbbox("Ag|")[1]
        for index, label in enumerate(labels):
            text = fit_text(draw, str(label), layout.cell_width - 2, font)
            if not text:
                continue
            x, y = layout.origin(index)
            left = x + (layout.cell_width - draw.textlength(text, font=font)) / 2
            top = y + layout.image_height + LABEL_MARGIN - top_offset
            draw.text((left, top), text, fill=TEXT_COLOUR, font=font)
    return grid


def write_png(grid: Image.Image, file) -> None:
    """`grid` as PNG to an open binary file (as `utils.files.atomic_write` hands one)."""
    grid.save(file, format="png")
