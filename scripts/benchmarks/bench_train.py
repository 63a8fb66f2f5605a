"""Benchmark the seed's training: 500 AMSGrad steps in PyTorch eager and in JAX with adam_jax.

The seed's problem: a 1000 -> 100 -> ReLU -> 10 MLP, sum-of-squares loss on 64 random inputs and
targets, ``torch.optim.Adam(lr=1e-4, amsgrad=True, eps=1e-8)``, 500 steps: the ``seed`` task of
the training registry (``adam_jax.training.tasks``), whose weights and data are those of
``scripts/train.py``. Every variant starts from them and runs the same 500 steps:

- ``torch default|foreach|fused, N thr``: eager PyTorch (``zero_grad``, forward, ``backward``,
  ``step``) with ``torch.set_num_threads(N)``; "default" is ``torch.optim.Adam``'s own choice
  (the single-tensor loop on the CPU).
- ``jax jit-step``: one jitted, donated step (gradient and ``adam_jax.amsgrad`` update) called
  500 times from Python; the losses stay on the device until the end.
- ``jax jit-step, loss.item()``: the same, fetching every loss as the seed prints it.
- ``jax scan``: all 500 steps in one jitted ``lax.scan`` of a plain-JAX step.
- ``jax train loop``: ``scripts/train.py``'s own path without its file I/O: the training
  package's ``train_step`` (Flax model, adam_jax.amsgrad, the epsilon metric) in its jitted
  ``lax.scan`` chunks of 50 steps, the metrics fetched after each chunk.
- ``jax scan, fused_adam``: the same with ``adam_jax.fused_adam(amsgrad=True)`` (the opt-in
  one-pass CPU kernel) in place of ``adam_jax.amsgrad`` and ``apply_updates``.
- ``floor fwd+bwd``: the scan's forward and backward passes alone, no optimizer (each step's input
  is scaled by a runtime 1.0 so XLA cannot hoist the work out of the loop).
  Its time and the FLOP count of a step (2*64*1000*100 for the first layer forward, as much for
  its weight gradient, and the small second layer: 26 MFLOP) give the GFLOP/s reached.

- ``..., packed``: the same with the params and the optimizer state as ``adam_jax.PackedLayout``
  buffers (one per dtype): the loss reads ``layout.unpack`` of them, the gradient arrives packed
  and the update is one array's (``scripts/train.py --packed``).

Compile time is measured apart (``lower().compile()``). Variants are interleaved round-robin
(see ``common.py``), each repetition from fresh copies of the weights.

The LM task's training step (``--task lm``: a 4-block byte-level transformer, 53 arrays, 875,264
params, a batch of 16 windows of 128 bytes), timed step by step, interleaved:

- ``lm jax step`` and ``lm jax step, packed``: the training package's ``train_step`` (batch,
  forward, backward, ``adam_jax.adamw`` update) jitted and donated, on the tree and packed;
- ``lm floor fwd+bwd``: its forward and backward passes alone; ``lm update, tree|packed``: the
  update alone (``adamw`` and ``apply_updates`` on a fixed gradient), so the parts are apart;
- ``lm torch default|fused, N thr``: the same model in PyTorch eager (``nn.Embedding``,
  ``nn.LayerNorm``, ``nn.Linear``, ``scaled_dot_product_attention``, tanh GELU), the same initial
  weights and batches, ``torch.optim.AdamW``; its first loss is checked against JAX's.

``--fsdp N`` (run with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``) times instead the
seed's and the digits' training steps with ``--mesh N --fsdp``, the params as a tree or packed,
and counts the collectives of each compiled step (the LM task does not run on a mesh: its
embedding lookup of batch-sharded tokens needs an explicit output sharding). On virtual CPU
devices that share the machine's cores, the gathers' time says little about real devices; the
counts and bytes do.

    python -m scripts.benchmarks.bench_train          # writes docs/bench/train.json
    python -m scripts.benchmarks.bench_train --quick  # 3 repetitions of 100 steps, 2 of the LM
    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
      python -m scripts.benchmarks.bench_train --fsdp 8 --json docs/bench/train_fsdp.json
"""

import argparse
import os
import random
import sys
import time
from functools import partial
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

