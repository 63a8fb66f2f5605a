"""Train with adam_jax: the seed's MLP by default, scikit-learn's digits on request.

The seed is a PyTorch program: a 1000 -> 100 -> ReLU -> 10 MLP, sum-of-squares
loss on 64 random inputs and targets, ``torch.optim.Adam(lr=1e-4,
amsgrad=True, eps=1e-8)``, 500 steps. ``--task digits`` trains an MLP on the
8x8 digits bundled with scikit-learn (no download) with cross-entropy and
minibatches. Each run writes config.json, metrics.jsonl, summary.json, loss.png
and orbax checkpoints to --out (default runs/<task>-<timestamp>):

    python scripts/train.py                              # the seed's run
    python scripts/train.py --task digits                # >= 95% test accuracy
    python scripts/train.py --optimizer adam --convention optax --steps 100
    python scripts/train.py --init-from seed_torch.npz   # PyTorch's weights and data
    python scripts/train.py --compute-dtype bfloat16     # mixed precision
    python scripts/train.py --steps 1000 --resume runs/seed-20261125-101500

The whole step (forward, backward, adam_jax update, metrics) is one pure
function; ``lax.scan`` runs it --log-every times per call of one jitted,
donated chunk, so the host is touched once per chunk. See docs/training.md.
"""

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import sys
import time
from functools import partial
from importlib import metadata
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

import adam_jax

# --- the tasks -----------------------------------------------------------------
SEED_SIZES = 1000, 100, 10  # the seed's input, hidden and output sizes; its N is --batch-size
DIGITS_HIDDEN = 128  # hidden units of the digits MLP (64 -> 128 -> ReLU -> 10)
DIGITS_TEST_FRACTION = 0.2  # held-out share of the 1,797 digits, drawn with --seed
# Flags whose default depends on --task (None on the command line means "the task's").
TASK_DEFAULTS = {
    "seed": {"steps": 500, "lr": 1e-4, "optimizer": "amsgrad", "batch_size": 64, "log_every": 50},
    "digits": {"steps": 2000, "lr": 1e-3, "optimizer": "adam", "batch_size": 64, "log_every": 100},
}
# --- output ----------------------------------------------------------------------
CKPT_KEEP = 3  # newest checkpoints kept on disk
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "loss.png", "checkpoints")
FLOAT_DTYPES = ("float64", "float32", "bfloat16", "float16")
METRICS = ("loss", "lr", "eps_dominated")  # per step, in metrics.jsonl's order


def _adam_family(factory):
    """Builds an adam_jax Adam-type optimizer from the parsed flags."""

    def build(learning_rate, args):
        kwargs = {"convention": args.convention}
        if args.weight_decay is not None:
            kwargs["weight_decay"] = args.weight_decay
        return factory(
            learning_rate,
            args.b1,
            args.b2,
            args.eps,
            args.eps_root,
            mu_dtype=args.mu_dtype,
            nu_dtype=args.nu_dtype,
            **kwargs,
        )

    return build


def _adam_atan2(learning_rate, args):
    kwargs = {} if args.weight_decay is None else {"weight_decay": args.weight_decay}
    return adam_jax.adam_atan2(
        learning_rate, args.b1, args.b2, mu_dtype=args.mu_dtype, nu_dtype=args.nu_dtype, **kwargs
    )


# name -> (build(learning_rate, args), whether --eps/--eps-root/--convention apply and
# eps_dominated is logged). Add an optimizer here and it is a --optimizer choice.
OPTIMIZERS = {
    "adam": (_adam_family(adam_jax.adam), True),
    "amsgrad": (_adam_family(adam_jax.amsgrad), True),
    "adamw": (_adam_family(adam_jax.adamw), True),
    "adam_atan2": (_adam_atan2, False),  # Everett et al. (2024): atan2 instead of epsilon
}


# --- model and data ----------------------------------------------------------------
class MLP(nnx.Module):
    """Linear -> ReLU -> Linear, as the seed's ``torch.nn.Sequential``.

    Params are stored in ``param_dtype``; the forward pass casts params and
    inputs to ``dtype`` (the compute dtype), so gradients come back in
    ``param_dtype``. Flax's default init; see :func:`init_params` for PyTorch's.
    """

    def __init__(self, d_in, hidden, d_out, *, param_dtype, dtype, rngs):
        kwargs = {"param_dtype": param_dtype, "dtype": dtype, "rngs": rngs}
        self.hidden = nnx.Linear(d_in, hidden, **kwargs)
        self.out = nnx.Linear(hidden, d_out, **kwargs)

    def __call__(self, x):
        return self.out(jax.nn.relu(self.hidden(x)))


