"""Benchmarks and measurement studies; each writes its numbers to ``docs/bench/`` and its plots
to ``docs/img/``. ``common.py`` is their shared helper (timing, statistics, machine facts)."""
