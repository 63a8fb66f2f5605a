"""Names, layouts and moments: what every framework's converter shares.

A framework names a tensor with a string (``"0.weight"``, ``"dense/kernel"``);
a JAX params tree names a leaf by its path. A name map says, for each framework
name, the leaf's path and how the axes move (a :class:`adam_jax.interop.Leaf`). The moments of
Adam are elementwise, so they move exactly as their weights do.

The optimizer state is read and written through its ``ScaleByAdamState`` (or
optax's own Adam states), found by type anywhere in the state's tree, so that a
chain, ``optax.partition`` or ``inject_hyperparams`` around it does not matter.
"""

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from adam_jax._quantize import QuantizedArray

Path = tuple[str, ...]
INT32_MAX = int(np.iinfo(np.int32).max)


def as_path(target: Any) -> Path:
    """``"a/b/kernel"`` or ``("a", "b", "kernel")`` as a tuple of strings.

    Raises:
      TypeError: for anything else; ValueError for an empty path or part.
    """
    if isinstance(target, str):
        parts = tuple(target.split("/"))
    elif isinstance(target, tuple):
        parts = tuple(str(p) for p in target)
    else:
        raise TypeError(
            f"a params path must be a '/'-separated str or a tuple of keys, got {target!r}."
        )
    if not parts or any(p == "" for p in parts):
        raise ValueError(f"a params path must have no empty part, got {target!r}.")
    return parts


def path_str(path: Path) -> str:
    """A path as ``"a/b/kernel"``, for messages."""
    return "/".join(path)


@dataclasses.dataclass(frozen=True)
class Leaf:
    """Where one framework tensor goes in the params tree, and how its axes move.

    Attributes:
      path: the leaf's path in the params tree, e.g. ``("dense1", "kernel")``.
      axes: the permutation that takes the framework's layout to JAX's, as
        ``numpy.transpose``'s ``axes`` (``(1, 0)`` for ``torch.nn.Linear``'s
        (out, in) weight to ``flax.nnx.Linear``'s (in, out) kernel); None keeps
        the layout.
      kept: True when the layout is kept on purpose (:func:`adam_jax.interop.as_is`),
        which a weight whose shape reads the same in both layouts (a square
        matrix) must say; a plain path keeps the layout without saying so.
    """

    path: Path
    axes: tuple[int, ...] | None = None
    kept: bool = False

    def __post_init__(self):
        object.__setattr__(self, "path", as_path(self.path))
        if self.axes is not None:
            axes = tuple(int(a) for a in self.axes)
            if sorted(axes) != list(range(len(axes))):
                raise ValueError(f"Leaf axes must be a permutation, got {self.axes!r}.")
            if self.kept:
                raise ValueError(
                    f"Leaf '{path_str(self.path)}' both permutes its axes {axes} and keeps "
                    "its layout (kept=True): say one."
                )
            object.__setattr__(self, "axes", axes)

    @property
    def declared(self) -> bool:
        """Whether the name map says the layout: permuted, or kept on purpose."""
        return self.axes is not None or self.kept

    def jax_shape(self, shape: tuple[int, ...], name: str) -> tuple[int, ...]:
        """The shape the framework's tensor ``name`` of ``shape`` has in JAX's layout."""
        if self.axes is None:
            return tuple(shape)
        if len(shape) != len(self.axes):
            raise ValueError(
                f"'{name}' has shape {tuple(shape)}, but its name map entry permutes "
                f"{len(self.axes)} axes {self.axes}."
            )
        return tuple(shape[a] for a in self.axes)

    def to_jax_layout(self, x: np.ndarray, name: str) -> np.ndarray:
        """``x`` (the framework's tensor ``name``) in JAX's layout."""
        self.jax_shape(x.shape, name)
        return x if self.axes is None else np.transpose(x, self.axes)

    def from_jax_layout(self, x: np.ndarray, name: str) -> np.ndarray:
        """``x`` (in JAX's layout) in the framework's layout of ``name``."""
        if self.axes is None:
            return x
        if x.ndim != len(self.axes):
            raise ValueError(
                f"params leaf '{path_str(self.path)}' (for '{name}') has shape {x.shape}, "
                f"but its name map entry permutes {len(self.axes)} axes {self.axes}."
            )
        return np.transpose(x, np.argsort(self.axes))


