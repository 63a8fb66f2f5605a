"""Setup of the parity tests: Keras' backend and the seed's PyTorch runs."""

import os

import pytest

# Keras reads its backend once, at its first import.
os.environ.setdefault("KERAS_BACKEND", "jax")


@pytest.fixture(scope="session", params=["float64", "float32"])
def seed_run(request, tmp_path_factory):
    """The seed's four loss curves (``_harness.SEED_CURVES``) in one dtype, once a session.

    Runs ``scripts/seed_pytorch.py`` into a temporary ``.npz``, then
    ``scripts/train.py --init-from`` it and the real ``optax.amsgrad``.
    """
    pytest.importorskip("torch", reason="the seed's program needs torch: pip install -e '.[test]'")
    pytest.importorskip("flax", reason="scripts/train.py needs flax: pip install -e '.[test]'")
    from tests.parity import harness as _harness

    dtype = request.param
    workdir = tmp_path_factory.mktemp(f"seed_{dtype}")
    npz = workdir / "seed_torch.npz"
    _harness.write_seed_npz(npz, dtype)
    return dtype, _harness.seed_curves(npz, workdir)
