"""FedKTL with a pre-trained StyleGAN-XL (class-conditional NVlabs pickle from -GPath, e.g.
the ImageNet 64x64 one the original used): only the backend and defaults differ from FedKTL."""
from flcore.servers.serverktl import FedKTL


class FedKTLStyleGANXL(FedKTL):
    generator_kind = "stylegan"
    # A pickle runs code when loaded, so -GPath has no default; this is only suggested.
    GENERATOR_EXAMPLE = "stylegan/stylegan-xl-models/imagenet64.pkl"
