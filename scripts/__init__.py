"""The programs a user runs: training, the launcher, the seed's PyTorch program, the interop demo.

``benchmarks/`` holds the benchmarks and measurement studies, ``dev/`` the maintainers' tools.
Each program runs from the repository root as a module (``python -m scripts.train``,
``python -m scripts.benchmarks.bench_update``), which puts the root on ``sys.path`` so that
``scripts`` and ``tests`` import as packages; ``train.py``, ``launch.py`` and
``seed_pytorch.py`` import nothing but adam_jax and also run as ``python scripts/<name>.py``.
"""
