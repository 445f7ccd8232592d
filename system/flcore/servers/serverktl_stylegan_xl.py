"""FedKTL with a pre-trained StyleGAN-XL (class-conditional NVlabs pickle; default the
ImageNet 64x64 one the original used): only the backend and defaults differ from FedKTL."""
from flcore.servers.serverktl import FedKTL


class FedKTLStyleGANXL(FedKTL):
    generator_kind = "stylegan"
    DEFAULTS = {**FedKTL.DEFAULTS, "lamda": 1.0, "mu": 50.0, "server_learning_rate": 0.01,
                "generator_path": "stylegan/stylegan-xl-models/imagenet64.pkl"}
