"""FedKTL with a pre-trained StyleGAN3 (NVlabs pickle from -GPath): only the backend and
the paper's StyleGAN3 server settings differ from FedKTL."""
from flcore.servers.serverktl import FedKTL


class FedKTLStyleGAN3(FedKTL):
    generator_kind = "stylegan"
    GENERATOR_EXAMPLE = "stylegan/stylegan-3-models/Benches-512.pkl"
