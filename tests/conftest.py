"""Shared pytest configuration for the xdrec tests."""
import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "realdata: needs the real datasets (../shared/data or $XDREC_DATA); skipped where they are absent",
    )


@pytest.fixture
def one_thread():
    """Tiny models run as fast on one thread, and do not fight a concurrent job for the cores.

    Test modules of tiny models opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def xcross_data():
    """Skip unless the real ``amazon18-xcross`` data is found (../shared/data or $XDREC_DATA)."""
    from xdrec import data

    try:
        return data.find_dataset("amazon18-xcross")
    except data.DatasetNotFoundError:
        pytest.skip("shared data not found (../shared/data or $XDREC_DATA)")