def init_params(args, sizes, dtypes, rng: np.random.Generator):
    """The MLP's structure and initial params, in ``--init``'s scheme.

    ``torch``: ``torch.nn.Linear``'s default, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    for weights and biases, drawn with NumPy (jax.random would compile a
    threefry kernel per tensor, seconds on a CPU). ``flax``: Flax's default.
    """

    def make(rngs):
        return MLP(*sizes, rngs=rngs, **dtypes)

    graphdef, params = nnx.split(nnx.eval_shape(lambda: make(nnx.Rngs(0))))
    if args.init == "flax":
        return graphdef, jax.jit(lambda s: nnx.state(make(nnx.Rngs(jax.random.key(s)))))(args.seed)
    pdt = dtypes["param_dtype"]

    def linear(fan_in, fan_out):
        bound = 1.0 / math.sqrt(fan_in)
        kernel = rng.uniform(-bound, bound, (fan_in, fan_out))
        return {
            "kernel": jnp.asarray(kernel, pdt),
            "bias": jnp.asarray(rng.uniform(-bound, bound, fan_out), pdt),
        }

    d_in, hidden, d_out = sizes
    nnx.replace_by_pure_dict(params, {"hidden": linear(d_in, hidden), "out": linear(hidden, d_out)})
    return graphdef, params


class Problem(NamedTuple):
    """A task made concrete: model, data and how to batch and score it."""

    graphdef: Any  # the model's structure; nnx.merge(graphdef, params) is the model
    params: Any  # nnx.State of the initial params
    train: dict  # arrays "x", "y" the steps draw batches from
    test: dict | None  # held-out "x", "y", or None
    loss: Any  # (pred, y) -> (loss, aux dict), pred already in the loss dtype
    batch: Any  # (train, data_key, step) -> (x, y) of that step
    steps_per_epoch: int


def sum_of_squares(pred, y):
    """``torch.nn.MSELoss(reduction='sum')``."""
    return jnp.sum((pred - y) ** 2), {}


def cross_entropy(logits, labels):
    """Mean cross-entropy of integer labels, and the accuracy."""
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return loss, {"accuracy": accuracy.astype(logits.dtype)}


def full_batch(train, data_key, step):
    del data_key, step
    return train["x"], train["y"]


def seed_problem(args, dtypes) -> Problem:
    """The seed's model and data: from ``--init-from`` or drawn with ``--seed``."""
    rng = np.random.default_rng(args.seed)
    graphdef, params = init_params(args, SEED_SIZES, dtypes, rng)
    d_in, _, d_out = SEED_SIZES
    x = rng.standard_normal((args.batch_size, d_in))
    y = rng.standard_normal((args.batch_size, d_out))
    if args.init_from is not None:
        with np.load(args.init_from) as saved:
            pdt = dtypes["param_dtype"]

            def layer(w, b):  # torch.nn.Linear stores weights as (out, in); Flax's are (in, out)
                return {"kernel": jnp.asarray(saved[w].T, pdt), "bias": jnp.asarray(saved[b], pdt)}

            torch_params = {"hidden": layer("w1", "b1"), "out": layer("w2", "b2")}
            nnx.replace_by_pure_dict(params, torch_params)
            x, y = saved["x"], saved["y"]
    train = {"x": jnp.asarray(x, args.dtype), "y": jnp.asarray(y, args.dtype)}
    return Problem(graphdef, params, train, None, sum_of_squares, full_batch, 1)


