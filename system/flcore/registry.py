"""`-algo` names -> server classes. Modules are imported on demand, so an algorithm's
optional dependencies are only needed when that algorithm is run."""
import importlib

from utils.errors import UserError

ALGORITHMS = {
    "FedKTL": "flcore.servers.serverktl:FedKTL",
    "FedKTL-stylegan-3": "flcore.servers.serverktl_stylegan_3:FedKTLStyleGAN3",
    "FedKTL-stylegan-xl": "flcore.servers.serverktl_stylegan_xl:FedKTLStyleGANXL",
    "FedKTL-stable-diffusion": "flcore.servers.serverktl_stable_diffusion:FedKTLStableDiffusion",
    "Local": "flcore.servers.serverlocal:Local",
    "FedProto": "flcore.servers.serverproto:FedProto",
    "FD": "flcore.servers.serverfd:FD",
    "FedDistill": "flcore.servers.serverfd:FD",
    "LG-FedAvg": "flcore.servers.serverlg:LGFedAvg",
    "FML": "flcore.servers.serverfml:FML",
    "FedKD": "flcore.servers.serverkd:FedKD",
    "FedGen": "flcore.servers.servergen:FedGen",
    "FedGH": "flcore.servers.servergh:FedGH",
    "FedTGP": "flcore.servers.servertgp:FedTGP",
    "FedLoGe": "flcore.servers.serverloge:FedLoGe",
    "GPT-FL": "flcore.servers.servergptfl:GPTFL",
    "DeepInversion": "flcore.servers.serverdi:DeepInversion",
}


def get_server_class(name: str):
    try:
        target = ALGORITHMS[name]
    except KeyError:
        lowered = {key.lower(): key for key in ALGORITHMS}
        hint = f" (did you mean {lowered[name.lower()]}?)" if name.lower() in lowered else ""
        raise UserError(f"unknown -algo {name!r}{hint}: choose one of {', '.join(sorted(ALGORITHMS))}") from None
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)
