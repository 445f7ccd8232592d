import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (ROOT, os.path.join(ROOT, "system")):
    if path not in sys.path:
        sys.path.insert(0, path)

import torch  # noqa: E402

# Two cores on CI; tests are small enough that threading only adds overhead.
torch.set_num_threads(1)
