"""Shared pytest configuration for the xdrec tests."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "realdata: needs the real datasets (../shared/data or $XDREC_DATA); skipped where they are absent",
    )
