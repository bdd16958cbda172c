"""Shared pytest setup of the engine's tests."""

import gc

import pytest


@pytest.fixture(autouse=True)
def collect_garbage():
    """Collect after each test: an Amaranth component a test builds only to see its
    constructor refuse warns (UnusedElaboratable) when it is collected, and this way it warns
    inside that test, under that test's warning filters, not in whichever test runs next."""
    yield
    gc.collect()
