"""``PackedLayout``: a params tree kept as one flat buffer per dtype, for one-kernel steps.

JAX runs an optimizer step as at least one kernel per array; on a model of ~150 arrays the
dispatch of those kernels costs more than a fused step's arithmetic (docs/performance.md).
A packed layout keeps the params in a few flat buffers instead, and the model reads views of
them: the gradient with respect to the buffers arrives flat, the optimizer state built from
them is flat, and the step is a handful of kernels whatever the model's size.
"""

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

DECAYED, UNDECAYED = "decayed", "undecayed"


class PackedLeaf(NamedTuple):
    """Where one leaf of the params tree lives: ``buffer[offset : offset + size]``."""

    path: str  # the leaf's key path, as jax.tree_util.keystr writes it
    buffer: str  # the key of its buffer
    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclasses.dataclass(frozen=True)
class PackedLayout:
    r"""How a params tree maps onto flat buffers: one per dtype (and per weight-decay flag).

    Build it once from the params (or their ``jax.eval_shape``) with
    :meth:`adam_jax.PackedLayout.from_params`; it is static (tree structure, shapes, dtypes,
    offsets), hashable, and holds no arrays.

    The leaves of the tree are laid end to end, in the tree's leaf order, in one 1-D buffer
    per dtype: leaf :math:`i` of shape :math:`s_i` occupies
    :math:`[o_i, o_i + \prod s_i)` with :math:`o_{i+1} = o_i + \prod s_i`. With ``mask=``
    (the weight-decay mask of :func:`adam_jax.adamw`), decayed and undecayed leaves go to
    separate buffers, so the mask itself packs: :attr:`adam_jax.PackedLayout.mask` is one
    bool per buffer. The buffers are a dict, keyed ``"float32"`` (no mask) or
    ``"float32/decayed"`` and ``"float32/undecayed"``, and are an ordinary params tree: every
    adam_jax optimizer, optax path or :func:`adam_jax.fused_adam`, steps them as it steps any
    tree, with the same bits per element (the update is elementwise), in a few kernels
    instead of one per leaf.

    - ``pack`` copies a tree into buffers (once, at the start of training);
    - ``unpack`` gives the tree back as slices and reshapes of the buffers, under
      ``jax.jit`` too, so ``jax.grad(lambda b: loss(layout.unpack(b)))(buffers)`` is the
      gradient already packed;
    - ``pack_state`` and ``unpack_state`` convert an optimizer state between the two forms
      (checkpoints and interop keep the tree form; a run resumes in either, bitwise).

    Sharding (FSDP, ZeRO-3): with ``sharding=NamedSharding(mesh, P("data"))`` each buffer is
    split over the ``"data"`` axis, each device holding 1/N of it, and so are the gradient
    and the optimizer state: the step runs on each device's shard with no communication.
    ``unpack`` all-gathers a buffer inside the loss, and the gradient flows back
    reduce-scattered. Each buffer is padded with zeros to a multiple of N. The padding is
    never read by ``unpack``, so its gradient is exactly 0, and Adam's update of a zero
    gradient on a zero param with zero moments is exactly 0 (also with ``eps=0``, weight
    decay, NAdam and AMSGrad): the padding stays 0 and its moments stay 0. Without a
    sharding there is no padding.

    Attributes:
      treedef: the params' tree structure.
      leaves: one ``PackedLeaf`` per leaf, in the tree's leaf order.
      sizes: buffer key -> its length (padding included).
      dtypes: buffer key -> its dtype.
      decayed: buffer key -> whether weight decay applies (all True without a mask).
      has_mask: whether ``mask=`` was given (then ``mask`` is not None).
      sharding: the buffers' 1-D ``NamedSharding``, or None.

    Examples:
      >>> import jax, jax.numpy as jnp, optax, adam_jax
      >>> from adam_jax import PackedLayout  # adam_jax.PackedLayout once exported
      >>> params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
      >>> layout = PackedLayout.from_params(params, mask={"w": True, "b": False})
      >>> buffers = layout.pack(params)
      >>> {k: v.shape for k, v in buffers.items()}
      {'float32/decayed': (6,), 'float32/undecayed': (3,)}
      >>> tx = adam_jax.adamw(0.1, weight_decay=0.01, mask=layout.mask)
      >>> loss = lambda p: jnp.sum(p["w"] ** 2) + jnp.sum((p["b"] - 1) ** 2)
      >>> grads = jax.grad(lambda b: loss(layout.unpack(b)))(buffers)
      >>> updates, state = tx.update(grads, tx.init(buffers), buffers)
      >>> layout.unpack(optax.apply_updates(buffers, updates))["b"]
      Array([0.1, 0.1, 0.1], dtype=float32)

    References:
      Zhao et al., `PyTorch FSDP: Experiences on Scaling Fully Sharded Data Parallel
      <https://arxiv.org/abs/2304.11277>`_, VLDB 2023 (flat parameters).

      Rajbhandari et al., `ZeRO: Memory Optimizations Toward Training Trillion Parameter
      Models <https://arxiv.org/abs/1910.02054>`_, SC 2020 (contiguous partitioned buffers).
    """

    treedef: Any  # jax.tree_util.PyTreeDef
    leaves: tuple[PackedLeaf, ...]
    sizes: Mapping[str, int]
    dtypes: Mapping[str, np.dtype]
    decayed: Mapping[str, bool]
    has_mask: bool
    sharding: NamedSharding | None

    def __hash__(self) -> int:
        return hash((self.treedef, self.leaves, tuple(self.sizes.items()), self.sharding))

    @classmethod
    def from_params(
        cls,
        params: Any,
        *,
        mask: Any = None,
        sharding: NamedSharding | None = None,
    ) -> "PackedLayout":
        """The layout of ``params``: one buffer per dtype, and per mask value with ``mask``.

        Args:
          params: the params tree (arrays, or ``jax.ShapeDtypeStruct`` from
            ``jax.eval_shape``). Every leaf must have a floating or complex dtype.
          mask: which params are decayed, as for :func:`adam_jax.adamw`: a tree of Python
            bools shaped like ``params`` (or a prefix of it), or a callable
            ``params -> that tree``; None decays all (one buffer per dtype).
          sharding: a ``NamedSharding`` with a 1-D spec (``P("data")``, or a tuple of mesh
            axes) to split every buffer over, FSDP-style; None keeps them whole.

        Returns:
          The ``PackedLayout``.

        Raises:
          TypeError: a leaf whose dtype no buffer can hold (integers, bools), named by its
            key path; a mask leaf that is not a Python bool.
          ValueError: a mask of another tree (the first differing key path is named); a
            sharding whose spec is not 1-D.
        """
        flat, treedef = jax.tree_util.tree_flatten_with_path(params)
        flags = _mask_flags(mask, params, treedef) if mask is not None else None
        shards = _num_shards(sharding) if sharding is not None else 1
        leaves: list[PackedLeaf] = []
        sizes: dict[str, int] = {}
        dtypes: dict[str, np.dtype] = {}
        decayed: dict[str, bool] = {}
        for i, (path, leaf) in enumerate(flat):
            name = jax.tree_util.keystr(path)
            dtype = np.dtype(jnp.result_type(leaf))
            if not jnp.issubdtype(dtype, jnp.inexact):
                raise TypeError(
                    f"params{name} has dtype {dtype}; a packed layout holds floating and "
                    "complex leaves only (Adam steps nothing else). Keep integer and bool "
                    "leaves out of the params tree."
                )
            key = dtype.name
            if flags is not None:
                key += "/" + (DECAYED if flags[i] else UNDECAYED)
            shape = tuple(int(d) for d in np.shape(leaf))
            offset = sizes.get(key, 0)
            leaves.append(PackedLeaf(name, key, offset, shape, dtype))
            sizes[key] = offset + math.prod(shape)
            dtypes[key] = dtype
            decayed[key] = True if flags is None else flags[i]
        padded = {key: -(-size // shards) * shards for key, size in sorted(sizes.items())}
        return cls(
            treedef=treedef,
            leaves=tuple(leaves),
            sizes=padded,
            dtypes={key: dtypes[key] for key in padded},
            decayed={key: decayed[key] for key in padded},
            has_mask=mask is not None,
            sharding=sharding,
        )

    @property
    def mask(self) -> dict[str, bool] | None:
        """The weight-decay mask of the buffers (for ``adamw(mask=...)``), None without one."""
        return dict(self.decayed) if self.has_mask else None

    def pack(self, tree: Any) -> dict[str, jax.Array]:
        """``tree`` (params, or any tree of the params' structure, shapes and dtypes) packed.

        Copies every leaf into its buffer (zero padding at the end, with a sharding), and
        puts the buffers on the layout's sharding. Works eagerly and under ``jax.jit``.

        Raises:
          ValueError: ``tree`` has another structure (the first differing key path is
            named) or a leaf of another shape.
          TypeError: a leaf of another dtype than the layout's.
        """
        return self._pack(tree, "tree", same_dtype=True)

    def unpack(self, buffers: Mapping[str, jax.Array]) -> Any:
        """The params tree as views of ``buffers``: a slice and a reshape per leaf.

        Under ``jax.jit`` the slices fuse into their consumers. With a sharding, each buffer
        is first gathered whole (an all-gather inside the loss; its gradient is
        reduce-scattered back to the buffer's sharding). Differentiable in reverse mode
        (``jax.grad``, ``jax.vjp``): the gradient writes each leaf's part in place, one pass
        over each buffer; forward mode (``jax.jvp``) is not defined.

        Raises:
          ValueError: ``buffers`` are not this layout's (keys or shapes differ).
          TypeError: a buffer of another dtype than the layout's.
        """
        self._check_buffers(buffers, "buffers", same_dtype=True)
        return self._unpack(buffers)

    def pack_state(self, opt_state: Any) -> Any:
        """``opt_state`` with every subtree shaped like the params packed.

        Such subtrees are the per-param parts of an optax state (``mu``, ``nu``, ``nu_max``
        of :class:`adam_jax.ScaleByAdamState`, and those of any other transformation): they
        are found by structure and leaf shapes, and packed in their own dtype (a float32
        moment of a bfloat16 param stays float32). The rest (step counts, schedules' counts)
        is kept. The result is the state of the same optimizer run on the packed params.
        """
        return jax.tree.map(
            lambda x: self._pack(x, "opt_state", same_dtype=False) if self._is_tree(x) else x,
            opt_state,
            is_leaf=self._is_tree,
        )

    def unpack_state(self, opt_state: Any) -> Any:
        """``opt_state`` with every subtree shaped like the buffers unpacked to the tree form.

        The inverse of :meth:`adam_jax.PackedLayout.pack_state`: a state stepped on the
        packed params becomes, bitwise, the state of the same optimizer stepped on the tree.
        """
        return jax.tree.map(
            lambda x: self._unpack(x) if self._is_buffers(x) else x,
            opt_state,
            is_leaf=self._is_buffers,
        )

    # --- internals ---------------------------------------------------------------------

    def _pack(self, tree: Any, what: str, *, same_dtype: bool) -> dict[str, jax.Array]:
        paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
        if treedef != self.treedef:
            reference = self.treedef.unflatten([0] * self.treedef.num_leaves)
            raise ValueError(
                f"{what} is not a tree of this layout: {_first_difference(tree, reference)}"
            )
        parts: dict[str, list[jax.Array]] = {key: [] for key in self.sizes}
        for slot, (_, leaf) in zip(self.leaves, paths_and_leaves, strict=True):
            shape = tuple(np.shape(leaf))
            if shape != slot.shape:
                raise ValueError(
                    f"{what}{slot.path} has shape {shape}; this layout was built for {slot.shape}."
                )
            dtype = np.dtype(jnp.result_type(leaf))
            if same_dtype and dtype != slot.dtype:
                raise TypeError(
                    f"{what}{slot.path} has dtype {dtype}; this layout was built for {slot.dtype}."
                )
            parts[slot.buffer].append(jnp.ravel(leaf))
        buffers = {}
        for key, arrays in parts.items():
            dtypes = {x.dtype for x in arrays}
            if len(dtypes) > 1:
                raise TypeError(
                    f"{what}'s leaves for buffer {key!r} have dtypes {sorted(map(str, dtypes))}; "
                    "one buffer holds one dtype."
                )
            padding = self.sizes[key] - sum(x.size for x in arrays)
            if padding:
                arrays.append(jnp.zeros(padding, arrays[0].dtype))
            buffer = jnp.concatenate(arrays) if len(arrays) > 1 else arrays[0]
            buffers[key] = self._place(buffer, self.sharding)
        return buffers

    def _unpack(self, buffers: Mapping[str, jax.Array]) -> Any:
        if self.sharding is not None:
            whole = NamedSharding(self.sharding.mesh, PartitionSpec())
            # Constrained to the layout's sharding first, so that the gradient is too.
            buffers = {
                key: self._place(self._place(b, self.sharding), whole) for key, b in buffers.items()
            }
        return self.treedef.unflatten(_views(self, dict(buffers)))

    def _check_buffers(self, buffers: Any, what: str, *, same_dtype: bool) -> None:
        if not isinstance(buffers, Mapping) or set(buffers) != set(self.sizes):
            keys = sorted(buffers) if isinstance(buffers, Mapping) else type(buffers).__name__
            raise ValueError(
                f"{what} must be this layout's buffers, a dict with keys {sorted(self.sizes)}; "
                f"got {keys}."
            )
        for key, size in self.sizes.items():
            shape = tuple(np.shape(buffers[key]))
            if shape != (size,):
                raise ValueError(
                    f"{what}[{key!r}] has shape {shape}; this layout's buffer is ({size},) "
                    "(a buffer of another tree?)."
                )
            dtype = np.dtype(jnp.result_type(buffers[key]))
            if same_dtype and dtype != self.dtypes[key]:
                raise TypeError(
                    f"{what}[{key!r}] has dtype {dtype}; this layout's buffer is "
                    f"{self.dtypes[key]}."
                )

    def _is_buffers(self, x: Any) -> bool:
        """Whether ``x`` has the buffers' keys and lengths (in any dtype)."""
        return (
            isinstance(x, Mapping)
            and set(x) == set(self.sizes)
            and all(tuple(np.shape(x[k])) == (n,) for k, n in self.sizes.items())
        )

    def _is_tree(self, x: Any) -> bool:
        """Whether ``x`` has the params' structure and leaf shapes (in any dtype)."""
        leaves, treedef = jax.tree.flatten(x)
        return treedef == self.treedef and all(
            tuple(np.shape(leaf)) == slot.shape
            for leaf, slot in zip(leaves, self.leaves, strict=True)
        )

    @staticmethod
    def _place(x: jax.Array, sharding: NamedSharding | None) -> jax.Array:
        """``x`` on ``sharding``: a reshard on Explicit mesh axes, a constraint on Auto ones."""
        if sharding is None:
            return x
        if sharding.mesh.are_all_axes_explicit:
            return jax.sharding.reshard(x, sharding)
        return jax.lax.with_sharding_constraint(x, sharding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _views(layout: PackedLayout, buffers: dict[str, jax.Array]) -> list[jax.Array]:
    """The leaves as slices and reshapes of ``buffers``, in the layout's leaf order.

    Its gradient writes each leaf's cotangent in place into zeros, one buffer pass in all.
    Autodiff's own transpose of a slice is a pad, and the gradient would sum one padded copy
    of the buffer per leaf (the buffer streamed once per leaf); that of a split is one
    concatenation, which XLA's CPU backend ran 5x slower than the update-slices on the seed's
    MLP (and fused its matmuls worse). Forward mode (``jax.jvp``) is not defined.
    """
    return [
        jax.lax.slice(buffers[s.buffer], (s.offset,), (s.offset + math.prod(s.shape),)).reshape(
            s.shape
        )
        for s in layout.leaves
    ]


def _views_fwd(layout: PackedLayout, buffers: dict[str, jax.Array]):
    return _views(layout, buffers), None


def _views_bwd(layout: PackedLayout, _, cotangents: list[jax.Array]):
    grads = {key: jnp.zeros(size, layout.dtypes[key]) for key, size in layout.sizes.items()}
    for slot, g in zip(layout.leaves, cotangents, strict=True):
        grads[slot.buffer] = jax.lax.dynamic_update_slice(
            grads[slot.buffer], jnp.ravel(g), (slot.offset,)
        )
    return (grads,)


_views.defvjp(_views_fwd, _views_bwd)


def _num_shards(sharding: NamedSharding) -> int:
    """How many pieces ``sharding`` cuts a 1-D buffer into."""
    if not isinstance(sharding, NamedSharding) or len(sharding.spec) > 1:
        raise ValueError(
            "sharding must be a NamedSharding with a 1-D spec such as P('data') (every buffer "
            f"is 1-D), got {sharding!r}."
        )
    axes = sharding.spec[0] if len(sharding.spec) else None
    if axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else axes
    return math.prod(sharding.mesh.shape[a] for a in axes)


def _mask_flags(mask: Any, params: Any, treedef: Any) -> list[bool]:
    """Per leaf of ``params``, whether weight decay applies (``mask`` as optax's)."""
    tree = mask(params) if callable(mask) else mask
    try:
        flags = treedef.flatten_up_to(jax.tree.broadcast(tree, params))
    except (ValueError, TypeError):
        raise ValueError(
            "mask is not a tree of the params (nor a prefix of it): "
            + _first_difference(tree, params)
        ) from None
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
    for path, flag in zip(paths, flags, strict=True):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(
                f"mask{path} is {flag!r}; a packed layout needs a Python bool per leaf (the "
                "mask decides which buffer a leaf goes to)."
            )
    return [bool(f) for f in flags]


def _first_difference(tree: Any, reference: Any) -> str:
    """Where ``tree`` departs from ``reference``: a key path one has and the other lacks.

    A leaf of ``tree`` may stand for a whole subtree of ``reference`` (a mask prefix).
    """
    is_none = lambda x: x is None  # noqa: E731  # a None leaf of a mask is a missing subtree
    ours = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_none)[0]]
    theirs = [p for p, _ in jax.tree_util.tree_flatten_with_path(reference)[0]]
    for path in ours:
        if not any(t[: len(path)] == path for t in theirs):
            return f"it has {jax.tree_util.keystr(path)!r}, which the params have not."
    for path in theirs:
        if not any(path[: len(p)] == p for p in ours):
            return f"it lacks {jax.tree_util.keystr(path)!r}, a leaf of the params."
    return (
        f"the containers differ: {jax.tree.structure(tree)} against "
        f"{jax.tree.structure(reference)}."
    )
