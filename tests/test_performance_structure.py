"""Structure of the compiled step: no second copy with donation, no more kernels than optax.

Not a timing test (timings live in ``scripts/benchmarks/bench_update.py``): these read the compiled
executable, so they are deterministic on a given backend.
"""

import re
from functools import partial

import jax
import jax.numpy as jnp
import optax
import pytest

import adam_jax

N = 10_000
SHAPES = [(N,), (30, 40), (7,)]


def _compiled_step(tx, donate=True):
    params = [jnp.zeros(s, jnp.float32) for s in SHAPES]
    grads = [jnp.ones(s, jnp.float32) for s in SHAPES]

    @partial(jax.jit, donate_argnums=(0, 1) if donate else ())
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step.lower(params, tx.init(params), grads).compile()


def _array_kernels(compiled) -> int:
    """Fusions (and copies) of the entry computation whose result is not a scalar."""
    text = compiled.as_text()
    entry = text[text.index("\nENTRY") :]
    pattern = re.compile(r"= (\(.*?\)|\S+) (fusion|copy)\(")
    return sum(1 for m in pattern.finditer(entry) if re.search(r"\[[0-9]", m.group(1)))


@pytest.mark.parametrize("amsgrad", [False, True])
def test_donated_step_holds_no_second_copy(amsgrad):
    compiled = _compiled_step(adam_jax.adam(1e-3, amsgrad=amsgrad))
    analysis = compiled.memory_analysis()
    if analysis is None:
        pytest.skip("this backend gives no memory analysis")
    arrays = 3 + amsgrad  # params, mu, nu (, nu_max)
    array_bytes = arrays * 4 * sum(int(jnp.prod(jnp.array(s))) for s in SHAPES)
    # Every new array is written over its donated argument...
    assert analysis.alias_size_in_bytes >= array_bytes
    # ...and nothing of that size is held besides.
    assert analysis.temp_size_in_bytes < 4 * N // 10


def test_without_donation_the_step_holds_a_second_copy():
    # The counterpart of the test above: the memory analysis does see a second copy.
    analysis = _compiled_step(adam_jax.adam(1e-3), donate=False).memory_analysis()
    if analysis is None:
        pytest.skip("this backend gives no memory analysis")
    assert analysis.alias_size_in_bytes == 0
    assert analysis.output_size_in_bytes >= 3 * 4 * N


@pytest.mark.parametrize("convention", ["pytorch", "optax"])
@pytest.mark.parametrize("amsgrad", [False, True])
def test_no_more_kernels_than_optax(amsgrad, convention):
    ours = _array_kernels(
        _compiled_step(adam_jax.adam(1e-3, amsgrad=amsgrad, convention=convention))
    )
    theirs = _array_kernels(_compiled_step(optax.amsgrad(1e-3) if amsgrad else optax.adam(1e-3)))
    assert 0 < ours <= theirs