import adam_jax
from adam_jax import PackedLayout
from adam_jax.training import distributed, loop
from adam_jax.training.tasks import digits as digits_task
from adam_jax.training.tasks import lm as lm_task
from adam_jax.training.tasks import seed as seed_task
from scripts.benchmarks import common
from scripts.seed_pytorch import seed_torch_steps

N, D_IN, HIDDEN, D_OUT = 64, *seed_task.SIZES
LR, EPS = 1e-4, 1e-8
CHUNK = 50  # train.py's --log-every on the seed task
FLOP_PER_STEP = 2 * N * D_IN * HIDDEN * 2 + 2 * N * HIDDEN * D_OUT * 3  # fwd+dW1, fwd+dW2+dh
LM_LR, LM_BATCH = 2e-3, 16  # train.py's defaults on --task lm (AdamW, weight decay 1e-2)
DIGITS_LR, DIGITS_BATCH = 1e-3, 64  # and on --task digits (Adam)


def seed_config(seed: int = 0, batch_size: int = N) -> SimpleNamespace:
    """``scripts/train.py``'s flags on the seed task (or the lm's), float32."""
    return SimpleNamespace(
        rng_seed=seed, batch_size=batch_size, dtype="float32", init="torch", init_from=None
    )


def seed_problem(seed: int = 0):
    return seed_task.make_problem(
        seed_config(seed), {"param_dtype": np.float32, "dtype": np.float32}
    )


def seed_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """The seed task's weights (``torch.nn.Linear``'s layout), inputs and targets."""
    return seed_task.torch_layout(seed_problem(seed))


# --- JAX --------------------------------------------------------------------------------------


def loss_fn(params, x, y):
    """Sum-of-squares loss of the MLP, ``torch.nn.Linear`` layout (out, in)."""
    h = jax.nn.relu(x @ params["w1"].T + params["b1"])
    return jnp.sum((h @ params["w2"].T + params["b2"] - y) ** 2)