def digits_problem(args, dtypes) -> Problem:
    """scikit-learn's 8x8 digits, pixels scaled to [0, 1], split by ``--seed``."""
    from sklearn.datasets import load_digits

    images, labels = load_digits(return_X_y=True)
    order = np.random.default_rng(args.seed).permutation(len(labels))
    n_test = round(DIGITS_TEST_FRACTION * len(labels))
    test, train = order[:n_test], order[n_test:]
    images = (images / 16.0).astype(args.dtype)
    labels = labels.astype(np.int32)

    weights_rng = np.random.default_rng(args.seed + 1)  # a stream apart from the split's
    graphdef, params = init_params(args, (images.shape[1], DIGITS_HIDDEN, 10), dtypes, weights_rng)
    n_train, size = len(train), args.batch_size
    if size > n_train:
        raise UsageError(
            f"argument --batch-size: at most the {n_train} training digits, got {size}"
        )
    steps_per_epoch = n_train // size  # the last partial batch of an epoch is dropped

    def batch(data, data_key, step):
        # Each epoch's order is a pure function of (data_key, epoch): resuming needs no more state.
        epoch, i = jnp.divmod(step, steps_per_epoch)
        order = jax.random.permutation(jax.random.fold_in(data_key, epoch), n_train)
        idx = jax.lax.dynamic_slice_in_dim(order, i * size, size)
        return data["x"][idx], data["y"][idx]

    return Problem(
        graphdef,
        params,
        {"x": jnp.asarray(images[train]), "y": jnp.asarray(labels[train])},
        {"x": jnp.asarray(images[test]), "y": jnp.asarray(labels[test])},
        cross_entropy,
        batch,
        steps_per_epoch,
    )


TASKS = {"seed": seed_problem, "digits": digits_problem}


# --- the step ----------------------------------------------------------------------
class TrainState(NamedTuple):
    """Everything a step reads and writes; a checkpoint saves exactly this."""

    step: jax.Array  # int32 scalar: steps done
    params: Any
    opt_state: Any
    data_key: jax.Array  # uint32 key data of the minibatch order


def learning_rate(args):
    """``--lr`` as a float (constant) or an optax schedule of the step count."""
    if args.schedule == "constant":
        return args.lr
    if args.schedule == "cosine":
        return optax.cosine_decay_schedule(args.lr, args.decay_steps)
    return optax.warmup_cosine_decay_schedule(
        0.0, args.lr, args.warmup_steps, args.decay_steps, end_value=0.0
    )


def make_optimizer(args) -> optax.GradientTransformation:
    build, _ = OPTIMIZERS[args.optimizer]
    return build(learning_rate(args), args)


def make_steps(problem: Problem, optimizer, args, chunk: int):
    """The jitted chunk of ``chunk`` steps, and the jitted evaluation.

    Returns ``run_chunk(state, train, n) -> (state, metrics, finite)``, which
    runs the first ``n <= chunk`` steps of a ``lax.scan`` of length ``chunk``
    and skips the rest. The compiled program is the same for every ``n``, so
    where a run starts or stops does not change a single bit of its results.
    """
    graphdef = problem.graphdef
    loss_dtype = jnp.dtype(args.dtype)
    lr = learning_rate(args)
    _, logs_eps = OPTIMIZERS[args.optimizer]

    def loss_fn(params, batch):
        """The task's loss in the loss dtype (--dtype), and its aux dict."""
        x, y = batch
        pred = nnx.merge(graphdef, params)(x)
        return problem.loss(pred.astype(loss_dtype), y)

    def scaled_loss_fn(params, batch):
        loss, aux = loss_fn(params, batch)
        return loss * args.loss_scale, (loss, aux)

    def train_step(state: TrainState, train):
        """One step: batch, forward, backward, adam_jax update; the step's metrics."""
        batch = problem.batch(train, jax.random.wrap_key_data(state.data_key), state.step)
        if args.loss_scale == 1:
            (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch)
        else:  # static loss scaling: gradients of loss * S, divided by S in the params' dtype
            (_, (loss, _)), grads = jax.value_and_grad(scaled_loss_fn, has_aux=True)(
                state.params, batch
            )
            grads = jax.tree.map(lambda g: g / jnp.asarray(args.loss_scale, g.dtype), grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": loss, "lr": jnp.asarray(lr(state.step) if callable(lr) else lr)}
        if logs_eps:
            report = adam_jax.epsilon_report(
                opt_state, args.eps, convention=args.convention, b2=args.b2, eps_root=args.eps_root
            )
            metrics["eps_dominated"] = report["dominated_fraction"]
        return TrainState(state.step + 1, params, opt_state, state.data_key), metrics

    @partial(jax.jit, donate_argnums=0)
    def run_chunk(state: TrainState, train, n):
        shapes = jax.eval_shape(train_step, state, train)[1]
        skipped = jax.tree.map(lambda s: jnp.full(s.shape, jnp.nan, s.dtype), shapes)

        def body(state, i):
            return jax.lax.cond(i < n, train_step, lambda s, _: (s, skipped), state, train)

        state, metrics = jax.lax.scan(body, state, jnp.arange(chunk))
        finite = jnp.all(jnp.asarray([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(state)]))
        return state, metrics, finite

    @jax.jit
    def evaluate(params, test):
        loss, aux = loss_fn(params, (test["x"], test["y"]))
        return {"test_loss": loss, "test_accuracy": aux["accuracy"]}

    return run_chunk, evaluate


# --- checkpoints -------------------------------------------------------------------
def checkpoint_manager(out: str):
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=CKPT_KEEP, enable_async_checkpointing=False)
    return ocp.CheckpointManager(os.path.abspath(os.path.join(out, "checkpoints")), options=options)


