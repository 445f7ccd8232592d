"""Tiny-ImageNet (200 classes, 64 x 64) pooled (train + val) and partitioned over clients, PFLlib style.

    python dataset/generate_TinyImagenet.py noniid - dir --root DIR [--num_clients 20] ...

--root is the unpacked `tiny-imagenet-200` folder (or the folder holding it):
    train/<wnid>/images/*.JPEG, val/images/*.JPEG + val/val_annotations.txt,
    optional wnids.txt (the class list) and words.txt (the class names).
The test split has no labels and is left out. Classes are the wnids in sorted order; a
class's name is the first of its names in words.txt (the whole entry when two classes
share that first name), else its wnid. Grey images become RGB; images of another size are
resized (shorter side) and center-cropped to 64 x 64. The pathological split gives each
client 20 classes unless --class_per_client says otherwise.
"""
import glob
import os
import sys

if not __package__:  # run as a script: make `import dataset.…` resolve
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from dataset import generate_common  # noqa: E402

NAME = "TinyImagenet"
TITLE = "Tiny-ImageNet"
FOLDER = "tiny-imagenet-200"
IMAGE_SIZE = 64
CLASS_PER_CLIENT = 20  # the FedKTL paper's pathological setting for Tiny-ImageNet
IMAGE_PATTERNS = ("*.JPEG", "*.jpeg", "*.jpg", "*.JPG", "*.png")


class UnitRangePixels:
    """uint8 NCHW pixels that become float32 in [-1, 1] only when a client's slice is written.

    The float pool would take 5.4 GB (110,000 x 3 x 64 x 64 x 4 bytes); this keeps 1.4 GB of
    bytes instead. Indexing gives another view; numpy conversion gives the floats.
    """

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index) -> "UnitRangePixels":
        return UnitRangePixels(self.pixels[index])

    @property
    def shape(self) -> tuple:
        return self.pixels.shape

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        floats = generate_common.pixels_to_unit_range(self.pixels)
        return floats if dtype is None else floats.astype(dtype)


def dataset_folder(root) -> str:
    """`root` itself or `root/tiny-imagenet-200`, whichever holds train/; else a one-line error."""
    if not root:
        raise ValueError(f"{TITLE} needs --root DIR (the unpacked {FOLDER} folder)")
    for folder in (root, os.path.join(root, FOLDER)):
        if os.path.isdir(os.path.join(folder, "train")):
            return folder
    raise FileNotFoundError(f"--root {root} does not hold {TITLE}: expected train/<wnid>/images/*.JPEG "
                            f"in it or in {os.path.join(root, FOLDER)}")


def list_images(folder: str) -> list:
    return sorted(path for pattern in IMAGE_PATTERNS for path in glob.glob(os.path.join(folder, pattern)))


def read_wnids(folder: str) -> list:
    """The class list: wnids.txt when present, else the train subfolders; sorted."""
    path = os.path.join(folder, "wnids.txt")
    if os.path.isfile(path):
        with open(path) as f:
            wnids = [line.strip() for line in f if line.strip()]
    else:
        train = os.path.join(folder, "train")
        wnids = [name for name in os.listdir(train) if os.path.isdir(os.path.join(train, name))]
    if not wnids:
        raise FileNotFoundError(f"no classes in {os.path.join(folder, 'train')}: expected train/<wnid>/images/")
    return sorted(wnids)


def read_label_names(folder: str, wnids: list) -> list:
    """First name in words.txt per wnid (the whole entry if that name is taken twice); else the wnid."""
    entries = {}
    path = os.path.join(folder, "words.txt")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                wnid, _, words = line.rstrip("\n").partition("\t")
                entries[wnid.strip()] = words.strip()
    first = [entries.get(w, "").split(",")[0].strip() or w for w in wnids]
    return [entries[w] if first.count(name) > 1 and w in entries else name for w, name in zip(wnids, first)]


def train_items(folder: str, wnids: list) -> list:
    """(path, label) of every training image."""
    items = []
    for label, wnid in enumerate(wnids):
        images = os.path.join(folder, "train", wnid, "images")
        paths = list_images(images) or list_images(os.path.join(folder, "train", wnid))
        if not paths:
            raise FileNotFoundError(f"no images for class {wnid} in {images}")
        items += [(path, label) for path in paths]
    return items


def val_items(folder: str, wnids: list) -> list:
    """(path, label) of every validation image, labelled by val/val_annotations.txt."""
    annotations = os.path.join(folder, "val", "val_annotations.txt")
    if not os.path.isfile(annotations):
        return []
    label_of = {wnid: label for label, wnid in enumerate(wnids)}
    items = []
    with open(annotations) as f:
        for line in f:
            fields = line.split("\t")
            if len(fields) < 2:
                continue
            name, wnid = fields[0].strip(), fields[1].strip()
            if wnid not in label_of:
                raise ValueError(f"{annotations} labels {name} with {wnid}, which is not one of the "
                                 f"{len(wnids)} training classes")
            items.append((os.path.join(folder, "val", "images", name), label_of[wnid]))
    return items


def read_image(path: str, size: int = IMAGE_SIZE) -> np.ndarray:
    """uint8 [size, size, 3]; other sizes are resized (shorter side) and center-cropped."""
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (size, size):
            import torchvision.transforms.functional as TF
            image = TF.center_crop(TF.resize(image, size, antialias=True), [size, size])
        return np.asarray(image, dtype=np.uint8)


def load_pool(root) -> tuple:
    """(x [N, 3, 64, 64] in [-1, 1] as UnitRangePixels, y int64 [N], label names)."""
    folder = dataset_folder(root)
    wnids = read_wnids(folder)
    items = train_items(folder, wnids) + val_items(folder, wnids)
    pixels = np.empty((len(items), 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, (path, _) in enumerate(items):
        pixels[i] = read_image(path).transpose(2, 0, 1)
    labels = np.array([label for _, label in items], dtype=np.int64)
    return UnitRangePixels(pixels), labels, read_label_names(folder, wnids)


def add_source_arguments(parser) -> None:
    parser.add_argument("--root", help=f"the unpacked {FOLDER} folder (or the folder holding it)")
    parser.set_defaults(class_per_client=CLASS_PER_CLIENT)


def main(argv=None) -> int:
    return generate_common.run(
        sys.argv[1:] if argv is None else argv, NAME,
        default_out=os.path.join(generate_common.repo_dataset_dir(), NAME),
        load_pool=lambda args: load_pool(args.root),
        add_source_arguments=add_source_arguments)


if __name__ == "__main__":
    sys.exit(main())