def jax_variants(arrays, steps):
    """name -> (prepare, run, sync); plus compile times in seconds."""
    x, y = jnp.asarray(arrays["x"]), jnp.asarray(arrays["y"])
    names = ("w1", "b1", "w2", "b2")
    opt = adam_jax.amsgrad(LR, eps=EPS)
    fused = adam_jax.fused_adam(LR, eps=EPS, amsgrad=True)

    layout = PackedLayout.from_params({k: jnp.asarray(arrays[k]) for k in names})

    def fresh():
        params = {k: jnp.array(arrays[k]) for k in names}
        return params, opt.init(params)

    def fresh_packed():
        buffers = layout.pack({k: jnp.array(arrays[k]) for k in names})
        return buffers, opt.init(buffers)

    def make_step(loss):
        def step(params, opt_state):
            value, grads = jax.value_and_grad(loss)(params, x, y)
            updates, opt_state = opt.update(grads, opt_state, params)
            return jax.tree.map(jnp.add, params, updates), opt_state, value

        return step

    step = make_step(loss_fn)

    def fused_step(params, opt_state):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        return *fused.step(params, grads, opt_state), loss

    jit_step = jax.jit(step, donate_argnums=(0, 1))

    def make_scan(step):
        @partial(jax.jit, donate_argnums=(0, 1))
        def scan(params, opt_state):
            def body(carry, _):
                params, opt_state, loss = step(*carry)
                return (params, opt_state), loss

            return jax.lax.scan(body, (params, opt_state), length=steps)

        return scan

    scan = make_scan(step)
    scan_fused = make_scan(fused_step)
    scan_packed = make_scan(make_step(lambda b, x, y: loss_fn(layout.unpack(b), x, y)))

    problem = seed_problem()
    # The training package's step on the tree, and packed (train.py --packed).
    problem_layout = PackedLayout.from_params(problem.params)
    packed_problem = problem._replace(params=problem_layout.pack(problem.params))

    def make_run_chunk(problem, layout):
        train_step = loop.make_train_step(
            problem,
            opt,
            loss_dtype=jnp.float32,
            learning_rate=LR,
            epsilon_report=lambda s: adam_jax.epsilon_report(s, opt),
            layout=layout,
        )
        return loop.make_run_chunk(train_step, CHUNK)

    run_chunk = make_run_chunk(problem, None)
    run_chunk_packed = make_run_chunk(packed_problem, problem_layout)

    @jax.jit
    def floor_fwd_bwd(params, scales):
        def body(acc, s):
            loss, grads = jax.value_and_grad(loss_fn)(params, x * s, y)
            return acc + loss + sum(jnp.sum(g) for g in jax.tree.leaves(grads)), None

        return jax.lax.scan(body, jnp.zeros(()), scales)[0]

    compile_s = {}
    p, s = fresh()
    t0 = time.perf_counter()
    jit_step.lower(p, s).compile()
    compile_s["jax jit-step"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scan.lower(p, s).compile()
    compile_s["jax scan"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scan_fused.lower(p, fused.init(p)).compile()
    compile_s["jax scan, fused_adam"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scan_packed.lower(*fresh_packed()).compile()
    compile_s["jax scan, packed"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    initial = loop.init_state(problem, opt, 0)
    run_chunk = run_chunk.lower(initial, problem.train, np.int32(0)).compile()
    compile_s["jax train loop"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    initial = loop.init_state(packed_problem, opt, 0)
    run_chunk_packed = run_chunk_packed.lower(initial, problem.train, np.int32(0)).compile()
    compile_s["jax train loop, packed"] = time.perf_counter() - t0
    scales = jnp.ones(steps)

    box = {}

    def prepare():
        box["p"], box["s"] = fresh()
        jax.block_until_ready(box)

    def run_loop(fetch):
        p, s = box["p"], box["s"]
        losses = []
        for _ in range(steps):
            p, s, loss = jit_step(p, s)
            losses.append(float(loss) if fetch else loss)
        box["p"], box["s"], box["losses"] = p, s, losses

    def prepare_fused():
        box["p"], _ = fresh()
        box["s"] = fused.init(box["p"])
        jax.block_until_ready(box)

    def run_scan(fn):
        (box["p"], box["s"]), box["losses"] = fn(box["p"], box["s"])

    def prepare_packed():
        box["p"], box["s"] = fresh_packed()
        jax.block_until_ready(box)

    def prepare_loop(problem):
        box["state"] = loop.init_state(problem, opt, 0)
        jax.block_until_ready(box)

    def run_train_loop(run_chunk):
        state, losses = box.pop("state"), []
        for start in range(0, steps, CHUNK):
            n = min(CHUNK, steps - start)
            state, metrics, finite = run_chunk(state, problem.train, np.int32(n))
            metrics, finite = jax.device_get((metrics, finite))  # train.py's one sync per chunk
            losses += list(metrics["loss"][:n])
        box["state"], box["losses"] = state, losses

    def run_floor(fn):
        box["out"] = fn(box["p"], scales)

    def sync():
        jax.block_until_ready(box)

    variants = {
        "jax jit-step": (prepare, lambda: run_loop(False), sync),
        "jax jit-step, loss.item()": (prepare, lambda: run_loop(True), sync),
        "jax scan": (prepare, lambda: run_scan(scan), sync),
        "jax scan, fused_adam": (prepare_fused, lambda: run_scan(scan_fused), sync),
        "jax scan, packed": (prepare_packed, lambda: run_scan(scan_packed), sync),
        "jax train loop": (
            partial(prepare_loop, problem),
            partial(run_train_loop, run_chunk),
            sync,
        ),
        "jax train loop, packed": (
            partial(prepare_loop, packed_problem),
            partial(run_train_loop, run_chunk_packed),
            sync,
        ),
        "floor fwd+bwd": (prepare, lambda: run_floor(floor_fwd_bwd), sync),
    }
    for prep, run, sy in variants.values():  # compile and warm up
        prep()
        run()
        sy()
    return variants, compile_s, box


# --- PyTorch ----------------------------------------------------------------------------------


def torch_variants(torch, arrays, steps, threads):
    """name -> (prepare, run, sync) for each optimizer variant and thread count."""
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    box = {}

    def prepare(variant, n_threads):
        torch.set_num_threads(n_threads)
        model = torch.nn.Sequential(
            torch.nn.Linear(D_IN, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, D_OUT)
        )
        with torch.no_grad():
            for layer, w, b in ((model[0], "w1", "b1"), (model[2], "w2", "b2")):
                layer.weight.copy_(torch.from_numpy(arrays[w]))
                layer.bias.copy_(torch.from_numpy(arrays[b]))
        kwargs = {"foreach": variant == "foreach", "fused": variant == "fused"}
        if variant == "default":
            kwargs = {}
        box["model"] = model
        box["opt"] = torch.optim.Adam(model.parameters(), lr=LR, amsgrad=True, eps=EPS, **kwargs)

    def run():
        box["losses"] = seed_torch_steps(box["model"], box["opt"], x, y, steps)

    variants = {}
    for n_threads in threads:
        for variant in ("default", "foreach", "fused"):
            name = f"torch {variant}, {n_threads} thr"
            variants[name] = (partial(prepare, variant, n_threads), run, lambda: None)
    return variants, box


# --- the LM task's step ---------------------------------------------------------------------


def digits_problem(seed: int = 0):
    """``--task digits``'s model and data at train.py's defaults (float32)."""
    config = seed_config(seed, batch_size=DIGITS_BATCH)
    return digits_task.make_problem(config, {"param_dtype": np.float32, "dtype": np.float32})


def lm_problem(seed: int = 0):
    """``--task lm``'s model, data and batches at train.py's defaults (float32)."""
    config = seed_config(seed, batch_size=LM_BATCH)
    return lm_task.make_problem(config, {"param_dtype": np.float32, "dtype": np.float32})


def lm_jax_variants(problem, layout: PackedLayout | None = None):
    """name -> (step, sync) of the JAX variants of one LM training step; compile seconds; and
    the first step's loss on the tree and packed (they must be equal)."""
    opt = adam_jax.adamw(LM_LR)
    packed_problem = problem._replace(params=layout.pack(problem.params))
    grads_like = jax.eval_shape(lambda p: p, problem.params)
    impls, compile_s, first_loss = {}, {}, {}
    for name, this, this_layout in (
        ("lm jax step", problem, None),
        ("lm jax step, packed", packed_problem, layout),
    ):
        train_step = loop.make_train_step(
            this, opt, loss_dtype=jnp.float32, learning_rate=LM_LR, layout=this_layout
        )
        state = loop.init_state(this, opt, 0)
        t0 = time.perf_counter()
        compiled = jax.jit(train_step, donate_argnums=0).lower(state, this.train).compile()
        compile_s[name] = time.perf_counter() - t0
        box = [state, None]  # the state, the last step's metrics

        def run(compiled=compiled, box=box, train=this.train):
            box[0], box[1] = compiled(box[0], train)

        run()
        first_loss[name] = float(box[1]["loss"])
        impls[name] = (run, partial(jax.block_until_ready, box))

    loss_fn = loop.make_loss_fn(problem, jnp.float32)
    batch = problem.batch(problem.train, jax.random.key(0), 0)
    floor = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
    t0 = time.perf_counter()
    floor = floor.lower(problem.params, batch).compile()
    compile_s["lm floor fwd+bwd"] = time.perf_counter() - t0
    floor_box = [None]

    def run_floor():
        floor_box[0] = floor(problem.params, batch)

    impls["lm floor fwd+bwd"] = (run_floor, partial(jax.block_until_ready, floor_box))

    rng = np.random.default_rng(0)
    grads = jax.tree.map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape, dtype=np.float32)), grads_like
    )
    for name, params, g in (
        ("lm update, tree", problem.params, grads),
        ("lm update, packed", packed_problem.params, layout.pack(grads)),
    ):

        def update(params, state, g):
            updates, state = opt.update(g, state, params)
            return optax.apply_updates(params, updates), state

        params = jax.tree.map(jnp.array, params)
        state = opt.init(params)
        t0 = time.perf_counter()
        compiled = jax.jit(update, donate_argnums=(0, 1)).lower(params, state, g).compile()
        compile_s[name] = time.perf_counter() - t0
        box = [params, state]

        def run_update(compiled=compiled, box=box, g=g):
            box[0], box[1] = compiled(box[0], box[1], g)

        impls[name] = (run_update, partial(jax.block_until_ready, box))
    return impls, compile_s, first_loss


def torch_lm(torch, params):
    """``lm_task.TransformerLM`` in PyTorch, with the weights of ``params`` (its nnx state)."""
    nn, functional = torch.nn, torch.nn.functional
    width, heads = lm_task.D_MODEL, lm_task.N_HEADS

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)

        def forward(self, x):
            batch, length, _ = x.shape
            q, k, v = self.qkv(x).split(width, dim=-1)

            def split_heads(a):
                return a.view(batch, length, heads, width // heads).transpose(1, 2)

            attended = functional.scaled_dot_product_attention(
                split_heads(q), split_heads(k), split_heads(v), is_causal=True
            )
            return self.out(attended.transpose(1, 2).reshape(batch, length, width))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn_norm, self.attn = nn.LayerNorm(width, eps=1e-5), Attention()
            self.mlp_norm = nn.LayerNorm(width, eps=1e-5)
            hidden = lm_task.MLP_RATIO * width
            self.mlp_in, self.mlp_out = nn.Linear(width, hidden), nn.Linear(hidden, width)

        def forward(self, x):
            x = x + self.attn(self.attn_norm(x))
            hidden = functional.gelu(self.mlp_in(self.mlp_norm(x)), approximate="tanh")
            return x + self.mlp_out(hidden)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embed = nn.Embedding(lm_task.VOCAB, width)
            self.position_embed = nn.Embedding(lm_task.CONTEXT, width)
            self.blocks = nn.ModuleList([Block() for _ in range(lm_task.N_LAYERS)])
            self.final_norm = nn.LayerNorm(width, eps=1e-5)
            self.head = nn.Linear(width, lm_task.VOCAB, bias=False)

        def forward(self, tokens):
            positions = torch.arange(tokens.shape[-1])
            x = self.token_embed(tokens) + self.position_embed(positions)[None]
            for block in self.blocks:
                x = block(x)
            return self.head(self.final_norm(x))

    model = LM()
    # nnx names -> torch names: kernels (in, out) are transposed to nn.Linear's (out, in).
    torch_names = {"embedding": "weight", "kernel": "weight", "scale": "weight", "bias": "bias"}
    state = {}
    for path, value in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(params))[0]:
        keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
        array = np.asarray(value)
        state[".".join([*keys[:-1], torch_names[keys[-1]]])] = (
            array.T if keys[-1] == "kernel" else array
        )
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    return model


def lm_torch_variants(torch, problem, threads, steps):
    """name -> (step, sync) of PyTorch's LM training step (default and fused AdamW, per thread
    count), the same weights and the first ``steps`` batches of the JAX run; and its first loss
    (from fresh weights)."""
    key = jax.random.wrap_key_data(loop.data_key(0))
    batches = [
        tuple(
            torch.from_numpy(np.asarray(a, np.int64)) for a in problem.batch(problem.train, key, i)
        )
        for i in range(steps)
    ]
    impls, first_loss = {}, None
    for n_threads in threads:
        for variant in ("default", "fused"):
            model = torch_lm(torch, problem.params)
            kwargs = {"fused": True} if variant == "fused" else {}
            opt = torch.optim.AdamW(model.parameters(), lr=LM_LR, weight_decay=1e-2, **kwargs)
            counter = [0]

            def step(model=model, opt=opt, counter=counter, n_threads=n_threads):
                torch.set_num_threads(n_threads)
                x, y = batches[counter[0] % steps]
                counter[0] += 1
                logits = model(x)
                loss = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, lm_task.VOCAB), y.reshape(-1)
                )
                opt.zero_grad()
                loss.backward()
                opt.step()
                return loss.item()

            if first_loss is None:
                first_loss = step()
            impls[f"lm torch {variant}, {n_threads} thr"] = (step, lambda: None)
    return impls, first_loss