def save_checkpoint(manager, state: TrainState, rows: list) -> None:
    """Saves the state and the metrics so far, under the state's step."""
    import orbax.checkpoint as ocp

    items = ocp.args.Composite(
        state=ocp.args.StandardSave(state._asdict()), metrics=ocp.args.JsonSave(rows)
    )
    manager.save(int(state.step), args=items)


def restore_checkpoint(out: str, like: TrainState) -> tuple[TrainState, list]:
    """The newest checkpoint in ``out``, with the structure and dtypes of ``like``."""
    import orbax.checkpoint as ocp

    path = os.path.join(out, "checkpoints")
    if not os.path.isdir(path):
        raise UsageError(f"argument --resume: {out} has no checkpoints/ directory")
    try:
        manager = checkpoint_manager(out)
        step = manager.latest_step()
        if step is None:
            raise ValueError("no finished checkpoint")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like._asdict())
        items = ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), metrics=ocp.args.JsonRestore()
        )
        restored = manager.restore(step, args=items)
        state, rows = TrainState(**restored.state), list(restored.metrics)
    except Exception as e:  # orbax raises many types for a damaged directory
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"argument --resume: cannot restore {path}: {first_line}") from e
    if int(state.step) != step or len(rows) != step:
        raise UsageError(f"argument --resume: checkpoint {step} in {path} is inconsistent")
    return state, rows


# --- the command line ------------------------------------------------------------------
class UsageError(Exception):
    """Bad input: reported on one line, exit code 2, nothing written."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def float_in(low: float, high: float, *, high_open: bool = False, low_open: bool = False):
    """An argparse type: a finite float in [low, high] (ends open as asked)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        value = float(text)
        inside = (low < value if low_open else low <= value) and (
            value < high if high_open else value <= high
        )
        if not (inside and math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be a finite number in {interval}, got {text}")
        return value

    parse.__name__ = "float"
    return parse


def build_parser() -> Parser:
    p = Parser(
        prog="train.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    task = p.add_argument_group("task")
    task.add_argument("--task", choices=sorted(TASKS), default="seed")
    task.add_argument(
        "--steps", type=positive_int, metavar="N", help="optimizer steps (seed 500, digits 2000)"
    )
    task.add_argument(
        "--batch-size",
        type=positive_int,
        metavar="N",
        help="seed: its N (64); digits: minibatch (64)",
    )
    task.add_argument("--seed", type=int, default=0, help="PRNG seed of weights, data and split")
    task.add_argument("--init", choices=["torch", "flax"], default="torch", help="weight init")
    task.add_argument("--init-from", help="seed task: .npz of scripts/seed_pytorch.py")
    opt = p.add_argument_group("optimizer")
    opt.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="seed amsgrad, digits adam")
    opt.add_argument("--convention", choices=sorted(adam_jax.CONVENTIONS), default="pytorch")
    opt.add_argument(
        "--lr", type=float_in(0, math.inf), help="peak learning rate (seed 1e-4, digits 1e-3)"
    )
    opt.add_argument(
        "--schedule", choices=["constant", "cosine", "warmup-cosine"], default="constant"
    )
    opt.add_argument(
        "--warmup-steps", type=nonnegative_int, metavar="N", help="default: 10%% of the steps"
    )
    opt.add_argument(
        "--decay-steps", type=positive_int, metavar="N", help="schedule length; default --steps"
    )
    opt.add_argument("--b1", type=float_in(0, 1, high_open=True), default=0.9)
    opt.add_argument("--b2", type=float_in(0, 1, high_open=True), default=0.999)
    opt.add_argument("--eps", type=float_in(0, math.inf), default=1e-8, help="Adam's epsilon")
    opt.add_argument("--eps-root", type=float_in(0, math.inf), default=0.0)
    opt.add_argument("--weight-decay", type=float_in(0, math.inf), help="default: the optimizer's")
    prec = p.add_argument_group("precision")
    prec.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        help="data, master params and loss (default float32, or the --init-from file's)",
    )
    prec.add_argument(
        "--param-dtype", choices=FLOAT_DTYPES, help="params' storage (default --dtype)"
    )
    prec.add_argument(
        "--compute-dtype",
        choices=["float32", "bfloat16", "float16"],
        help="forward and backward passes (default --param-dtype)",
    )
    prec.add_argument("--mu-dtype", choices=FLOAT_DTYPES, help="first moment (adam_jax's default)")
    prec.add_argument("--nu-dtype", choices=FLOAT_DTYPES, help="second moment")
    prec.add_argument(
        "--loss-scale",
        type=float_in(0, math.inf, low_open=True),
        default=1.0,
        help="static loss scale S: gradients of S*loss, divided by S (1: off)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--out", help="run directory (default runs/<task>-<timestamp>)")
    out.add_argument("--overwrite", action="store_true", help="replace the run files in --out")
    out.add_argument("--resume", metavar="DIR", help="continue the run in DIR up to --steps")
    out.add_argument(
        "--log-every",
        type=positive_int,
        metavar="N",
        help="steps per jitted chunk (seed 50, digits 100)",
    )
    out.add_argument(
        "--ckpt-every", type=positive_int, metavar="N", default=1000, help="checkpoint period"
    )
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    out.add_argument(
        "--print-loss",
        action="store_true",
        help="print 't loss' every step, as the seed does, instead of the progress bar",
    )
    return p


