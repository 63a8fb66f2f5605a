"""The training step and the scan-chunked loop: pure functions of the state.

``train_step(state, train) -> (state, metrics)`` is the whole step (batch,
forward, backward, adam_jax update, metrics). ``make_run_chunk`` runs it in one
jitted, donated ``lax.scan``, so the host is touched once per chunk. With a
``PackedLayout`` the state holds the params and the optimizer state as flat buffers and the
loss reads ``layout.unpack`` of them; ``tree_form`` and ``packed_form`` convert a state between
the two forms (checkpoints hold the tree form).
"""

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import PartitionSpec

from adam_jax import PackedLayout
from adam_jax.training import distributed
from adam_jax.training.tasks.base import Problem


class TrainState(NamedTuple):
    """Everything a step reads and writes; a checkpoint saves exactly this."""

    step: jax.Array  # int32 scalar: steps done
    params: Any
    opt_state: Any
    data_key: jax.Array  # uint32 key data of the minibatch order


def data_key(seed) -> jax.Array:
    """The key data of the minibatch order of run ``seed`` (a stream apart from the weights')."""
    return jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1))


def init_state(
    problem: Problem, optimizer: optax.GradientTransformation, seed: int, opt_state=None
) -> TrainState:
    """The problem's params, the optimizer's state, the data key of ``seed``.

    ``opt_state`` None starts at step 0 with ``optimizer.init``; a given state
    (a run continued from another framework) is kept, and the step counter
    continues at its ``count``.
    """

    @jax.jit
    def init(params, seed, opt_state):
        if opt_state is None:
            return TrainState(
                jnp.zeros((), jnp.int32), params, optimizer.init(params), data_key(seed)
            )
        counts = optax.tree_utils.tree_get_all_with_path(opt_state, "count")
        step = jnp.asarray(counts[0][1], jnp.int32)
        return TrainState(step, params, opt_state, data_key(seed))

    return init(problem.params, seed, opt_state)


def tree_form(state: TrainState, layout: PackedLayout) -> TrainState:
    """``state`` with its packed params and optimizer state unpacked to the params' tree."""
    return state._replace(
        params=layout.unpack(state.params), opt_state=layout.unpack_state(state.opt_state)
    )


def packed_form(state: TrainState, layout: PackedLayout) -> TrainState:
    """``state`` (tree form) with its params and optimizer state packed by ``layout``."""
    return state._replace(
        params=layout.pack(state.params), opt_state=layout.pack_state(state.opt_state)
    )


def model_params(params, *, gather_params: bool = False, layout: PackedLayout | None = None):
    """The params as the model takes them: ``layout.unpack`` of packed buffers (which
    all-gathers a sharded layout's), or the tree all-gathered (``gather_params``, FSDP under
    ``jax.set_mesh``), or as they are."""
    if layout is not None:
        return layout.unpack(params)
    return distributed.gather(params) if gather_params else params


def make_loss_fn(
    problem: Problem,
    loss_dtype,
    *,
    gather_params: bool = False,
    layout: PackedLayout | None = None,
) -> Callable:
    """``loss_fn(params, (x, y)) -> (loss, aux)``: the task's loss of the model's predictions,
    cast to ``loss_dtype``; ``gather_params`` all-gathers FSDP-sharded params first (under
    ``jax.set_mesh``); with ``layout``, ``params`` are its buffers and the gradient is too."""
    loss_dtype = jnp.dtype(loss_dtype)

    def loss_fn(params, batch):
        x, y = batch
        params = model_params(params, gather_params=gather_params, layout=layout)
        pred = nnx.merge(problem.graphdef, params)(x)
        return problem.loss(pred.astype(loss_dtype), y)

    return loss_fn


