"""torch's layout of each module type, and the check of a name map against it and a JAX template.

torch stores an ``nn.Linear`` weight as (out, in) and an ``nn.Conv{1,2,3}d`` weight as
(out, in, *kernel); Flax's kernels are (in, out) and (*kernel, in, out): ``interop.linear``
and ``interop.conv`` move them. ``nn.Embedding``'s (num_embeddings, dim) weight is
``nnx.Embed``'s embedding, and a norm's 1-D weight and bias (``LayerNorm``, ``BatchNorm``,
``GroupNorm``) are its scale and bias: their layouts are kept.

A state dict names its tensors but not their modules; the kinds are inferred from names and
shapes (a 2-D ``weight`` with a ``bias`` of its first dimension is an ``nn.Linear``'s). A
weight whose shape reads the same in torch's layout and in JAX's (a square matrix) cannot
show which one it is in, so the name map must say: transposed, or kept on purpose
(``interop.as_is``). A template, the JAX params (or ``jax.eval_shape`` of them), checks
every shape too.
"""

from collections.abc import Mapping
from typing import Any

from adam_jax.interop._tree import Leaf, Path, as_is, conv, leaves_by_path, linear, path_str

Shape = tuple[int, ...]


def module_kind(name: str, shapes: Mapping[str, Shape]) -> str | None:
    """What ``name`` is, from its shape and its siblings': a description, or None for a tensor
    whose layout no module type changes (1-D, or not a weight)."""
    shape = shapes[name]
    module, _, last = name.rpartition(".")
    if "weight" not in last or not 2 <= len(shape) <= 5:
        return None
    if len(shape) > 2:
        return f"a convolution's (out, in, *kernel) weight (nn.Conv{len(shape) - 2}d)"
    bias = shapes.get(f"{module}.bias" if module else "bias")
    if last == "weight" and bias == (shape[0],):
        return "an nn.Linear weight (out, in; its bias has the first dimension)"
    return "an (out, in) matrix (nn.Linear without bias) or an nn.Embedding weight"


def _layouts(path: Path, shape: Shape) -> list[tuple[str, Leaf]]:
    """Every map entry that could fit a torch weight of ``shape``, as spelled and as a Leaf:
    torch's module type's permutation (``linear`` or ``conv``) first, then ``as_is``."""
    spelled = f"'{path_str(path)}'"
    kept = (f"interop.as_is({spelled})", as_is(path))
    if len(shape) == 2:
        return [(f"interop.linear({spelled})", linear(path)), kept]
    if 3 <= len(shape) <= 5:
        n = len(shape) - 2
        return [(f"interop.conv({spelled}, {n})", conv(path, n)), kept]
    return [kept]


def check_declared(shapes: Mapping[str, Shape], names: Mapping[str, Leaf]) -> None:
    """Raises for weights whose layout the name map leaves unsaid and whose shape cannot show it.

    Args:
      shapes: torch name -> shape in torch's layout, for every mapped name.
      names: the normalized name map.

    Raises:
      ValueError: listing every such entry with the two fixes.
    """
    unsaid = []
    for name, leaf in names.items():
        shape = shapes[name]
        kind = module_kind(name, shapes)
        if kind is None or leaf.declared:
            continue
        layouts = _layouts(leaf.path, shape)
        if layouts[0][1].jax_shape(shape, name) == shape:
            fixes = " or ".join(spelled for spelled, _ in layouts)
            unsaid.append(f"'{name}' -> '{path_str(leaf.path)}', shape {shape}, {kind}: {fixes}")
    if unsaid:
        raise ValueError(
            "the name map neither transposes nor declares kept these torch weights, whose shape "
            "is the same in torch's layout and in JAX's, so an untransposed load would go "
            "through silently:\n  "
            + "\n  ".join(unsaid)
            + "\nMap each with interop.linear(path) (an nn.Linear's (out, in) weight as a Flax "
            "(in, out) kernel), interop.conv(path, n) (a convolution's), or interop.as_is(path) "
            "to keep torch's layout on purpose (an nn.Embedding's weight; a model computing "
            "x @ w.T)."
        )


def check_template(shapes: Mapping[str, Shape], names: Mapping[str, Leaf], template: Any) -> None:
    """Raises unless the converted params have exactly the template's paths and shapes.

    Args:
      shapes: torch name -> shape in torch's layout, for every mapped name.
      names: the normalized name map.
      template: the JAX params tree (arrays, or ``jax.eval_shape``'s ``ShapeDtypeStruct``s),
        keyed by the name map's paths.

    Raises:
      ValueError: naming the first entry whose path is not in the template, the first template
        leaf no entry maps, or the first shape that differs, with the map entry that fits.
    """
    expected = {path: tuple(leaf.shape) for path, leaf in leaves_by_path(template).items()}
    by_path = {leaf.path: name for name, leaf in names.items()}
    for name, leaf in names.items():
        if leaf.path not in expected:
            shown = sorted(path_str(p) for p in expected)
            raise ValueError(
                f"name_map's '{name}' -> '{path_str(leaf.path)}' is not in the template, whose "
                f"paths are {shown[:6]}{' ...' if len(shown) > 6 else ''}."
            )
    for path in expected:
        if path not in by_path:
            raise ValueError(
                f"the template's '{path_str(path)}' is mapped by no torch name in name_map."
            )
    for name, leaf in names.items():
        shape = shapes[name]
        ours, theirs = leaf.jax_shape(shape, name), expected[leaf.path]
        if ours == theirs:
            continue
        kind = module_kind(name, shapes) or "a tensor"
        fits = [
            s
            for s, candidate in _layouts(leaf.path, shape)
            if candidate.jax_shape(shape, name) == theirs
        ]
        fix = (
            f"map it with {fits[0]}" if fits else "no layout fits: is it mapped to the right path?"
        )
        raise ValueError(
            f"'{name}' ({kind}, torch shape {shape}) -> '{path_str(leaf.path)}' would be "
            f"{ours}, the template has {theirs}: {fix}."
        )
