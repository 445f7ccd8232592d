"""Model families for heterogeneous clients: client i gets `family[i % len(family)]`.

The HtFE/HtM families are the ones of the FedKTL paper and HtFLlib; `HtFE-cpu` is a
small family sized for CPU runs. A single model name is a one-architecture family.
"""
import re
from typing import Dict, List, Tuple

from trainmodel.models import MODEL_NAMES, BaseHeadSplit, build_model, find_model_name
from utils.errors import UserError
from utils.seeding import derive_seed

_HTFE8 = (
    "FedAvgCNN",
    "GoogLeNet",
    "MobileNetV2",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "ResNet152",
)

FAMILIES: Dict[str, Tuple[str, ...]] = {
    "HtFE2": ("FedAvgCNN", "ResNet18"),
    "HtFE3": ("ResNet10", "ResNet18", "ResNet34"),
    "HtFE4": ("FedAvgCNN", "GoogLeNet", "MobileNetV2", "ResNet18"),
    "HtFE8": _HTFE8,
    "HtFE9": (
        "ResNet4",
        "ResNet6",
        "ResNet8",
        "ResNet10",
        "ResNet18",
        "ResNet34",
        "ResNet50",
        "ResNet101",
        "ResNet152",
    ),
    "HtM10": _HTFE8 + ("ViT-B/16", "ViT-B/32"),
    "HtFE-cpu": ("FedAvgCNN", "ResNet4", "ResNet8"),
}

# HtFLlib's spellings of the same families.
FAMILY_ALIASES: Dict[str, str] = {
    "HtFE-img-2": "HtFE2",
    "HtFE-img-3": "HtFE3",
    "HtFE-img-4": "HtFE4",
    "HtFE-img-8": "HtFE8",
    "HtFE-img-9": "HtFE9",
    "HtM-img-10": "HtM10",
}


# HtFLlib's families that are not here, for the error message: (pattern, what they are, why not here).
_HTFLLIB_ONLY_FAMILIES = (
    (r"htfeimg5", "GoogLeNet, MobileNetV2, ResNet18, ResNet34, ResNet50", "not added yet; HtFE8 holds these five"),
    (r".*htc.*", "backbones with heterogeneous classifier heads, HtC, and a global model",
     "every client here has one linear head on its backbone"),
    (r"htfetxt.*", "text models: fastText, LSTMs, Transformers", "this library runs image tasks with a generator"),
    (r"htfesen.*", "HAR sensor CNNs", "this library runs image tasks with a generator"),
    (r"mlp.*", "MLPs on feature vectors of Amazon reviews", "this library runs image tasks with a generator"),
)


def _family_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


_BY_KEY: Dict[str, str] = {_family_key(name): name for name in FAMILIES}
_BY_KEY.update({_family_key(alias): target for alias, target in FAMILY_ALIASES.items()})


def resolve_family(name: str) -> Tuple[str, ...]:
    """The canonical model names of a family (or of a single model), in client order."""
    family = _BY_KEY.get(_family_key(name))
    if family is not None:
        return FAMILIES[family]
    model = find_model_name(name)
    if model is not None:
        return (model,)
    known = (f"known families: {', '.join(FAMILIES)} (HtFLlib's {', '.join(FAMILY_ALIASES)}); or one model name: "
             f"{', '.join(MODEL_NAMES)}")
    for pattern, what, why in _HTFLLIB_ONLY_FAMILIES:
        if re.fullmatch(pattern, _family_key(name)):
            raise UserError(f"model family {name!r} (-m) is HtFLlib's ({what}) and is not here: {why}; {known}")
    raise UserError(f"unknown model family {name!r} (-m); {known}")


def client_architecture(family: str, client_id: int) -> str:
    models = resolve_family(family)
    return models[client_id % len(models)]


def build_client_model(family: str, client_id: int, num_classes: int, feature_dim: int, image_size: int,
                       seed: int, in_channels: int = 3, vit_mlp_head: bool = False) -> BaseHeadSplit:
    """Client `client_id`'s model: the family's architecture for it, initialised from
    derive_seed(seed, "model", client_id), so it is the same wherever it is built."""
    return build_model(client_architecture(family, client_id), num_classes=num_classes, feature_dim=feature_dim,
                       image_size=image_size, in_channels=in_channels, seed=derive_seed(seed, "model", client_id),
                       vit_mlp_head=vit_mlp_head)


def build_client_models(
    family: str,
    num_clients: int,
    num_classes: int,
    feature_dim: int,
    image_size: int,
    seed: int,
    in_channels: int = 3,
) -> List[BaseHeadSplit]:
    """One model per client; client i's weights are initialised from derive_seed(seed, "model", i)."""
    if not isinstance(num_clients, int) or num_clients < 1:
        raise UserError(f"the number of clients must be a positive integer, got {num_clients!r}; fix -nc")
    return [build_client_model(family, client_id, num_classes, feature_dim, image_size, seed, in_channels)
            for client_id in range(num_clients)]
