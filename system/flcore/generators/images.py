"""Generator images ([0, 1], any size) turned into client inputs."""
import torch
import torchvision.transforms.functional as TF


def to_client_images(images: torch.Tensor, image_shape) -> torch.Tensor:
    """Resize and center-crop to `image_shape` (C, H, W), average to grey for one channel,
    then normalise as client data ([-1, 1])."""
    channels, height, width = image_shape
    if images.shape[-2:] != (height, width):
        images = TF.resize(images, min(height, width), antialias=True)
        images = TF.center_crop(images, [height, width])
    if channels == 1:
        images = images.mean(dim=1, keepdim=True)
    return (images - 0.5) / 0.5