def bench_lm(torch, threads, reps, settle):
    """The LM step side by side: JAX on the tree and packed, the parts apart, PyTorch."""
    problem = lm_problem()
    layout = PackedLayout.from_params(problem.params)
    jax_impls, compile_s, jax_first = lm_jax_variants(problem, layout)
    torch_impls, torch_first = lm_torch_variants(torch, problem, threads, steps=8)
    print(
        f"LM first loss: jax {jax_first['lm jax step']:.6f}, packed "
        f"{jax_first['lm jax step, packed']:.6f}, torch {torch_first:.6f}"
    )
    impls = {**torch_impls, **jax_impls}
    calls = {k: (20 if k.startswith("lm update") else 2) for k in impls}
    times = common.interleaved(impls, reps=reps, calls=calls, settle_s=settle)
    torch.set_num_threads(os.cpu_count())
    fastest_torch = min((k for k in times if "torch" in k), key=lambda k: np.median(times[k]))
    rows = []
    for name, t in sorted(times.items(), key=lambda kv: np.median(kv[1])):
        row = {
            "name": name,
            "ms_per_step": {k: 1e3 * v for k, v in common.summary(t).items()},
            "fastest_torch_over_this": common.ratio(times[fastest_torch], t),
            "this_over_tree_step": common.ratio(t, times["lm jax step"]),
            "times_s": t.tolist(),
        }
        if name in compile_s:
            row["compile_s"] = compile_s[name]
        rows.append(row)
    print(
        f"\n{'LM step':>26} {'ms/step':>8} {'p10-p90':>17} {'torch*/this':>11} {'/tree step':>10}"
    )
    for r in rows:
        m, torch_ratio = r["ms_per_step"], r["fastest_torch_over_this"]["median"]
        print(
            f"{r['name']:>26} {m['median']:8.2f} {m['p10']:8.2f}-{m['p90']:<8.2f} "
            f"{torch_ratio:11.2f} {r['this_over_tree_step']['median']:10.2f}"
        )
    print(f"torch* = fastest PyTorch variant: {fastest_torch}")
    return {
        "arrays": len(layout.leaves),
        "params": int(sum(layout.sizes.values())),
        "batch": [LM_BATCH, lm_task.CONTEXT],
        "first_loss": {**jax_first, "torch": torch_first},
        "calls_per_repetition": calls,
        "fastest_torch": fastest_torch,
        "rows": rows,
    }


