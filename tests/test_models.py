import pytest
import torch
from torch import nn

from trainmodel.cnn import fedavg_cnn_flat_dim
from trainmodel.families import (
    FAMILIES,
    FAMILY_ALIASES,
    build_client_models,
    client_architecture,
    resolve_family,
)
from trainmodel.models import (
    MODEL_NAMES,
    BaseHeadSplit,
    build_model,
    canonical_model_name,
    count_parameters,
)
from utils.errors import UserError
from utils.seeding import derive_seed

HEAVY = {"ResNet101", "ResNet152", "ViT-B/16", "ViT-B/32"}
LIGHT = [name for name in MODEL_NAMES if name not in HEAVY]


def _images(n=2, channels=3, size=32, seed=0):
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", LIGHT)
def test_light_models_split_and_train(name):
    model = build_model(name, num_classes=7, feature_dim=96, seed=1)
    assert isinstance(model, BaseHeadSplit)
    assert isinstance(model.head, nn.Linear)
    assert (model.head.in_features, model.head.out_features) == (96, 7)
    model.train()
    x = _images()
    features = model.base(x)
    logits = model.head(features)
    assert features.shape == (2, 96)
    assert logits.shape == (2, 7)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.head.parameters())
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(x), model.head(model.base(x)))


@pytest.mark.parametrize("name", sorted(HEAVY))
def test_heavy_models_forward(name):
    model = build_model(name, num_classes=10, seed=2).eval()
    with torch.no_grad():
        features = model.base(_images())
        logits = model.head(features)
    assert features.shape == (2, 512)
    assert logits.shape == (2, 10)


def test_fedavg_cnn_flat_dim_follows_image_size():
    assert fedavg_cnn_flat_dim(32) == 1600
    assert fedavg_cnn_flat_dim(64) == 10816
    model = build_model("FedAvgCNN", num_classes=200, image_size=64, seed=0)
    assert model.base.features[0].in_channels == 3
    assert model.base.fc1[0].in_features == 10816
    out = model(_images(size=64))
    assert out.shape == (2, 200)
    assert model.base(_images(size=64)).shape == (2, 512)


def test_fedavg_cnn_rejects_tiny_images():
    with pytest.raises(UserError, match="at least 16x16"):
        build_model("FedAvgCNN", num_classes=10, image_size=12)


@pytest.mark.parametrize("name, width", [("ResNet4", 64), ("ResNet6", 128), ("ResNet8", 256), ("ResNet10", 512)])
def test_shallow_resnet_trunk_widths(name, width):
    model = build_model(name, num_classes=10, feature_dim=width, seed=0)
    # A trunk that already gives feature_dim gets no resizing op.
    assert not any(isinstance(m, nn.AdaptiveAvgPool1d) for m in model.base.modules())
    assert model.base(_images()).shape == (2, width)


def test_wider_features_are_averaged_down():
    model = build_model("ResNet50", num_classes=10, feature_dim=512, seed=0).eval()
    trunk, resize = model.base[0], model.base[1]
    assert isinstance(resize, nn.AdaptiveAvgPool1d)
    with torch.no_grad():
        wide = trunk(_images())
        features = model.base(_images())
    assert wide.shape == (2, 2048)
    torch.testing.assert_close(features, wide.view(2, 512, 4).mean(dim=2))


def test_narrower_features_are_repeated_up():
    model = build_model("ResNet4", num_classes=10, feature_dim=512, seed=0).eval()
    with torch.no_grad():
        narrow = model.base[0](_images())
        features = model.base(_images())
    assert narrow.shape == (2, 64)
    torch.testing.assert_close(features, narrow.repeat_interleave(8, dim=1))


@pytest.mark.parametrize("name", ["FedAvgCNN", "ResNet8", "ResNet18", "GoogLeNet", "MobileNetV2"])
def test_grayscale_inputs(name):
    model = build_model(name, num_classes=10, in_channels=1, seed=0).eval()
    with torch.no_grad():
        assert model(_images(channels=1)).shape == (2, 10)


def test_vit_needs_image_size_divisible_by_patch():
    with pytest.raises(UserError, match="divisible by 16"):
        build_model("ViT-B/16", num_classes=10, image_size=28)


@pytest.mark.parametrize(
    "spelling, canonical",
    [
        ("resnet18", "ResNet18"),
        ("ResNet18", "ResNet18"),
        ("RESNET-18", "ResNet18"),
        ("vit_b_16", "ViT-B/16"),
        ("ViT-B/16", "ViT-B/16"),
        ("vit_b_32", "ViT-B/32"),
        ("mobilenet_v2", "MobileNetV2"),
        ("googlenet", "GoogLeNet"),
        ("fedavgcnn", "FedAvgCNN"),
    ],
)
def test_model_name_spellings(spelling, canonical):
    assert canonical_model_name(spelling) == canonical


def test_unknown_model_lists_known_names():
    with pytest.raises(UserError) as excinfo:
        build_model("ResNet19", num_classes=10)
    message = str(excinfo.value)
    assert "ResNet19" in message
    assert "\n" not in message
    for name in MODEL_NAMES:
        assert name in message


