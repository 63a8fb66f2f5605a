"""Maintainers' tools over the repository: mutation testing, the docs site's browser check and
the parity report (which runs the test harness ``tests/parity/harness.py``)."""
