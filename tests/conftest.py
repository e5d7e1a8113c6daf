import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    # Tests compare numbers; keep torch on one thread so results do not depend on the core count.
    torch.set_num_threads(1)
    yield
