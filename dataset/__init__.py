"""The dataset generators (`generate_<Name>.py`), run as scripts or imported.

They write the on-disk format with `utils.htfl_format`, which lives in `system/` because the
system reads it too: put `system/` on the path when it is not there yet (a generator run as
`python dataset/generate_<Name>.py` or `python -m dataset.generate_<Name>`).
"""
import os
import sys

_SYSTEM_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "system")
if _SYSTEM_DIR not in sys.path:
    sys.path.insert(0, _SYSTEM_DIR)
