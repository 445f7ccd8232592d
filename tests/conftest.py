import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "system")):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402

# Two cores on CI; tests are small enough that threading only adds overhead.
torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_root(tmp_path_factory):
    """A data root holding "Tiny" (sklearn digits, 16x16, 4 clients), shared read-only by the
    end-to-end tests; modules needing other data define their own `data_root`."""
    from tests.helpers import make_tiny_dataset

    root = tmp_path_factory.mktemp("data")
    make_tiny_dataset(str(root), num_clients=4)
    return str(root)