def linear(path: Any) -> Leaf:
    """A ``torch.nn.Linear`` weight (out, in) as a ``flax.nnx.Linear`` kernel (in, out).

    Args:
      path: the kernel's path in the params tree, e.g. ``"dense1/kernel"``.

    Returns:
      ``Leaf(path, axes=(1, 0))``.

    Examples:
      >>> import numpy as np
      >>> from adam_jax import interop
      >>> interop.linear("fc/kernel").to_jax_layout(np.zeros((2, 3)), "fc.weight").shape
      (3, 2)
    """
    return Leaf(as_path(path), (1, 0))


def conv(path: Any, spatial_dims: int = 2) -> Leaf:
    """A ``torch.nn.Conv{1,2,3}d`` weight (out, in, *spatial) as a Flax kernel (*spatial, in, out).

    Args:
      path: the kernel's path in the params tree.
      spatial_dims: 1, 2 or 3.

    Returns:
      The ``Leaf`` with the permutation ``(2, ..., spatial_dims + 1, 1, 0)``.

    Examples:
      >>> import numpy as np
      >>> from adam_jax import interop
      >>> interop.conv("conv/kernel").to_jax_layout(np.zeros((8, 3, 5, 5)), "conv.weight").shape
      (5, 5, 3, 8)
    """
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims!r}.")
    return Leaf(as_path(path), (*range(2, spatial_dims + 2), 1, 0))


def as_is(path: Any) -> Leaf:
    """A tensor whose layout is the same in both frameworks, kept on purpose.

    For a weight whose shape alone cannot show its layout (a square matrix) and
    that is not transposed: an ``nn.Embedding``'s (num_embeddings, dim) weight
    (``flax.nnx.Embed``'s embedding), or a JAX model that computes ``x @ w.T``
    with torch's (out, in) weight. A plain path keeps the layout too, but such a
    weight mapped by one is refused, as it may be an ``nn.Linear`` weight
    loaded untransposed.

    Args:
      path: the leaf's path in the params tree, e.g. ``"embed/embedding"``.

    Returns:
      ``Leaf(path, kept=True)``.

    Examples:
      >>> from adam_jax import interop
      >>> interop.as_is("embed/embedding")
      Leaf(path=('embed', 'embedding'), axes=None, kept=True)
    """
    return Leaf(as_path(path), kept=True)


def normalize_name_map(name_map: Mapping[str, Any]) -> dict[str, Leaf]:
    """``name_map`` with every value a ``Leaf``; two names on one path raise."""
    if not isinstance(name_map, Mapping) or not name_map:
        raise TypeError(
            f"name_map must be a non-empty mapping of framework names to params paths, "
            f"got {type(name_map).__name__}."
        )
    out: dict[str, Leaf] = {}
    owner: dict[Path, str] = {}
    for name, target in name_map.items():
        leaf = target if isinstance(target, Leaf) else Leaf(as_path(target))
        if leaf.path in owner:
            raise ValueError(
                f"name_map maps both '{owner[leaf.path]}' and '{name}' to '{path_str(leaf.path)}'."
            )
        owner[leaf.path] = name
        out[name] = leaf
    return out


