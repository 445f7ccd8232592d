"""The 64 x 64 generators: Tiny-ImageNet from its folder layout, Flowers-102 from torchvision's copy."""
import json

import numpy as np
import pytest
from PIL import Image

from dataset import generate_common, generate_Flowers102, generate_TinyImagenet
from utils import htfl_format

WNIDS = ["n02", "n01", "n03"]  # deliberately unsorted: classes are the sorted wnids
WORDS = {"n01": "goldfish, Carassius auratus", "n02": "tabby, tabby cat", "n03": "crane"}


def write_jpeg(path, color, size=(64, 64), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path, "JPEG")


def make_tiny_imagenet(root, with_words=True):
    """3 wnids x 4 training images, 2 validation images each, one grey and one 80x60 image."""
    folder = root / "tiny-imagenet-200"
    for c, wnid in enumerate(WNIDS):
        for i in range(4):
            write_jpeg(folder / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", (60 * c, 10 * i, 0))
    write_jpeg(folder / "train" / "n01" / "images" / "n01_grey.JPEG", 128, mode="L")
    write_jpeg(folder / "train" / "n02" / "images" / "n02_wide.JPEG", (0, 0, 255), size=(80, 60))
    lines = []
    for c, wnid in enumerate(WNIDS):
        for i in range(2):
            name = f"val_{c}_{i}.JPEG"
            write_jpeg(folder / "val" / "images" / name, (0, 60 * c, 10 * i))
            lines.append(f"{name}\t{wnid}\t0\t0\t63\t63\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(lines))
    write_jpeg(folder / "test" / "images" / "test_0.JPEG", (1, 2, 3))  # unlabelled: must be ignored
    (folder / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    if with_words:
        (folder / "words.txt").write_text("".join(f"{w}\t{WORDS[w]}\n" for w in sorted(WORDS))
                                          + "n09\tunrelated\n")
    return folder


def read_all(folder, num_clients):
    xs, ys = [], []
    for split in ("train", "test"):
        for client in range(num_clients):
            x, y = htfl_format.read_client_split(str(folder), split, client)
            xs.append(x)
            ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


# ---- Tiny-ImageNet ----------------------------------------------------------------------

def test_tiny_imagenet_is_written_at_64x64_with_its_classes_and_names(tmp_path, capsys):
    make_tiny_imagenet(tmp_path / "src")
    out = tmp_path / "TinyImagenet"
    argv = ["noniid", "-", "dir", "--root", str(tmp_path / "src"), "--out", str(out), "--num_clients", "2"]
    assert generate_TinyImagenet.main(argv) == 0
    assert "2 clients, 3 classes, 20 samples" in capsys.readouterr().out  # 14 train + 6 val, no test

    config = json.loads((out / "config.json").read_text())
    assert config["num_classes"] == 3 and config["num_clients"] == 2
    assert config["label_names"] == ["goldfish", "tabby", "crane"]  # n01, n02, n03
    assert config["image_shape"] == [3, 64, 64]
    x, y = read_all(out, 2)
    assert x.shape == (20, 3, 64, 64) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    assert np.bincount(y).tolist() == [7, 7, 6]  # n01 has the grey image, n02 the 80x60 one


def test_tiny_imagenet_root_may_be_the_dataset_folder_and_names_fall_back_to_wnids(tmp_path):
    folder = make_tiny_imagenet(tmp_path / "src", with_words=False)
    x, y, names = generate_TinyImagenet.load_pool(str(folder))
    assert names == ["n01", "n02", "n03"]
    assert np.asarray(x).shape == (20, 3, 64, 64)
    grey = np.asarray(x[np.flatnonzero(y == 0)])
    assert any(np.allclose(img[0], img[1]) and np.allclose(img[1], img[2]) for img in grey)


def test_pixels_stay_bytes_until_written():
    pixels = np.array([[[[0, 255]]], [[[51, 102]]]], dtype=np.uint8)
    view = generate_TinyImagenet.UnitRangePixels(pixels)
    assert len(view) == 2 and view.pixels.dtype == np.uint8
    one = np.asarray(view[np.array([1])])
    assert one.dtype == np.float32 and np.allclose(one, [[[[-0.6, -0.2]]]])


def test_tiny_imagenet_missing_root_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["noniid", "-", "dir", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]
    assert generate_TinyImagenet.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --root") and "train/<wnid>/images" in error and "\n" not in error
    assert generate_TinyImagenet.main(["noniid", "-", "dir", "--out", str(tmp_path / "o")]) == 2
    assert "--root" in capsys.readouterr().err


def test_val_label_outside_the_classes_is_an_error(tmp_path, capsys):
    folder = make_tiny_imagenet(tmp_path / "src")
    with open(folder / "val" / "val_annotations.txt", "a") as f:
        f.write("val_x.JPEG\tn99\t0\t0\t1\t1\n")
    assert generate_TinyImagenet.main(["iid", "-", "-", "--root", str(folder), "--out", str(tmp_path / "o"),
                                       "--num_clients", "2"]) == 2
    assert "n99" in capsys.readouterr().err


# ---- Flowers-102 ------------------------------------------------------------------------

def test_flowers_missing_data_is_a_one_line_error_naming_root_and_download(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    argv = ["noniid", "-", "dir", "--root", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]
    assert generate_Flowers102.main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "Flowers-102 files not found" in error and "--download" in error and "\n" not in error
    assert generate_Flowers102.main(["noniid", "-", "dir", "--root", str(tmp_path / "absent"),
                                     "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert generate_Flowers102.main(["noniid", "-", "dir", "--out", str(tmp_path / "o")]) == 2
    assert "--root" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


class FakeFlowers:
    """torchvision's Flowers102 interface: (PIL image, label) items per split, no `classes`."""
    sizes = {"train": (100, 80), "val": (50, 70), "test": (64, 64)}

    def __init__(self, root, split, download):
        assert not download
        self.items = [(Image.new("RGB", self.sizes[split], (label * 2, 0, 0)), label) for label in (0, 101)]

    def __iter__(self):
        return iter(self.items)


def test_flowers_pool_pools_all_splits_at_64x64(tmp_path):
    x, y, names = generate_Flowers102.load_pool(str(tmp_path), False, dataset_class=FakeFlowers)
    assert x.shape == (6, 3, 64, 64) and x.dtype == np.float32
    assert y.tolist() == [0, 101] * 3
    assert names == [f"class_{i}" for i in range(102)]
    assert np.allclose(x[1, 0], (202 / 255 - 0.5) / 0.5, atol=0.01)


def test_flowers_names_come_from_torchvision():
    from torchvision.datasets import Flowers102
    names = generate_Flowers102.label_names(Flowers102)
    assert len(names) == 102 and (names[0] == "pink primrose" or names[0] == "class_0")


@pytest.mark.parametrize("module,expected", [(generate_Flowers102, 10), (generate_TinyImagenet, 20)])
def test_pathological_default_is_the_papers_classes_per_client(module, expected):
    args = generate_common.parse_args(["noniid", "-", "pat"], module.NAME, "out", module.add_source_arguments)
    assert args.class_per_client == expected
    args = generate_common.parse_args(["noniid", "-", "pat", "--class_per_client", "3"], module.NAME, "out",
                                      module.add_source_arguments)
    assert args.class_per_client == 3
