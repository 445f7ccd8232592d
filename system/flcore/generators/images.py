"""Generator images ([0, 1], any size) turned into client inputs, and when to save them."""
import torch
import torchvision.transforms.functional as TF


def to_client_images(images: torch.Tensor, image_shape, antialias: bool = True) -> torch.Tensor:
    """Resize (bilinear; `antialias=False` as the original code's torchvision did) and
    center-crop to `image_shape` (C, H, W), average to grey for one channel, then normalise
    as client data ([-1, 1])."""
    channels, height, width = image_shape
    if images.shape[-2:] != (height, width):
        images = TF.resize(images, min(height, width), antialias=antialias)
        images = TF.center_crop(images, [height, width])
    if channels == 1:
        images = images.mean(dim=1, keepdim=True)
    return (images - 0.5) / 0.5


def image_round_due(round_idx: int, every, global_rounds: int) -> bool:
    """Whether round `round_idx`'s images are saved. `every` N: every N-th round (0: never);
    None: rounds 0, 1, 2, 5, 10, 20, 50, 100, ... and the last, so a 2,000-round run keeps
    about a dozen grids."""
    if every is not None:
        return bool(every) and round_idx % every == 0
    if round_idx in (0, global_rounds - 1):
        return True
    scale = 1
    while scale <= round_idx:
        if round_idx in (scale, 2 * scale, 5 * scale):
            return True
        scale *= 10
    return False
