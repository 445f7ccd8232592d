"""The interface every FedKTL generator backend implements.

FedKTL's server code only ever talks to this: how wide the latent space is, how to
draw from the generator's own latent distribution (the target of the MMD alignment),
how to turn latents into images in [0, 1], and (`generate`) how to do that for many
latents within the GPU's memory.
"""
from abc import ABC, abstractmethod
from typing import Callable

import torch

OOM_MESSAGE = "{stage} ran out of GPU memory: retrying with {size} images per call"


def print_flushed(line: str) -> None:
    print(line, flush=True)


def map_in_chunks(fn: Callable, items, size: int, stage: str = "generation",
                  then: Callable = None, report: Callable[[str], None] = print_flushed):
    """`[then(fn(chunk)), ...]` over consecutive chunks of `items` (a tensor or a list) of
    at most `size` rows, and the chunk size in use at the end (below `size` only if memory
    ran out). The one out-of-memory back-off of the library: generator backends and GPT-FL's
    synthesis use it.

    On CUDA out-of-memory in `fn`, only the failing chunk is retried, with half its rows
    (passing one line, OOM_MESSAGE for `stage`, to `report`: printed by default); the
    smaller size is kept for the chunks after it, and returned for callers that remember
    it. Out of memory on a single row is re-raised. `then` runs outside that handling: an
    out-of-memory in it propagates, and never makes `fn` run again on a chunk it has
    finished."""
    results, start = [], 0
    while start < len(items):
        chunk = items[start:start + size]
        try:
            result = fn(chunk)
        except torch.cuda.OutOfMemoryError:
            if len(chunk) == 1:
                raise
        else:
            results.append(then(result) if then is not None else result)
            del result  # e.g. denoised latents on the GPU: not kept while the next chunk runs
            start += len(chunk)
            continue
        # Outside the handler: the exception's traceback, and the activations its frames
        # hold, are released before the cache is emptied.
        size = (len(chunk) + 1) // 2
        torch.cuda.empty_cache()
        report(OOM_MESSAGE.format(stage=stage, size=size))
    return results, size


class GeneratorAdapter(ABC):
    #: width of one latent vector as FedKTL sees it (flattened)
    latent_dim: int
    #: images per `synthesize` call that fitted after an out-of-memory in an automatic
    #: `generate` (None: none yet, start with all latents)
    auto_batch_size = None

    @abstractmethod
    def sample_latents(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """`n` latents from the generator's latent distribution, shape [n, latent_dim],
        on `self.device`. All randomness comes from `generator` (a CPU torch.Generator)."""

    @abstractmethod
    def synthesize(self, latents: torch.Tensor) -> torch.Tensor:
        """Images for `latents` ([n, latent_dim]) as a float tensor [n, 3, H, W] in [0, 1]."""

    @property
    @abstractmethod
    def device(self) -> torch.device:
        ...

    @abstractmethod
    def to(self, device) -> "GeneratorAdapter":
        ...

    @torch.no_grad()
    def generate(self, latents: torch.Tensor, finish: Callable, batch_size: int = 0) -> torch.Tensor:
        """`finish(images)` for all `latents`, concatenated on the CPU, made chunk by chunk so
        that the generator's full-size images of all latents never exist at once.

        `finish` (e.g. resize to the clients' size and normalise) gets each chunk of
        `synthesize` output as soon as it is made, on the generator's device; its result
        moves to the CPU. `batch_size` is the number of latents per `synthesize` call:
        - 0 (automatic): start with all latents, or with `auto_batch_size` once an earlier
          call ran out of memory; halve on CUDA out-of-memory and remember the size that
          then works in `auto_batch_size` for later calls;
        - N > 0: N per call; also halved on out-of-memory for the rest of this call, but
          not remembered (the next call starts from N again, and `auto_batch_size` is left
          alone).
        Chunks already finished are kept: only the chunk that ran out of memory is redone.
        Out of memory with one latent per call is re-raised."""
        if len(latents) == 0:
            raise ValueError("generate needs at least one latent")
        automatic = batch_size <= 0
        start_size = (self.auto_batch_size or len(latents)) if automatic else batch_size

        def make(chunk):
            return finish(self.synthesize(chunk)).cpu()

        results, size = map_in_chunks(make, latents, start_size)
        if automatic and size < start_size:
            self.auto_batch_size = size
        return torch.cat(results)


#: latents on which a randomly initialised network's BatchNorm statistics are measured
CALIBRATION_LATENTS = 1024


@torch.no_grad()
def randomly_initialised(build: Callable[[], torch.nn.Module], seed: int,
                         sample_inputs: Callable[[int, torch.Generator], torch.Tensor]) -> torch.nn.Module:
    """`build()` (a network of a pre-trained generator's architecture, initialised as its
    constructor does) under `seed`, in eval mode with gradients off: the "random generator"
    of FedKTL's ablation. Its BatchNorm running statistics, if it has any, are measured on
    CALIBRATION_LATENTS inputs from `sample_inputs(n, torch_generator)`: with the
    constructor's statistics (mean 0, variance 1) an untrained network's activations shrink
    layer by layer and every image comes out the same grey, which would test nothing."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = build().requires_grad_(False)
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if norms:
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the calibration batches
        network.train()
        rng = torch.Generator().manual_seed(seed)
        for _ in range(CALIBRATION_LATENTS // 256):
            network(sample_inputs(256, rng))
        for norm in norms:
            norm.momentum = 0.1
    return network.eval()
