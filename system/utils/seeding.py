"""One `--seed` drives everything; sub-seeds are derived, never drawn from a shared stream."""
import random

import numpy as np
import torch


def derive_seed(seed: int, *keys) -> int:
    """A 63-bit seed that depends on `seed` and on the `keys` (ints or strings) only.

    Used so that, e.g., client 7's model initialisation does not change when an
    algorithm draws one more random number somewhere else.
    """
    words = [int(seed) & 0xFFFFFFFF]
    for key in keys:
        if isinstance(key, str):
            words.extend(key.encode("utf-8"))
        else:
            words.append(int(key) & 0xFFFFFFFF)
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def torch_generator(seed: int, device="cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen
