"""The two-convolution CNN of the FedAvg paper, as a feature trunk (no classifier)."""
from torch import nn

from utils.errors import UserError

# Width of the trunk's last layer; the classifier that follows it is the head.
FEDAVG_CNN_WIDTH = 512


def _after_conv_and_pool(size: int) -> int:
    """Spatial size after a 5x5 valid convolution and a 2x2 max-pool."""
    return (size - 4) // 2


def fedavg_cnn_flat_dim(image_size: int) -> int:
    """Length of the flattened conv output: 1600 for 32x32 inputs, 10816 for 64x64."""
    side = _after_conv_and_pool(_after_conv_and_pool(image_size))
    if side < 1:
        raise UserError(
            f"FedAvgCNN needs images of at least 16x16 pixels, got {image_size}x{image_size}; "
            "use a larger image size or another model"
        )
    return 64 * side * side


class FedAvgCNN(nn.Module):
    """conv5x5(→32)-ReLU-pool, conv5x5(→64)-ReLU-pool, flatten, Linear(→512)-ReLU."""

    def __init__(self, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.fc1 = nn.Sequential(
            nn.Linear(fedavg_cnn_flat_dim(image_size), FEDAVG_CNN_WIDTH),
            nn.ReLU(inplace=True),
        )
        self.out_features = FEDAVG_CNN_WIDTH

    def forward(self, x):
        return self.fc1(self.features(x))
