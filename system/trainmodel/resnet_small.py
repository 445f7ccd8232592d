"""Shallow ResNets (ResNet4/6/8/10): an ImageNet-style stem plus 1-4 single-block stages.

Each extra stage doubles the width (64, 128, 256, 512) and halves the resolution, so the
pooled feature vector has 64, 128, 256 or 512 entries.
"""
import torch
from torch import nn

STAGE_WIDTHS = (64, 128, 256, 512)

# Number of one-block stages for each depth (depth = stem conv + 2 per block + classifier).
STAGES_BY_DEPTH = {4: 1, 6: 2, 8: 3, 10: 4}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (1x1 projection when shapes change)."""

    def __init__(self, in_width: int, out_width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_width, out_width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_width)
        self.conv2 = nn.Conv2d(out_width, out_width, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_width)
        self.relu = nn.ReLU(inplace=True)
        if stride != 1 or in_width != out_width:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_width, out_width, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_width),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ShallowResNet(nn.Module):
    """Stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool), `num_stages` blocks, global average pool."""

    def __init__(self, num_stages: int, in_channels: int = 3):
        super().__init__()
        if not 1 <= num_stages <= len(STAGE_WIDTHS):
            raise ValueError(f"num_stages must be in 1..{len(STAGE_WIDTHS)}, got {num_stages}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, STAGE_WIDTHS[0], 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(STAGE_WIDTHS[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        stages = []
        in_width = STAGE_WIDTHS[0]
        for index, width in enumerate(STAGE_WIDTHS[:num_stages]):
            stages.append(BasicBlock(in_width, width, stride=1 if index == 0 else 2))
            in_width = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.out_features = in_width
        self._init_weights()

    def _init_weights(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return torch.flatten(self.pool(x), 1)


def shallow_resnet(depth: int, in_channels: int = 3) -> ShallowResNet:
    return ShallowResNet(STAGES_BY_DEPTH[depth], in_channels=in_channels)
