import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.dirname(HERE)
ROOT = os.path.dirname(TRAIN)
sys.path.insert(0, TRAIN)


HELDOUT = os.path.join(ROOT, "tests", "data", "heldout")


def shipped_weights():
    """The shipped weights: $SEGD_WEIGHTS, else the single weights/*.safetensors
    (the rule of meson's default_weights option when it is empty)."""
    import glob
    env = os.environ.get("SEGD_WEIGHTS")
    if env:
        return env
    found = sorted(glob.glob(os.path.join(ROOT, "weights", "*.safetensors")))
    assert len(found) == 1, f"weights/ holds {len(found)} *.safetensors: set SEGD_WEIGHTS"
    return found[0]


@pytest.fixture(scope="session")
def data_root():
    root = os.environ.get("SEGD_DATA", os.path.join(ROOT, "..", "shared", "data", "uwmgi"))
    if not os.path.exists(os.path.join(root, "train.csv")):
        pytest.skip(f"no UW-Madison data at {root} (set SEGD_DATA)")
    return root