RESUME_FLAGS = {
    "--resume",
    "--steps",
    "--quiet",
    "--print-loss",
}  # the rest comes from DIR/config.json


def parse_args(argv: list) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    if args.resume is not None:
        return resume_args(args, given)
    if args.init_from is not None:
        read_init_file(args)
    for flag, value in TASK_DEFAULTS[args.task].items():
        if getattr(args, flag) is None:
            setattr(args, flag, value)
    args.dtype = args.dtype or "float32"
    args.param_dtype = args.param_dtype or args.dtype
    args.compute_dtype = args.compute_dtype or args.param_dtype
    args.decay_steps = args.decay_steps or args.steps
    if args.warmup_steps is None:
        args.warmup_steps = args.decay_steps // 10 if args.schedule == "warmup-cosine" else 0
    if args.warmup_steps >= args.decay_steps:
        p.error(f"argument --warmup-steps: must be < --decay-steps {args.decay_steps}")
    if not OPTIMIZERS[args.optimizer][1]:
        for flag in ("--eps", "--eps-root", "--convention"):
            if flag in given:
                p.error(f"argument {flag}: does not apply to --optimizer {args.optimizer}")
    try:
        make_optimizer(args)
    except ValueError as e:  # adam_jax names the hyperparameter first: "eps=1e-50 rounds to 0"
        name = str(e).split()[0].split("=")[0]
        flag = {"learning_rate": "lr"}.get(name, name).replace("_", "-")
        p.error(f"argument --{flag}: {e}")
    if args.out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out = os.path.join("runs", f"{args.task}-{stamp}")
    if os.path.exists(args.out) and not args.overwrite:
        p.error(f"argument --out: {args.out} exists; pass --overwrite to replace its run")
    if args.overwrite and os.path.exists(args.out) and not os.path.isdir(args.out):
        p.error(f"argument --out: {args.out} is a file, not a run directory")
    return args


def read_init_file(args) -> None:
    """Checks ``--init-from`` and takes N and the dtype from it."""
    if args.task != "seed":
        raise UsageError("argument --init-from: applies to --task seed only")
    try:
        with np.load(args.init_from) as saved:
            shapes = {k: saved[k].shape for k in ("x", "y", "w1", "b1", "w2", "b2")}
            dtype = str(saved["x"].dtype)
    except Exception as e:  # a missing file, not an .npz, a missing key
        raise UsageError(f"argument --init-from: cannot read {args.init_from}: {e}") from e
    d_in, hidden, d_out = SEED_SIZES
    n = shapes["x"][0]
    expected = {
        "x": (n, d_in),
        "y": (n, d_out),
        "w1": (hidden, d_in),
        "b1": (hidden,),
        "w2": (d_out, hidden),
        "b2": (d_out,),
    }
    if shapes != expected:
        raise UsageError(f"argument --init-from: shapes {shapes}, expected {expected}")
    if args.batch_size not in (None, n):
        raise UsageError(f"argument --batch-size: {args.init_from} holds N={n}")
    args.batch_size = n
    if args.dtype is None and dtype in ("float32", "float64"):
        args.dtype = dtype


