"""One description: every public factory is a view of ``AdamSpec``.

The factories keep explicit signatures (``optax.inject_hyperparams`` reads
them); these tests make sure no signature drifts from the spec: each argument
is a field with the same default, or a documented exception.
"""

import dataclasses
import inspect

import jax.numpy as jnp
import optax
import pytest

import adam_jax

FIELDS = {f.name: f.default for f in dataclasses.fields(adam_jax.AdamSpec)}

# Arguments a factory fixes or defaults differently from the spec, on purpose.
FIXED = {
    "adam": {},
    "amsgrad": {"amsgrad": True},
    "adamw": {"decoupled_weight_decay": True},
    "nadam": {"nesterov": True},
    "scale_by_adam": {},
    "fused_adam": {},
}
OTHER_DEFAULTS = {
    # None: the convention's framework default (tests/test_framework_defaults.py).
    "adamw": {"weight_decay": None},
    "nadam": {"learning_rate": None},
}
# The chain's arguments, which a bare direction does not take.
CHAIN_ONLY = {
    "learning_rate",
    "weight_decay",
    "decoupled_weight_decay",
    "mask",
    "maximize",
    "param_rounding",  # the chain's last link
    "rounding_seed",
}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_signature_is_the_spec(name):
    factory = getattr(adam_jax, name)
    params = inspect.signature(factory).parameters
    expected = set(FIELDS) - set(FIXED[name])
    if name == "scale_by_adam":
        expected -= CHAIN_ONLY
    if name not in ("nadam", "scale_by_adam"):
        expected -= {"nesterov", "momentum_decay"}
    if name == "nadam":
        expected -= {"amsgrad"}  # no AMSGrad NAdam in any framework
    assert set(params) == expected
    for arg, p in params.items():
        default = OTHER_DEFAULTS.get(name, {}).get(arg, FIELDS[arg])
        assert p.default == default, f"{name}({arg}=...) defaults to {p.default!r}"


@pytest.mark.parametrize("name", ["adam", "amsgrad", "adamw", "nadam"])
def test_factory_builds_the_spec_it_advertises(name):
    kwargs = {"learning_rate": 0.05, "b1": 0.8, "eps": 1e-6, "convention": "keras"}
    optimizer = getattr(adam_jax, name)(**kwargs)
    assert isinstance(optimizer, adam_jax.Optimizer)
    assert isinstance(optimizer, optax.GradientTransformation)
    expected = adam_jax.AdamSpec(**{**FIXED[name], **OTHER_DEFAULTS.get(name, {}), **kwargs})
    assert optimizer.spec == expected


def test_inject_hyperparams_reads_the_signatures():
    for factory in (adam_jax.adam, adam_jax.amsgrad, adam_jax.adamw, adam_jax.nadam):
        tx = optax.inject_hyperparams(factory)(learning_rate=0.1, b1=0.5)
        state = tx.init(jnp.zeros(2))
        assert set(state.hyperparams) >= {"learning_rate", "b1"}
        tx.update(jnp.ones(2), state, jnp.zeros(2))


def test_spec_is_validated_again_on_replace():
    spec = adam_jax.AdamSpec()
    assert spec.replace(eps=1e-6).eps == 1e-6
    with pytest.raises(ValueError, match="eps must be in"):
        spec.replace(eps=-1.0)


def test_spec_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        adam_jax.AdamSpec().eps = 0.1


def _latex_to_python(tex: str) -> str:
    """The few LaTeX constructs of ``step_latex`` as a Python expression."""

    def braced(s, i):  # the {...} group starting at s[i], and the index after it
        depth = 0
        for j in range(i, len(s)):
            depth += {"{": 1, "}": -1}.get(s[j], 0)
            if depth == 0:
                return s[i + 1 : j], j + 1
        raise ValueError(s)

    out, i = "", 0
    while i < len(tex):
        if tex.startswith("\\dfrac", i):
            a, i = braced(tex, i + 6)
            b, i = braced(tex, i)
            out += f"(({_latex_to_python(a)}) / ({_latex_to_python(b)}))"
        elif tex.startswith("\\sqrt", i):
            a, i = braced(tex, i + 5)
            out += f"sqrt({_latex_to_python(a)})"
        else:
            out += tex[i]
            i += 1
    for a, b in [("\\cdot", "*"), ("\\bar\\epsilon", "eps_root"), ("\\epsilon", "eps")]:
        out = out.replace(a, b)
    for a, b in [("m_t", "m"), ("v_t", "r"), ("r_t", "r"), ("c_1", "bc1"), ("c_2", "bc2")]:
        out = out.replace(a, b)
    return out


@pytest.mark.parametrize("name", sorted(adam_jax.CONVENTIONS))
@pytest.mark.parametrize("amsgrad", [False, True])
def test_docs_formula_is_the_code(name, amsgrad):
    """The docs' table (``step_latex``) and the step's scalars say the same thing."""
    import math

    from adam_jax import _conventions

    row = adam_jax.CONVENTIONS[name]
    values = dict(m=0.3, r=0.02, bc1=0.19, bc2=0.0199, eps=1e-3, eps_root=1e-4)
    expr = _latex_to_python(_conventions.step_latex(row, amsgrad))
    from_docs = eval(expr, {"sqrt": math.sqrt}, values)  # noqa: S307 - our own string
    k = _conventions.step_coefficients(
        row, amsgrad, jnp.asarray(values["bc1"], jnp.float32), jnp.asarray(values["bc2"])
    )
    r = values["r"]  # the r_t of the formula is what the code keeps (before_max applied)
    from_code = (
        float(k.numerator)
        * values["m"]
        / (math.sqrt(r * float(k.inside) + values["eps_root"]) + values["eps"])
    )
    assert from_docs == pytest.approx(from_code, rel=1e-5)


def test_an_optimizer_keeps_its_spec_through_replace():
    optimizer = adam_jax.amsgrad(0.1, convention="optax")
    replaced = optimizer._replace(update=optimizer.update)
    assert isinstance(replaced, adam_jax.Optimizer)
    assert replaced.spec == optimizer.spec
    state = replaced.init(jnp.zeros(2))
    assert float(replaced.epsilon_report(state)["zero_fraction"]) == 1.0


def test_from_spec_is_what_the_factories_return():
    optimizer = adam_jax.adamw(0.1, b1=0.8, convention="keras", amsgrad=True)
    rebuilt = adam_jax.from_spec(optimizer.spec)
    params, grads = jnp.array([1.0, -2.0]), jnp.array([0.3, 0.1])
    ours = optimizer.update(grads, optimizer.init(params), params)[0]
    theirs = rebuilt.update(grads, rebuilt.init(params), params)[0]
    assert rebuilt.spec == optimizer.spec
    assert jnp.array_equal(ours, theirs)
