"""FedKTL with a pre-trained Stable Diffusion (local diffusers folder from -GPath, e.g.
stable-diffusion/v1.5): the aligned centroids are the initial latents x_T. Only the
backend and the paper's Stable Diffusion server settings differ from FedKTL."""
from flcore.servers.serverktl import FedKTL


class FedKTLStableDiffusion(FedKTL):
    generator_kind = "stable-diffusion"
    # Weights are only loaded from a folder the user names, so -GPath has no default.
    GENERATOR_EXAMPLE = "stable-diffusion/v1.5"
