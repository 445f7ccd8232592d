"""Client models split into a feature extractor (`base`) and a linear classifier (`head`).

Every model ends its base in exactly `feature_dim` features, whatever its trunk: the
trunk's pooled feature vector is averaged down (or repeated up) to `feature_dim` with
`nn.AdaptiveAvgPool1d`. Heterogeneous clients can therefore exchange heads, prototypes
and feature-space knowledge although their trunks differ.

Models are looked up in a registry of constructors by a case- and punctuation-
insensitive name, so `ResNet18`, `resnet18` and `resnet-18` are the same model.
"""
import math
import re
from contextlib import nullcontext
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import torch
import torchvision.models as tvm
from torch import nn

from trainmodel.cnn import FedAvgCNN
from trainmodel.resnet_small import shallow_resnet
from utils.errors import UserError


class BaseHeadSplit(nn.Module):
    """`forward(x) == head(base(x))`; `base` maps images to [N, feature_dim]."""

    def __init__(self, base: nn.Module, head: nn.Module, arch: str = ""):
        super().__init__()
        self.base = base
        self.head = head
        self.arch = arch
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
        self.feature_dim = linears[0].in_features
        self.num_classes = linears[-1].out_features

    def forward(self, x):
        return self.head(self.base(x))

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, feature_dim={self.feature_dim}, num_classes={self.num_classes}"


class Trunk(NamedTuple):
    module: nn.Module  # images -> [N, width]
    width: int


# --- replacing the first convolution when inputs are not RGB -------------------------

def _conv_like(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    return nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )


def _kaiming_fan_out(conv: nn.Conv2d) -> nn.Conv2d:
    # The scheme torchvision's ResNet and MobileNetV2 use for every convolution.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _googlenet_init(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.trunc_normal_(conv.weight, mean=0.0, std=0.01, a=-2, b=2)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _vit_patch_init(conv: nn.Conv2d) -> nn.Conv2d:
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    nn.init.trunc_normal_(conv.weight, std=math.sqrt(1.0 / fan_in))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


# --- trunk constructors ---------------------------------------------------------------

def _fedavg_cnn(in_channels: int, image_size: int) -> Trunk:
    trunk = FedAvgCNN(in_channels=in_channels, image_size=image_size)
    return Trunk(trunk, trunk.out_features)


def _shallow_resnet(depth: int):
    def build(in_channels: int, image_size: int) -> Trunk:
        trunk = shallow_resnet(depth, in_channels=in_channels)
        return Trunk(trunk, trunk.out_features)

    return build


def _torchvision_resnet(constructor: Callable[..., nn.Module]):
    def build(in_channels: int, image_size: int) -> Trunk:
        trunk = constructor(weights=None)
        width = trunk.fc.in_features
        trunk.fc = nn.Identity()
        if in_channels != 3:
            trunk.conv1 = _kaiming_fan_out(_conv_like(trunk.conv1, in_channels))
        return Trunk(trunk, width)

    return build


def _googlenet(in_channels: int, image_size: int) -> Trunk:
    trunk = tvm.googlenet(weights=None, aux_logits=False, init_weights=True)
    width = trunk.fc.in_features
    # Only the last linear layer goes; GoogLeNet's dropout before it stays, as in HtFLlib.
    trunk.fc = nn.Identity()
    if in_channels != 3:
        trunk.conv1.conv = _googlenet_init(_conv_like(trunk.conv1.conv, in_channels))
    return Trunk(trunk, width)


def _mobilenet_v2(in_channels: int, image_size: int) -> Trunk:
    trunk = tvm.mobilenet_v2(weights=None)
    classifier_linear = trunk.classifier[-1]
    width = classifier_linear.in_features
    # Keep the classifier's dropout for the same reason as GoogLeNet's.
    trunk.classifier[-1] = nn.Identity()
    if in_channels != 3:
        first = trunk.features[0][0]
        trunk.features[0][0] = _kaiming_fan_out(_conv_like(first, in_channels))
    return Trunk(trunk, width)


