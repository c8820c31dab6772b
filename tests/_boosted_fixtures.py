"""Session-scoped boosted mock samples shared by the tests/test_boosted_*.py files."""

from __future__ import annotations

import pytest

from lhcml.data.mock import make_mock_file, make_mock_tables


@pytest.fixture(scope="session")
def boosted_mock_tables():
    return make_mock_tables(400, kind="boosted", seed=11)


@pytest.fixture(scope="session")
def boosted_mock_file(tmp_path_factory):
    return make_mock_file(tmp_path_factory.mktemp("boosted") / "mock.h5", n_jets=300, kind="boosted", seed=5)


FLOW_VARS = ["pt", "energy", "eta", "phi", "deta", "dphi", "charge", "isChargedHadron"]


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: one thread avoids oversubscription stalls on the shared 2-core CI machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
