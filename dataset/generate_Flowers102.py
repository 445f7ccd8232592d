"""Oxford Flowers-102 pooled (train + val + test), at 64 x 64, partitioned over clients, PFLlib style.

    python dataset/generate_Flowers102.py noniid - dir --root DIR [--download] [--num_clients 20] ...

Images are resized so the shorter side is 64, then center-cropped to 64 x 64. The
pathological split gives each client 10 of the 102 classes unless --class_per_client says
otherwise. Reading torchvision's copy needs scipy (for its .mat label files).
"""
import os
import sys

if not __package__:  # run as a script: make `import dataset.…` resolve
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from dataset import generate_common  # noqa: E402

NAME = "Flowers102"
TITLE = "Flowers-102"
NUM_CLASSES = 102
IMAGE_SIZE = 64
CLASS_PER_CLIENT = 10  # the FedKTL paper's pathological setting for Flowers102
SPLITS = ("train", "val", "test")


def square_rgb(image, size: int = IMAGE_SIZE) -> np.ndarray:
    """PIL image -> uint8 [size, size, 3]: shorter side resized to `size`, then center-cropped."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    image = TF.resize(image.convert("RGB"), size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    return np.asarray(TF.center_crop(image, [size, size]), dtype=np.uint8)


def label_names(dataset_class) -> list:
    """torchvision's flower names where it has them, else class_0 ... class_101."""
    names = getattr(dataset_class, "classes", None)
    if names is not None and len(names) == NUM_CLASSES:
        return [str(name) for name in names]
    return [f"class_{i}" for i in range(NUM_CLASSES)]


def load_pool(root, download: bool, dataset_class=None) -> tuple:
    """(x float32 [N, 3, 64, 64] in [-1, 1], y int64 [N], label names) over all three splits."""
    if dataset_class is None:
        from torchvision.datasets import Flowers102 as dataset_class
    generate_common.check_torchvision_root(root, TITLE, download, expected=" (flowers-102/)")
    images, labels = [], []
    for split in SPLITS:
        try:
            dataset = dataset_class(root=root, split=split, download=download)
        except RuntimeError as exc:  # torchvision's "Dataset not found or corrupted"
            raise FileNotFoundError(f"{TITLE} files not found or corrupted under --root {root} "
                                    f"(expected {os.path.join(root, 'flowers-102')}): "
                                    f"add --download to fetch them") from exc
        for image, label in dataset:
            images.append(square_rgb(image))
            labels.append(int(label))
    x = generate_common.pixels_to_unit_range(np.stack(images).transpose(0, 3, 1, 2))  # NHWC -> NCHW
    return x, np.asarray(labels, dtype=np.int64), label_names(dataset_class)


def add_source_arguments(parser) -> None:
    generate_common.add_torchvision_arguments(parser)
    parser.set_defaults(class_per_client=CLASS_PER_CLIENT)


def main(argv=None) -> int:
    return generate_common.run(
        sys.argv[1:] if argv is None else argv, NAME,
        default_out=os.path.join(generate_common.repo_dataset_dir(), NAME),
        load_pool=lambda args: load_pool(args.root, args.download),
        add_source_arguments=add_source_arguments)


if __name__ == "__main__":
    sys.exit(main())