def _vision_transformer(constructor: Callable[..., nn.Module], patch_size: int, name: str):
    def build(in_channels: int, image_size: int) -> Trunk:
        if image_size % patch_size != 0:
            raise UserError(
                f"{name} needs an image size divisible by {patch_size}, got {image_size}; "
                "resize the images or pick another model"
            )
        trunk = constructor(weights=None, image_size=image_size)
        width = trunk.hidden_dim
        trunk.heads = nn.Identity()  # the class token's embedding is the feature vector
        if in_channels != 3:
            trunk.conv_proj = _vit_patch_init(_conv_like(trunk.conv_proj, in_channels))
        return Trunk(trunk, width)

    return build


_CONSTRUCTORS: Dict[str, Callable[[int, int], Trunk]] = {
    "FedAvgCNN": _fedavg_cnn,
    "ResNet4": _shallow_resnet(4),
    "ResNet6": _shallow_resnet(6),
    "ResNet8": _shallow_resnet(8),
    "ResNet10": _shallow_resnet(10),
    "ResNet18": _torchvision_resnet(tvm.resnet18),
    "ResNet34": _torchvision_resnet(tvm.resnet34),
    "ResNet50": _torchvision_resnet(tvm.resnet50),
    "ResNet101": _torchvision_resnet(tvm.resnet101),
    "ResNet152": _torchvision_resnet(tvm.resnet152),
    "GoogLeNet": _googlenet,
    "MobileNetV2": _mobilenet_v2,
    "ViT-B/16": _vision_transformer(tvm.vit_b_16, 16, "ViT-B/16"),
    "ViT-B/32": _vision_transformer(tvm.vit_b_32, 32, "ViT-B/32"),
}

MODEL_NAMES: Tuple[str, ...] = tuple(_CONSTRUCTORS)
VIT_MODELS = ("ViT-B/16", "ViT-B/32")
#: width of the hidden layer of the original code's ViT head (ViT-B's embedding width)
VIT_HEAD_HIDDEN = 768


def _name_key(name: str) -> str:
    """Lower-case letters and digits only: `ViT-B/16`, `vit_b_16`, `VITB16` share one key."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


_BY_KEY: Dict[str, str] = {_name_key(name): name for name in MODEL_NAMES}


def find_model_name(name: str) -> Optional[str]:
    """The canonical spelling of a model name, or None if it names no model."""
    return _BY_KEY.get(_name_key(name))


def canonical_model_name(name: str) -> str:
    canonical = find_model_name(name)
    if canonical is None:
        raise UserError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    return canonical


def _check_positive(value: int, what: str, flag: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UserError(f"{what} must be a positive integer, got {value!r}; fix {flag}")


def build_model(
    name: str,
    num_classes: int,
    feature_dim: int = 512,
    image_size: int = 32,
    in_channels: int = 3,
    seed: Optional[int] = None,
    vit_mlp_head: bool = False,
) -> BaseHeadSplit:
    """A freshly initialised `BaseHeadSplit` for the named architecture.

    With `seed`, initialisation draws from its own generator state, so the weights depend
    on `seed` alone and the caller's global RNG stream is left untouched. `vit_mlp_head`
    gives the ViTs the original FedKTL/HtFLlib code's head, Linear(fd, 768) - Tanh -
    Linear(768, C), instead of one Linear(fd, C); other architectures ignore it.
    """
    arch = canonical_model_name(name)
    _check_positive(num_classes, "the number of classes", "the dataset")
    _check_positive(feature_dim, "the feature dimension", "-fd")
    _check_positive(image_size, "the image size", "the dataset")
    _check_positive(in_channels, "the number of image channels", "the dataset")

    # fork_rng restores the CPU generator afterwards; seeding only the CPU generator
    # (not torch.manual_seed) leaves any CUDA generators alone too.
    rng_scope = torch.random.fork_rng(devices=[]) if seed is not None else nullcontext()
    with rng_scope:
        if seed is not None:
            torch.default_generator.manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
        trunk = _CONSTRUCTORS[arch](in_channels, image_size)
        if trunk.width == feature_dim:
            base = trunk.module
        else:
            base = nn.Sequential(trunk.module, nn.AdaptiveAvgPool1d(feature_dim))
        if vit_mlp_head and arch in VIT_MODELS:
            head = nn.Sequential(nn.Linear(feature_dim, VIT_HEAD_HIDDEN), nn.Tanh(),
                                 nn.Linear(VIT_HEAD_HIDDEN, num_classes))
        else:
            head = nn.Linear(feature_dim, num_classes)
    return BaseHeadSplit(base, head, arch=arch)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters (optionally only those with requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