def resume_args(given: argparse.Namespace, flags: set) -> argparse.Namespace:
    """The flags of the run in ``--resume DIR``, with the new ``--steps``."""
    extra = sorted(flags - RESUME_FLAGS)
    if extra:
        raise UsageError(f"argument {extra[0]}: cannot change on --resume (config.json fixes it)")
    path = os.path.join(given.resume, "config.json")
    try:
        with open(path) as f:
            saved = json.load(f)["args"]
        args = argparse.Namespace(**saved)
        defaults = vars(build_parser().parse_args([]))
        missing = sorted(set(defaults) - set(saved))
        if missing:
            raise ValueError(f"missing {missing}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"argument --resume: cannot read {path}: {e}") from e
    args.resume, args.out, args.overwrite = given.resume, given.resume, False
    args.quiet, args.print_loss = given.quiet, given.print_loss
    if given.steps is not None:
        args.steps = given.steps
    return args


# --- the run -----------------------------------------------------------------------
def versions() -> dict:
    names = ("jax", "jaxlib", "optax", "flax", "orbax-checkpoint", "numpy")
    found = {name: metadata.version(name) for name in names}
    return found | {"adam_jax": adam_jax.__version__, "python": platform.python_version()}


def device() -> dict:
    d = jax.devices()[0]
    return {"platform": d.platform, "kind": d.device_kind, "count": jax.device_count()}


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def start_run_dir(args, argv: list, rows: list) -> None:
    """Creates ``--out`` (or clears the run files in it) and writes config.json.

    metrics.jsonl starts with ``rows``: on resume, the metrics up to the
    checkpoint, dropping any lines a stopped run wrote after it.
    """
    os.makedirs(args.out, exist_ok=True)
    if args.overwrite:
        for name in RUN_FILES:
            path = os.path.join(args.out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    with open(os.path.join(args.out, "metrics.jsonl"), "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    config = {"args": vars(args), "command": argv, "versions": versions(), "device": device()}
    config["started"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    write_json(os.path.join(args.out, "config.json"), config)


def train(args, argv: list) -> int:
    """Sets up, checks, then runs; returns 0, or 1 when the loss stops being finite."""
    dtypes = {"param_dtype": jnp.dtype(args.param_dtype), "dtype": jnp.dtype(args.compute_dtype)}
    problem = TASKS[args.task](args, dtypes)
    optimizer = make_optimizer(args)

    @jax.jit
    def init(params, seed):
        data_key = jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1))
        return TrainState(jnp.zeros((), jnp.int32), params, optimizer.init(params), data_key)

    state = init(problem.params, args.seed)
    rows = []  # one dict per step, as in metrics.jsonl
    if args.resume is not None:
        state, rows = restore_checkpoint(args.resume, state)
        if int(state.step) >= args.steps:
            raise UsageError(
                f"argument --steps: the run in {args.resume} is at step {int(state.step)}; "
                f"ask for more than that"
            )
    start_run_dir(args, argv, rows)  # everything is checked: from here on the run writes
    metrics_path = os.path.join(args.out, "metrics.jsonl")
    manager = checkpoint_manager(args.out)

    run_chunk, evaluate = make_steps(problem, optimizer, args, args.log_every)
    start = int(state.step)
    t0 = time.perf_counter()
    run_chunk = run_chunk.lower(state, problem.train, np.int32(0)).compile()
    if problem.test is not None:
        evaluate = evaluate.lower(state.params, problem.test).compile()
    compile_s = time.perf_counter() - t0

    from tqdm import tqdm

    status, step, t0 = "completed", start, time.perf_counter()
    bar = tqdm(
        total=args.steps,
        initial=start,
        disable=args.quiet or args.print_loss,
        unit="step",
        file=sys.stderr,
        ncols=90,
    )
    with open(metrics_path, "a") as f, bar:
        while step < args.steps:
            stop = min(
                (step // args.log_every + 1) * args.log_every,
                (step // args.ckpt_every + 1) * args.ckpt_every,
                args.steps,
            )
            state, metrics, finite = run_chunk(state, problem.train, np.int32(stop - step))
            metrics = jax.device_get(metrics)  # the chunk's one host sync
            new = []
            for i in range(stop - step):
                row = {"step": step + i + 1} | {
                    k: float(metrics[k][i]) for k in METRICS if k in metrics
                }
                if args.task == "digits":
                    row["epoch"] = (step + i) // problem.steps_per_epoch
                new.append(row)
                if not math.isfinite(row["loss"]):
                    status = f"the loss is {row['loss']} at step {row['step']}"
                    break
            if status == "completed" and not finite:
                status = f"the params or optimizer state hold NaN or inf after step {stop}"
            if status == "completed" and problem.test is not None:
                new[-1] |= {k: float(v) for k, v in evaluate(state.params, problem.test).items()}
            rows += new
            step = new[-1]["step"]
            f.writelines(json.dumps(row) + "\n" for row in new)
            f.flush()
            if args.print_loss:  # the seed's "t loss" lines, t from 0
                for row in new:
                    print(row["step"] - 1, row["loss"])
            bar.update(len(new))
            bar.set_postfix(loss=f"{new[-1]['loss']:.4g}", refresh=False)
            if status != "completed":
                break
            if step % args.ckpt_every == 0 or step == args.steps:
                save_checkpoint(manager, state, rows)
    wall_s = time.perf_counter() - t0
    checkpoint_step = manager.latest_step()
    manager.close()

    summarize(args, rows, status, start, wall_s, compile_s, checkpoint_step)
    print(f"run written to {args.out}")
    return 0 if status == "completed" else 1


def summarize(args, rows, status, start, wall_s, compile_s, checkpoint_step) -> None:
    """Writes summary.json and loss.png, and prints the summary."""
    last = rows[-1]
    summary = {
        "task": args.task,
        "status": status,
        "final_loss": last["loss"],
        "steps": last["step"],
        "steps_run": last["step"] - start,
        "wall_s": wall_s,
        "compile_s": compile_s,
        "steps_per_s": (last["step"] - start) / wall_s,
        "checkpoint_step": checkpoint_step,
    }
    evals = [row for row in rows if "test_accuracy" in row]
    if evals:
        summary |= {k: evals[-1][k] for k in ("test_accuracy", "test_loss")}
    write_json(os.path.join(args.out, "summary.json"), summary)
    plot(rows, os.path.join(args.out, "loss.png"), title=f"{args.task}: {args.optimizer}")
    print(
        f"{args.task}: {summary['steps_run']} steps in {wall_s:.2f} s "
        f"({summary['steps_per_s']:.0f} steps/s), compile {compile_s:.2f} s; "
        f"final loss {last['loss']:.6g}"
        + (f", test accuracy {summary['test_accuracy']:.4f}" if evals else "")
    )
    if status != "completed":
        kept = "no checkpoint saved yet"
        if checkpoint_step is not None:
            kept = f"checkpoint of step {checkpoint_step} kept"
        print(f"train.py: stopped: {status}; {kept}", file=sys.stderr)


def plot(rows: list, path: str, *, title: str) -> None:
    """loss.png: the loss per step on a log scale, and the test accuracy if any."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evals = [row for row in rows if "test_accuracy" in row]
    fig, axes = plt.subplots(1, 2 if evals else 1, figsize=(10 if evals else 6, 4), squeeze=False)
    ax = axes[0, 0]
    ax.semilogy([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set(xlabel="step", ylabel="training loss", title=title)
    ax.grid(True, which="both", alpha=0.3)
    if evals:
        ax = axes[0, 1]
        ax.plot([r["step"] for r in evals], [r["test_accuracy"] for r in evals], marker=".")
        ax.set(xlabel="step", ylabel="test accuracy", title="held-out digits")
        ax.grid(True, alpha=0.3)
    fig.subplots_adjust(left=0.1 if evals else 0.14, right=0.97, bottom=0.13, top=0.9, wspace=0.25)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    """Runs the program; returns its exit code (2 for bad input, nothing written)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_args(argv)
        dtypes = (args.dtype, args.param_dtype, args.mu_dtype, args.nu_dtype)
        with jax.enable_x64("float64" in dtypes):
            return train(args, argv)
    except UsageError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:  # --help
        return e.code


if __name__ == "__main__":
    sys.exit(main())