# --- FSDP -------------------------------------------------------------------------------------


def bench_fsdp(devices: int, reps: int, settle: float) -> dict:
    """The seed's and the digits' training steps with ``--mesh devices --fsdp``, tree and packed:
    time per step, and the collectives of each compiled step (count and bytes)."""
    mesh = distributed.make_mesh(devices)
    cases = {}
    with jax.set_mesh(mesh):
        for task, problem, opt, lr in (
            ("seed", seed_problem(), adam_jax.amsgrad(LR, eps=EPS), LR),
            ("digits", digits_problem(), adam_jax.adam(DIGITS_LR), DIGITS_LR),
        ):
            sharding = NamedSharding(mesh, PartitionSpec(distributed.DATA_AXIS))
            layout = PackedLayout.from_params(problem.params, sharding=sharding)
            data = distributed.place(
                problem.train, distributed.replicated_shardings(problem.train, mesh)
            )
            for form in ("tree", "packed"):
                this = (
                    problem
                    if form == "tree"
                    else problem._replace(params=layout.pack(problem.params))
                )
                state = loop.init_state(this, opt, 0)
                shardings = distributed.fsdp_shardings(state, mesh)._replace(
                    data_key=distributed.replicated_shardings(state.data_key, mesh)
                )
                state = distributed.place(state, shardings)
                train_step = loop.make_train_step(
                    this,
                    opt,
                    loss_dtype=jnp.float32,
                    learning_rate=lr,
                    split_batch=True,
                    gather_params=form == "tree",
                    layout=None if form == "tree" else layout,
                )
                t0 = time.perf_counter()
                compiled = jax.jit(train_step, donate_argnums=0).lower(state, data).compile()
                compile_s = time.perf_counter() - t0
                collectives = common.hlo_collectives(compiled.as_text())
                box = [state]

                def run(compiled=compiled, box=box, data=data):
                    box[0], _ = compiled(box[0], data)

                cases[(task, form)] = {
                    "impl": (run, partial(jax.block_until_ready, box)),
                    "compile_s": compile_s,
                    "collectives": collectives,
                }
        calls = dict.fromkeys(cases, 20)
        times = common.interleaved(
            {key: case["impl"] for key, case in cases.items()},
            reps=reps,
            calls=calls,
            settle_s=settle,
        )
    rows = []
    for (task, form), case in cases.items():
        t = times[(task, form)]
        rows.append(
            {
                "task": task,
                "form": form,
                "ms_per_step": {k: 1e3 * v for k, v in common.summary(t).items()},
                "packed_over_tree": common.ratio(t, times[(task, "tree")]),
                "compile_s": case["compile_s"],
                "collectives": case["collectives"],
                "times_s": t.tolist(),
            }
        )
        c = ", ".join(
            f"{k} x{v['count']} ({v['bytes'] / 1e6:.2f} MB)" for k, v in case["collectives"].items()
        )
        m = rows[-1]["ms_per_step"]
        print(
            f"{task:>5} {form:>7} {m['median']:8.2f} ms [{m['p10']:.2f}, {m['p90']:.2f}]  "
            f"/tree {rows[-1]['packed_over_tree']['median']:.2f}  {c}"
        )
    return {"devices": devices, "rows": rows}


