import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch():
    # Tests compare numbers; keep torch on one thread so results do not depend on the core count.
    # Small nets on a shared 2-core machine: intra-op threads only add contention.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