def test_bad_feature_dim_is_a_user_error():
    with pytest.raises(UserError, match="-fd"):
        build_model("ResNet4", num_classes=10, feature_dim=0)


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("name", ["FedAvgCNN", "ResNet8", "MobileNetV2"])
def test_seeded_initialisation(name):
    torch.manual_seed(123)
    first = build_model(name, num_classes=10, seed=5)
    torch.manual_seed(999)  # the global stream must not matter
    second = build_model(name, num_classes=10, seed=5)
    other = build_model(name, num_classes=10, seed=6)
    assert _same_state(first, second)
    assert not _same_state(first, other)


def test_seeded_build_leaves_global_rng_alone():
    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    build_model("ResNet4", num_classes=10, seed=7)
    torch.testing.assert_close(torch.rand(3), expected)


EXPECTED_FAMILIES = {
    "HtFE2": ("FedAvgCNN", "ResNet18"),
    "HtFE3": ("ResNet10", "ResNet18", "ResNet34"),
    "HtFE4": ("FedAvgCNN", "GoogLeNet", "MobileNetV2", "ResNet18"),
    "HtFE8": ("FedAvgCNN", "GoogLeNet", "MobileNetV2", "ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152"),
    "HtFE9": ("ResNet4", "ResNet6", "ResNet8", "ResNet10", "ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152"),
    "HtM10": ("FedAvgCNN", "GoogLeNet", "MobileNetV2", "ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152",
              "ViT-B/16", "ViT-B/32"),
    "HtFE-cpu": ("FedAvgCNN", "ResNet4", "ResNet8"),
}


@pytest.mark.parametrize("family", sorted(EXPECTED_FAMILIES))
def test_families_resolve_in_order(family):
    assert resolve_family(family) == EXPECTED_FAMILIES[family]
    assert resolve_family(family.lower()) == EXPECTED_FAMILIES[family]
    assert set(resolve_family(family)) <= set(MODEL_NAMES)


@pytest.mark.parametrize(
    "alias, family",
    [
        ("HtFE-img-2", "HtFE2"),
        ("HtFE-img-3", "HtFE3"),
        ("HtFE-img-4", "HtFE4"),
        ("HtFE-img-8", "HtFE8"),
        ("HtFE-img-9", "HtFE9"),
        ("HtM-img-10", "HtM10"),
        ("htfe8", "HtFE8"),
        ("HTM10", "HtM10"),
        ("htfe_cpu", "HtFE-cpu"),
    ],
)
def test_family_aliases(alias, family):
    assert resolve_family(alias) == EXPECTED_FAMILIES[family]


def test_family_tables_match():
    assert set(FAMILIES) == set(EXPECTED_FAMILIES)
    assert set(FAMILY_ALIASES.values()) <= set(FAMILIES)


def test_single_model_is_a_family():
    assert resolve_family("ResNet18") == ("ResNet18",)
    assert resolve_family("fedavgcnn") == ("FedAvgCNN",)
    assert resolve_family("vit_b_16") == ("ViT-B/16",)


def test_unknown_family_lists_families():
    with pytest.raises(UserError) as excinfo:
        resolve_family("HtFE5")
    message = str(excinfo.value)
    assert "HtFE5" in message and "\n" not in message
    for name in list(FAMILIES) + list(FAMILY_ALIASES):
        assert name in message


def test_build_client_models_assigns_round_robin():
    models = build_client_models("HtFE-cpu", num_clients=7, num_classes=10, feature_dim=64, image_size=32, seed=3)
    family = EXPECTED_FAMILIES["HtFE-cpu"]
    assert [m.arch for m in models] == [family[i % 3] for i in range(7)]
    assert [client_architecture("HtFE-cpu", i) for i in range(7)] == [m.arch for m in models]
    x = _images()
    for model in models:
        assert model.eval()(x).shape == (2, 10)
        assert model.base(x).shape == (2, 64)
    # Same architecture, different clients: different starting weights.
    assert not _same_state(models[0], models[3])
    # Client i is initialised from derive_seed(seed, "model", i).
    expected = build_model("ResNet4", num_classes=10, feature_dim=64, seed=derive_seed(3, "model", 4))
    assert _same_state(models[4], expected)
    again = build_client_models("HtFE-cpu", num_clients=7, num_classes=10, feature_dim=64, image_size=32, seed=3)
    assert all(_same_state(a, b) for a, b in zip(models, again))


def test_build_client_models_single_architecture():
    models = build_client_models("ResNet4", num_clients=3, num_classes=5, feature_dim=32, image_size=32, seed=0)
    assert [m.arch for m in models] == ["ResNet4"] * 3
    assert not _same_state(models[0], models[1])


def test_build_client_models_unknown_family():
    with pytest.raises(UserError, match="known families"):
        build_client_models("nope", num_clients=2, num_classes=10, feature_dim=512, image_size=32, seed=0)


def test_count_parameters():
    model = build_model("FedAvgCNN", num_classes=10, seed=0)
    expected = (3 * 32 * 25 + 32) + (32 * 64 * 25 + 64) + (1600 * 512 + 512) + (512 * 10 + 10)
    assert count_parameters(model) == expected
    for p in model.base.parameters():
        p.requires_grad_(False)
    assert count_parameters(model, trainable_only=True) == 512 * 10 + 10
