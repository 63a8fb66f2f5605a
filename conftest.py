"""Doctests that call ``fused_adam`` run only where its kernel was built at install time."""

import pytest


def pytest_collection_modifyitems(items):
    import adam_jax

    if adam_jax.fused_available():
        return
    skip = pytest.mark.skip(
        reason="adam_jax.fused_available() is False: fused_adam's kernel was not built when "
        "adam_jax was installed (no C++ compiler)"
    )
    for item in items:
        test = getattr(item, "dtest", None)  # a doctest
        if test is not None and any("fused_adam(" in e.source for e in test.examples):
            item.add_marker(skip)
