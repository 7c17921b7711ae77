import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN = os.path.dirname(HERE)
ROOT = os.path.dirname(TRAIN)
sys.path.insert(0, TRAIN)


@pytest.fixture(scope="session")
def data_root():
    root = os.environ.get("SEGD_DATA", os.path.join(ROOT, "..", "shared", "data", "uwmgi"))
    if not os.path.exists(os.path.join(root, "train.csv")):
        pytest.skip(f"no UW-Madison data at {root} (set SEGD_DATA)")
    return root