def key_str(key) -> str:
    """One entry of a JAX key path as the string a :class:`adam_jax.interop.Leaf` path uses."""
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def leaves_by_path(tree) -> dict[Path, Any]:
    """The leaves of ``tree`` keyed by their paths (tuples of strings), in tree order."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {tuple(key_str(k) for k in kp): leaf for kp, leaf in flat}


def nested(leaves: Mapping[Path, Any]):
    """Nested dicts from ``{path: leaf}``; a path that is a prefix of another raises."""
    root: dict = {}
    for path, leaf in leaves.items():
        node = root
        for i, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(
                    f"'{path_str(path[: i + 1])}' is a leaf, so '{path_str(path)}' cannot "
                    "sit under it."
                )
        if path[-1] in node:
            raise ValueError(f"'{path_str(path)}' is both a leaf and a subtree.")
        node[path[-1]] = leaf
    return root


def to_jax(x: np.ndarray, what: str, dtype=None) -> jax.Array:
    """``x`` as a JAX array, refusing the silent float64 -> float32 of JAX's 32-bit mode.

    Args:
      x: a NumPy array.
      what: the tensor's name, for the error.
      dtype: cast to this dtype on purpose; None keeps ``x``'s dtype.
    """
    if dtype is not None:
        return jnp.asarray(x, dtype)
    if x.dtype.itemsize == 8 and x.dtype.kind in "fc" and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            f"{what} is {x.dtype}, but JAX's 64-bit mode is off and would round it to 32 bits. "
            "Turn it on (jax.config.update('jax_enable_x64', True)), or pass "
            "dtype=jnp.float32 to round on purpose."
        )
    return jnp.asarray(x)


def moment_like(x: np.ndarray, like: jax.Array, what: str) -> jax.Array:
    """``x`` in the dtype and sharding of the optimizer state's leaf ``like``.

    A cast that loses nothing (float32 moments into a float32 or float64 state)
    is made; one that rounds (float64 into float32) raises, as does a shape
    that differs.
    """
    if tuple(x.shape) != tuple(like.shape):
        raise ValueError(f"{what} has shape {tuple(x.shape)}, expected {tuple(like.shape)}.")
    if not np.can_cast(x.dtype, like.dtype, "safe"):
        raise ValueError(
            f"{what} is {x.dtype} and would be rounded into the optimizer state's "
            f"{like.dtype}; build the params in {x.dtype} (for float64, turn on "
            "jax_enable_x64) or cast the state dict first."
        )
    sharding = getattr(like, "sharding", None)
    value = np.asarray(x, like.dtype)
    return jax.device_put(value, sharding) if sharding is not None else jnp.asarray(value)


class Moments(NamedTuple):
    """One Adam state's contents, keyed by params path.

    Attributes:
      count: the number of steps taken.
      mu, nu: first and second moments, path -> NumPy array in JAX's layout.
      nu_max: AMSGrad's maximum (path -> array), or None without AMSGrad.
      mu_product: NAdam's product of the momentum schedule, a NumPy scalar, or
        None without one.
    """

    count: int  # type: ignore[assignment]  # shadows tuple.count
    mu: dict[Path, np.ndarray]
    nu: dict[Path, np.ndarray]
    nu_max: dict[Path, np.ndarray] | None
    mu_product: np.ndarray | None = None


def _is_state(types):
    return lambda x: isinstance(x, types)


def refuse_quantized(state) -> None:
    """Raises for an Adam state with 8-bit moments: no framework has a state to take them."""
    is_quantized = lambda x: isinstance(x, QuantizedArray)  # noqa: E731
    moments = (state.mu, state.nu, getattr(state, "nu_max", None))
    if any(is_quantized(x) for x in jax.tree.leaves(moments, is_leaf=is_quantized)):
        raise ValueError(
            "the optimizer keeps 8-bit block-quantized moments (quantized_state=...): "
            "torch.optim, Keras and optax keep float moments, and converting the codes would "
            "change the optimizer. Convert a run with quantized_state=None, or dequantize and "
            "continue it in adam_jax."
        )


def find_states(opt_state, types: tuple[type, ...]) -> list:
    """Every state of one of ``types`` inside ``opt_state``, in tree order."""
    is_state = _is_state(types)
    return [x for x in jax.tree.leaves(opt_state, is_leaf=is_state) if is_state(x)]


def read_moments(opt_state, types: tuple[type, ...]) -> list[Moments]:
    """The :class:`Moments` of every Adam state of ``types`` in ``opt_state``.

    Params outside a state (``optax.partition``'s ``MaskedNode``) have no leaf,
    so each ``Moments`` holds exactly the params its state updates.
    """

    def read(tree):
        return {p: np.asarray(x) for p, x in leaves_by_path(tree).items()}

    out = []
    for state in find_states(opt_state, types):
        refuse_quantized(state)
        nu_max = getattr(state, "nu_max", None)
        mu_product = getattr(state, "mu_product", None)
        out.append(
            Moments(
                int(state.count),
                read(state.mu),
                read(state.nu),
                None if nu_max is None else read(nu_max),
                None if mu_product is None else np.asarray(mu_product),
            )
        )
    if not out:
        raise ValueError(
            f"the optimizer state holds no {' or '.join(t.__name__ for t in types)}; "
            "pass the state of the optimizer that was converted."
        )
    return out


def write_moments(
    template,
    types: tuple[type, ...],
    source_for: Callable[[frozenset], Moments],
    describe: Callable[[str, Path], str],
):
    """``template`` with every Adam state of ``types`` filled from a :class:`Moments`.

    Args:
      template: a fresh state (``optimizer.init(params)``) of the right structure.
      types: the Adam state types to fill.
      source_for: the params paths of one state -> its ``Moments`` (raises when
        no source matches).
      describe: ``(field, path) -> str``, the framework's name of a tensor, for
        errors: ``("mu", ("dense", "kernel"))`` -> ``"exp_avg of '0.weight'"``.

    Every leaf of every state is written, from a source with exactly the same
    paths, so nothing keeps the template's zeros.
    """
    is_state = _is_state(types)

    def fill(state):
        if not is_state(state):
            return state
        refuse_quantized(state)
        paths = frozenset(leaves_by_path(state.mu))
        src = source_for(paths)

        def tree(field, like_tree, arrays):
            return jax.tree_util.tree_map_with_path(
                lambda kp, like: moment_like(
                    arrays[tuple(key_str(k) for k in kp)],
                    like,
                    describe(field, tuple(key_str(k) for k in kp)),
                ),
                like_tree,
            )

        has_max = getattr(state, "nu_max", None) is not None
        if has_max != (src.nu_max is not None):
            raise ValueError(
                "AMSGrad does not match: the source "
                f"{'has' if src.nu_max is not None else 'has no'} maximum of the second "
                f"moment, the optimizer {'has' if has_max else 'has no'} AMSGrad, for the "
                f"params {sorted(path_str(p) for p in paths)[:3]}."
            )
        if not 0 <= src.count <= INT32_MAX:
            raise ValueError(f"step count {src.count} is outside [0, {INT32_MAX}].")
        fields = {
            "count": jnp.asarray(src.count, state.count.dtype),
            "mu": tree("mu", state.mu, src.mu),
            "nu": tree("nu", state.nu, src.nu),
        }
        if has_max:
            fields["nu_max"] = tree("nu_max", state.nu_max, src.nu_max)
        has_product = getattr(state, "mu_product", None) is not None
        if has_product != (src.mu_product is not None):
            raise ValueError(
                "NAdam's momentum product does not match: the source "
                f"{'has' if src.mu_product is not None else 'has no'} mu_product, the "
                f"optimizer {'keeps' if has_product else 'keeps no'} one."
            )
        if has_product:
            fields["mu_product"] = moment_like(
                np.asarray(src.mu_product), state.mu_product, describe("mu_product", ())
            )
        return state._replace(**fields)

    return jax.tree.map(fill, template, is_leaf=is_state)


def match_groups(group_paths: Iterable[frozenset], what: str) -> Callable[[frozenset], int]:
    """``paths -> index`` of the group holding exactly those paths, or a clear error."""
    index = {paths: i for i, paths in enumerate(group_paths)}

    def find(paths: frozenset) -> int:
        if paths not in index:
            shown = sorted(path_str(p) for p in paths)
            raise ValueError(
                f"the optimizer state updates the params {shown[:4]}"
                f"{' ...' if len(shown) > 4 else ''} together, which is no {what}."
            )
        return index[paths]

    return find
