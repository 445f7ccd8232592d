"""utils.image_grid: generated images as a grid with each image's label under it, and the
PNG a FedKTL run writes with it."""
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import main
from flcore.servers.serverbase import Server
from tests.helpers import make_tiny_generator
from utils.errors import UserError
from utils.image_grid import (BACKGROUND, MIN_SIDE, PADDING, grid_layout, label_strip_height, labelled_grid,
                              upscale_factor)


def images_of_pixels(pixels: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) -> the [-1, 1] floats that the grid draws as those pixels."""
    return torch.tensor(pixels, dtype=torch.float32) / 255 * 2 - 1


def random_pixels(count, channels, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, channels, size, size), dtype=np.uint8)


def cell(grid: Image.Image, layout, index: int) -> np.ndarray:
    """The enlarged image `index` of a grid, as uint8 (H, W, 3)."""
    x, y = layout.origin(index)
    return np.asarray(grid)[y:y + layout.image_height, x:x + layout.cell_width]


def strip(grid: Image.Image, layout, index: int) -> np.ndarray:
    """The label strip under image `index`."""
    x, y = layout.origin(index)
    top = y + layout.image_height
    return np.asarray(grid)[top:top + layout.label_height, x:x + layout.cell_width]


def blank(region: np.ndarray) -> bool:
    return bool(np.all(region == np.array(BACKGROUND, dtype=np.uint8)))


# ---- layout ---------------------------------------------------------------------------------

def test_small_images_are_enlarged_by_a_whole_factor_to_at_least_min_side():
    assert MIN_SIDE == 64
    assert upscale_factor(16, 16) == 4 and upscale_factor(28, 28) == 3 and upscale_factor(32, 32) == 2
    assert upscale_factor(64, 64) == 1 and upscale_factor(224, 224) == 1 and upscale_factor(32, 48) == 2


@pytest.mark.parametrize("count, nrow, cols, rows", [(10, 10, 10, 1), (13, 5, 5, 3), (3, 10, 3, 1), (20, 10, 10, 2)])
def test_grid_size_follows_count_nrow_and_the_label_strip(count, nrow, cols, rows):
    strip_height = label_strip_height()
    assert strip_height >= 10  # room for a line of the default font
    grid = labelled_grid(torch.zeros(count, 3, 16, 16), nrow, [str(i) for i in range(count)])
    assert grid.size == (cols * (64 + PADDING) + PADDING, rows * (64 + strip_height + PADDING) + PADDING)
    assert grid.mode == "RGB"
    layout = grid_layout(count, nrow, 16, 16, labelled=True)
    assert grid.size == layout.size and (layout.cols, layout.rows) == (cols, rows)
    # Without labels there is no strip.
    bare = labelled_grid(torch.zeros(count, 3, 16, 16), nrow)
    assert bare.size == (cols * (64 + PADDING) + PADDING, rows * (64 + PADDING) + PADDING)


def test_large_images_keep_their_size():
    grid = labelled_grid(torch.zeros(2, 3, 70, 90), 2, ["a", "b"])
    assert grid.size == (2 * (90 + PADDING) + PADDING, 70 + label_strip_height() + 2 * PADDING)


# ---- pixels and labels ----------------------------------------------------------------------

def test_each_cell_holds_its_image_enlarged_by_nearest_neighbour():
    pixels = random_pixels(5, 3, 16)
    grid = labelled_grid(images_of_pixels(pixels), 3, ["a", "b", "c", "d", "e"])
    layout = grid_layout(5, 3, 16, 16, labelled=True)
    for index in range(5):
        expected = pixels[index].transpose(1, 2, 0).repeat(4, axis=0).repeat(4, axis=1)
        assert np.array_equal(cell(grid, layout, index), expected), index
    # Padding around and between cells, and the unused last cell, are background.
    array = np.asarray(grid)
    assert blank(array[:PADDING]) and blank(array[:, :PADDING]) and blank(array[-PADDING:])
    x, y = layout.origin(5)
    assert blank(array[y:y + layout.cell_height, x:x + layout.cell_width])


def test_values_outside_the_range_are_clipped_and_non_finite_ones_drawn_black():
    images = torch.tensor([[[[-3.0, 5.0], [float("nan"), 0.0]]]]).repeat(1, 3, 1, 1)
    grid = labelled_grid(images, 1)
    layout = grid_layout(1, 1, 2, 2, labelled=False)
    assert layout.scale == 32
    image = cell(grid, layout, 0)
    assert tuple(image[0, 0]) == (0, 0, 0) and tuple(image[0, 40]) == (255, 255, 255)
    assert tuple(image[40, 0]) == (0, 0, 0) and tuple(image[40, 40]) in ((127, 127, 127), (128, 128, 128))


def test_grey_images_are_drawn_grey():
    pixels = random_pixels(4, 1, 28, seed=1)
    grid = labelled_grid(images_of_pixels(pixels), 2, ["0", "1", "2", "3"])
    layout = grid_layout(4, 2, 28, 28, labelled=True)
    assert layout.scale == 3
    assert grid.size == (2 * (84 + PADDING) + PADDING, 2 * (84 + label_strip_height() + PADDING) + PADDING)
    for index in range(4):
        expected = pixels[index, 0].repeat(3, axis=0).repeat(3, axis=1)
        image = cell(grid, layout, index)
        for channel in range(3):
            assert np.array_equal(image[..., channel], expected)
        assert not blank(strip(grid, layout, index))


def test_labels_are_written_under_their_images_and_differ_between_labels():
    images = torch.zeros(3, 3, 32, 32)
    grid = labelled_grid(images, 3, ["cat", "dog", ""])
    layout = grid_layout(3, 3, 32, 32, labelled=True)
    cat, dog, empty = (strip(grid, layout, i) for i in range(3))
    assert not blank(cat) and not blank(dog)  # text was drawn
    assert not np.array_equal(cat, dog)
    assert blank(empty)  # an empty label (a filler image) leaves its strip blank
    # The same label draws the same strip wherever it is.
    again = labelled_grid(images, 3, ["dog", "cat", "dog"])
    assert np.array_equal(strip(again, layout, 0), dog) and np.array_equal(strip(again, layout, 2), dog)
    assert np.array_equal(strip(again, layout, 1), cat)
    # Labels are text under the image only: the image cells are untouched.
    assert all(np.all(cell(grid, layout, i) == 127) or np.all(cell(grid, layout, i) == 128) for i in range(3))


def test_a_label_too_wide_for_its_cell_is_cut_short_inside_it():
    grid = labelled_grid(torch.zeros(2, 3, 16, 16), 2, ["a very long class name indeed, far too wide", "b"])
    layout = grid_layout(2, 2, 16, 16, labelled=True)
    array = np.asarray(grid)
    x, y = layout.origin(1)
    between = array[y + layout.image_height:y + layout.cell_height, x - PADDING:x]
    assert blank(between)  # nothing spilled into the padding between the two cells
    assert not blank(strip(grid, layout, 0))


def test_labels_must_match_the_images():
    with pytest.raises(ValueError, match="2 labels for 3 images"):
        labelled_grid(torch.zeros(3, 3, 8, 8), 3, ["a", "b"])
    with pytest.raises(ValueError, match="images must be"):
        labelled_grid(torch.zeros(3, 2, 8, 8), 3)


# ---- the server's PNG -----------------------------------------------------------------------

def test_save_image_grid_writes_the_labelled_png(tmp_path):
    holder = SimpleNamespace(run_dir=str(tmp_path / "run"), tensorboard=None)
    pixels = random_pixels(4, 3, 16, seed=2)
    Server.save_image_grid(holder, images_of_pixels(pixels), "grid.png", nrow=2, labels=["w", "x", "y", "z"])
    with Image.open(tmp_path / "run" / "grid.png") as grid:
        grid.load()
    layout = grid_layout(4, 2, 16, 16, labelled=True)
    assert grid.format == "PNG" and grid.size == layout.size
    assert np.array_equal(cell(grid, layout, 3), pixels[3].transpose(1, 2, 0).repeat(4, axis=0).repeat(4, axis=1))
    assert [f for f in os.listdir(tmp_path / "run")] == ["grid.png"]  # no temporary file left


def test_a_full_disk_while_saving_a_grid_is_one_line_and_leaves_no_file(tmp_path, monkeypatch):
    import utils.image_grid

    def no_space(grid, file):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(utils.image_grid, "write_png", no_space)
    holder = SimpleNamespace(run_dir=str(tmp_path / "run"), tensorboard=None)
    with pytest.raises(UserError, match="No space left on device"):
        Server.save_image_grid(holder, torch.zeros(2, 3, 4, 4), "grid.png", nrow=2, labels=["a", "b"])
    assert os.listdir(tmp_path / "run") == []


def test_a_fedktl_run_writes_a_labelled_grid_of_one_image_per_class(data_root, tmp_path):
    generator = make_tiny_generator(str(tmp_path / "tiny.pt"))
    out = tmp_path / "out"
    argv = ["-data", "Tiny", "--data_root", data_root, "-nc", "4", "-gr", "1", "-dev", "cpu", "--out", str(out),
            "-se", "1", "--threads", "1", "-algo", "FedKTL", "-GPath", generator, "--save_generated_every", "1"]
    assert main.main(argv) == 0
    path = out / "Tiny_FedKTL_test_0" / "generated_round_0000.png"
    with Image.open(path) as grid:
        grid.load()
    assert grid.format == "PNG"
    # Tiny: 10 classes ("0" ... "9") of 16x16 images, one image per class in a row of 10,
    # each enlarged 4x and labelled with its class.
    layout = grid_layout(10, 10, 16, 16, labelled=True)
    assert grid.size == layout.size == (10 * (64 + PADDING) + PADDING, 64 + label_strip_height() + 2 * PADDING)
    strips = [strip(grid, layout, i) for i in range(10)]
    assert not any(blank(s) for s in strips)
    assert not np.array_equal(strips[1], strips[7])
    assert np.array_equal(strips[7], strip(labelled_grid(torch.zeros(10, 3, 16, 16), 10,
                                                         [str(i) for i in range(10)]), layout, 7))