# --- driver -----------------------------------------------------------------------------------


def parse_args(argv):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=500, help="training steps (seed: 500)")
    p.add_argument("--reps", type=int, default=30, help="interleaved repetitions")
    p.add_argument("--settle", type=float, default=0.02, help="sleep before each run, seconds")
    p.add_argument("--lm-reps", type=int, default=10, help="interleaved repetitions of the LM")
    p.add_argument("--no-lm", action="store_true", help="skip the LM task's step")
    p.add_argument(
        "--fsdp", type=int, default=0, metavar="N", help="time the FSDP steps on N devices instead"
    )
    p.add_argument("--quick", action="store_true", help="smoke run: 100 steps, 3 repetitions")
    p.add_argument("--json", default="docs/bench/train.json", help="where to write the results")
    p.add_argument("--png", default="docs/img/bench_train.png", help="the plot ('' skips it)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.reps, args.lm_reps = 100, min(args.reps, 3), min(args.lm_reps, 2)
    if args.steps < 1 or args.reps < 1 or args.lm_reps < 1:
        p.error("--steps, --reps and --lm-reps must be >= 1")
    if args.fsdp and jax.device_count() < args.fsdp:
        p.error(
            f"--fsdp {args.fsdp}: {jax.device_count()} devices; set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={args.fsdp}"
        )
    return args


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.42 * len(rows) + 1.2))
    names = [r["name"] for r in rows][::-1]
    med = np.array([r["ms_per_step"]["median"] for r in rows][::-1])
    lo = med - np.array([r["ms_per_step"]["p10"] for r in rows][::-1])
    hi = np.array([r["ms_per_step"]["p90"] for r in rows][::-1]) - med
    colors = [
        "tab:gray" if n.startswith("floor") else "tab:blue" if n.startswith("jax") else "tab:orange"
        for n in names
    ]
    ax.barh(names, med, xerr=[lo, hi], color=colors, capsize=3)
    ax.set(xlabel="ms per step (median, p10-p90)", title="The seed's training: 500 AMSGrad steps")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv=None):
    args = parse_args(argv)
    import torch

    info = common.machine()
    print(f"{info['date']}  {info['cpu']} x{info['cpu_count']}  load average {info['loadavg']}")
    settings = {"reps": args.reps, "lm_reps": args.lm_reps, "settle_s": args.settle}
    if args.fsdp:
        result = {"machine": info, "settings": settings}
        result["fsdp"] = bench_fsdp(args.fsdp, args.lm_reps, args.settle)
        info["loadavg_end"] = list(os.getloadavg())
        common.save(args, result)
        return result
    arrays = seed_arrays()
    jv, compile_s, jbox = jax_variants(arrays, args.steps)
    threads = sorted({1, os.cpu_count()})
    tv, tbox = torch_variants(torch, arrays, args.steps, threads)
    variants = {**tv, **jv}

    # Same problem, same numbers: the JAX scan's and PyTorch's losses must agree.
    jv["jax scan"][0]()
    jv["jax scan"][1]()
    jax_losses = np.asarray(jbox["losses"])
    jv["jax scan, fused_adam"][0]()
    jv["jax scan, fused_adam"][1]()
    fused_losses = np.asarray(jbox["losses"])
    fused_agree = float(np.max(np.abs(fused_losses - jax_losses) / np.abs(jax_losses)))
    print(f"fused_adam vs adam_jax.amsgrad losses, max relative difference: {fused_agree:.2e}")
    jv["jax train loop"][0]()
    jv["jax train loop"][1]()
    loop_losses = np.asarray(jbox["losses"])
    loop_agree = float(np.max(np.abs(loop_losses - jax_losses) / np.abs(jax_losses)))
    print(f"train loop (Flax) vs jax scan losses, max relative difference: {loop_agree:.2e}")
    packed_equal = {}
    for name, reference in (("jax scan", jax_losses), ("jax train loop", loop_losses)):
        jv[f"{name}, packed"][0]()
        jv[f"{name}, packed"][1]()
        packed_equal[name] = bool(np.array_equal(np.asarray(jbox["losses"]), reference))
    print(f"packed losses equal the tree's, bit for bit: {packed_equal}")
    tv[f"torch default, {threads[-1]} thr"][0]()
    tv[f"torch default, {threads[-1]} thr"][1]()
    torch_losses = np.asarray(tbox["losses"])
    early = slice(0, min(100, args.steps))  # later the loss is near 0 and relative noise grows
    agree = float(np.max(np.abs(jax_losses - torch_losses)[early] / np.abs(torch_losses[early])))
    print(
        f"loss at step 1 / {args.steps}: torch {torch_losses[0]:.4f} / {torch_losses[-1]:.6f}, "
        f"jax {jax_losses[0]:.4f} / {jax_losses[-1]:.6f}; max relative difference over the first "
        f"100 steps {agree:.2e}"
    )

    times = {name: np.empty(args.reps) for name in variants}
    rng = random.Random(0)
    order = list(variants)
    for r in range(args.reps):
        rng.shuffle(order)
        for name in order:
            prepare, run, sync = variants[name]
            prepare()
            time.sleep(args.settle)
            t0 = time.perf_counter()
            run()
            sync()
            times[name][r] = time.perf_counter() - t0
        print(f"repetition {r + 1}/{args.reps} done", file=sys.stderr, flush=True)
    torch.set_num_threads(os.cpu_count())

    per_step = {k: v / args.steps for k, v in times.items()}
    fastest_torch = min(
        (k for k in per_step if k.startswith("torch")), key=lambda k: np.median(per_step[k])
    )
    rows = []
    for name, t in sorted(per_step.items(), key=lambda kv: np.median(kv[1])):
        row = {
            "name": name,
            "ms_per_step": {k: 1e3 * v for k, v in common.summary(t).items()},
            "fastest_torch_over_this": common.ratio(per_step[fastest_torch], t),
            "this_over_floor_fwd_bwd": common.ratio(t, per_step["floor fwd+bwd"]),
            "times_s": times[name].tolist(),
        }
        if name in compile_s:
            row["compile_s"] = compile_s[name]
        rows.append(row)
    gflops = FLOP_PER_STEP / np.median(per_step["floor fwd+bwd"]) / 1e9

    print(
        f"\n{'variant':>26} {'ms/step':>8} {'p10-p90':>15} {'torch*/this':>11} "
        f"{'this/floor':>10} {'compile':>8}"
    )
    for r in rows:
        m = r["ms_per_step"]
        c = f"{r['compile_s']:.2f} s" if "compile_s" in r else ""
        print(
            f"{r['name']:>26} {m['median']:8.3f} {m['p10']:7.3f}-{m['p90']:<7.3f} "
            f"{r['fastest_torch_over_this']['median']:11.2f} "
            f"{r['this_over_floor_fwd_bwd']['median']:10.2f} {c:>8}"
        )
    print(f"torch* = fastest PyTorch variant: {fastest_torch}")
    print(f"floor fwd+bwd: {FLOP_PER_STEP / 1e6:.1f} MFLOP/step at {gflops:.0f} GFLOP/s")

    result = {
        "machine": info,
        "settings": {
            "steps": args.steps,
            "reps": args.reps,
            "settle_s": args.settle,
            "lr": LR,
            "eps": EPS,
            "torch_threads": threads,
        },
        "losses_max_rel_diff_first_100_steps_jax_scan_vs_torch": agree,
        "losses_max_rel_diff_fused_adam_vs_jax_scan": fused_agree,
        "losses_max_rel_diff_train_loop_vs_jax_scan": loop_agree,
        "packed_losses_bitwise_equal": packed_equal,
        "fastest_torch": fastest_torch,
        "flop_per_step": FLOP_PER_STEP,
        "floor_gflops": gflops,
        "rows": rows,
    }
    if not args.no_lm:
        result["lm"] = bench_lm(torch, threads, args.lm_reps, args.settle)
    info["loadavg_end"] = list(os.getloadavg())
    common.save(args, result, lambda path: plot(rows, path))
    return result


if __name__ == "__main__":
    main()