def make_train_step(
    problem: Problem,
    optimizer: optax.GradientTransformation,
    *,
    loss_dtype,
    learning_rate: optax.ScalarOrSchedule,
    loss_scale: float = 1.0,
    epsilon_report: Callable | None = None,
    split_batch: bool = False,
    gather_params: bool = False,
    layout: PackedLayout | None = None,
) -> Callable:
    """The pure step ``train_step(state, train) -> (state, metrics)``.

    Args:
      problem: the task's problem.
      optimizer: the optax transformation (an adam_jax optimizer).
      loss_dtype: dtype of the loss (the model's predictions are cast to it).
      learning_rate: the optimizer's, logged as ``lr`` (a schedule is
        evaluated at the step count before the update, as optax does).
      loss_scale: static loss scale S: gradients of S * loss, divided by S in
        the params' dtype; 1 is off and adds no arithmetic.
      epsilon_report: ``opt_state -> dict`` with ``dominated_fraction``,
        logged as ``eps_dominated``; ``None`` logs nothing.
      split_batch: split each batch's rows over the mesh's ``"data"`` axis
        (data parallel; run under ``jax.set_mesh`` with Explicit axes).
      gather_params: all-gather the params where the model uses them (FSDP).
      layout: the ``PackedLayout`` of the state's params and optimizer state, or None (a
        tree); the loss reads ``layout.unpack`` of the buffers (which gathers a sharded
        layout). The epsilon metric is the tree's: the same coordinates (a sharded layout's
        state is unpacked first, for its padding), in another order only with a mask, which
        changes no bit of the fraction below 2**24 coordinates (its float32 sum is exact).

    Returns:
      ``train_step``; its metrics are the scalars ``loss`` (before the update),
      ``lr`` and, with ``epsilon_report``, ``eps_dominated``.
    """
    loss_fn = make_loss_fn(problem, loss_dtype, gather_params=gather_params, layout=layout)

    def scaled_loss_fn(params, batch):
        loss, aux = loss_fn(params, batch)
        return loss * loss_scale, (loss, aux)

    def train_step(state: TrainState, train):
        batch = problem.batch(train, jax.random.wrap_key_data(state.data_key), state.step)
        if split_batch:
            spec = PartitionSpec(distributed.DATA_AXIS)
            batch = jax.tree.map(lambda a: jax.sharding.reshard(a, spec), batch)
        if loss_scale == 1:
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        else:
            (_, (loss, _)), grads = jax.value_and_grad(scaled_loss_fn, has_aux=True)(
                state.params, batch
            )
            grads = jax.tree.map(lambda g: g / jnp.asarray(loss_scale, g.dtype), grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        lr = learning_rate(state.step) if callable(learning_rate) else learning_rate
        metrics = {"loss": loss, "lr": jnp.asarray(lr)}
        if epsilon_report is not None:
            # adam_jax.epsilon_report concatenates every leaf, which Explicit sharding refuses
            # for leaves sharded differently: it reads a gathered copy under FSDP. A sharded
            # layout's state is read unpacked (its padding is no coordinate); an unsharded
            # one's buffers hold the tree's coordinates, in the tree's order without a mask.
            if layout is not None and layout.sharding is not None:
                report_state = layout.unpack_state(opt_state)
            else:
                report_state = distributed.gather(opt_state) if gather_params else opt_state
            metrics["eps_dominated"] = epsilon_report(report_state)["dominated_fraction"]
        return TrainState(state.step + 1, params, opt_state, state.data_key), metrics

    return train_step


def make_run_chunk(train_step: Callable, chunk: int) -> jax.stages.Wrapped:
    """``run_chunk(state, train, n) -> (state, metrics, finite)``, jitted, ``state`` donated.

    Runs the first ``n <= chunk`` steps of a ``lax.scan`` of length ``chunk``
    and skips the rest (their metrics are NaN). The compiled program is the
    same for every ``n``, so where a run starts or stops does not change a bit
    of its results. ``metrics`` holds arrays of length ``chunk``; ``finite``
    says whether every array of the new state is finite.
    """

    @partial(jax.jit, donate_argnums=0)
    def run_chunk(state: TrainState, train, n):
        shapes = jax.eval_shape(train_step, state, train)[1]
        skipped = jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)

        def body(state, i):
            return jax.lax.cond(i < n, train_step, lambda s, _: (s, skipped), state, train)

        state, metrics = jax.lax.scan(body, state, jnp.arange(chunk))
        finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(state)]))
        return state, metrics, finite

    return run_chunk


def make_evaluate(
    problem: Problem,
    loss_dtype,
    *,
    gather_params: bool = False,
    layout: PackedLayout | None = None,
) -> jax.stages.Wrapped | None:
    """``evaluate(params, test) -> {"test_<name>": scalar}``, jitted, from the task's
    ``test_metrics``; ``None`` when the task has no held-out set or metrics.
    ``gather_params``: all-gather FSDP-sharded params first; ``layout``: the params are its
    buffers."""
    if problem.test is None or problem.test_metrics is None:
        return None
    loss_dtype = jnp.dtype(loss_dtype)

    @jax.jit
    def evaluate(params, test):
        params = model_params(params, gather_params=gather_params, layout=layout)
        pred = nnx.merge(problem.graphdef, params)(test["x"]).astype(loss_dtype)
        return {f"test_{k}": v for k, v in problem.test_metrics(pred, test["y"]).items()}

    return evaluate


def next_stop(step: int, total: int, log_every: int, ckpt_every: int) -> int:
    """Where the chunk that starts after ``step`` ends: the next multiple of ``log_every``
    or of ``ckpt_every``, or ``total``, whichever comes first."""
    return min((step // log_every + 1) * log_every, (step // ckpt_every + 1) * ckpt_every, total)
