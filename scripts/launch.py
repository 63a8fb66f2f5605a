"""Start P copies of a JAX program on this machine, as one multi-process run on loopback.

Process i gets ``JAX_COORDINATOR_ADDRESS=127.0.0.1:PORT``, ``JAX_NUM_PROCESSES=P``
and ``JAX_PROCESS_ID=i`` (read by ``adam_jax.training.distributed.initialize``),
and with ``--cpu-devices D`` also ``JAX_NUM_CPU_DEVICES=D``: P x D CPU devices
joined by gloo collectives, which is how multi-host code is tested on one box.

    python scripts/launch.py -n 2 --cpu-devices 2 -- python my_train.py --flag

Each line a process prints is prefixed with ``[pI]``. When a process exits with
a non-zero status, the launcher stops the others (after ``--grace`` seconds, in
which JAX's own failure detection may stop them first), prints one line that
names the process and its status, and exits with that status. On a real
cluster the scheduler (``srun``, ``mpirun``, the TPU runtime) plays this role.
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

POLL_S = 0.05  # how often the launcher looks at its children


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def nonnegative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--processes", type=positive_int, required=True)
    parser.add_argument("--cpu-devices", type=positive_int, help="CPU devices per process")
    parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
    parser.add_argument(
        "--grace",
        type=nonnegative_float,
        default=0.0,
        help="seconds the others get to stop on their own after one fails",
    )
    parser.add_argument(
        "--timeout", type=nonnegative_float, default=0.0, help="stop everything after (0: never)"
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- program and its arguments")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("argument command: give the program to run after --")
    return args


def relay(stream, prefix: str) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.buffer.write(prefix.encode() + line)
        sys.stdout.flush()


def stop(procs) -> list:
    """SIGKILL every process still running; their exit statuses.

    Not SIGTERM: JAX's preemption notifier catches it and the process goes on
    (waiting in a collective for the dead one). orbax writes a checkpoint to a
    temporary directory and renames it when complete, so a kill mid-save
    leaves the previous checkpoint the newest.
    """
    for p in procs:
        if p.poll() is None:
            p.kill()
    return [p.wait() for p in procs]


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    port = args.port or free_port()
    procs, relays = [], []
    started = time.monotonic()
    for i in range(args.processes):
        env = dict(
            os.environ,
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES=str(args.processes),
            JAX_PROCESS_ID=str(i),
            PYTHONUNBUFFERED="1",
        )
        if args.cpu_devices:
            env["JAX_NUM_CPU_DEVICES"] = str(args.cpu_devices)
        p = subprocess.Popen(
            args.command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        procs.append(p)
        relays.append(threading.Thread(target=relay, args=(p.stdout, f"[p{i}] "), daemon=True))
        relays[-1].start()

    failed = None  # (index, status, seconds) of the first process to fail
    while True:
        codes = [p.poll() for p in procs]
        elapsed = time.monotonic() - started
        if failed is None:
            for i, code in enumerate(codes):
                if code not in (None, 0):
                    failed = (i, code, elapsed)
                    break
        if all(code is not None for code in codes):
            break
        if failed is not None and elapsed - failed[2] >= args.grace:
            codes = stop(procs)
            break
        if args.timeout and elapsed > args.timeout:
            codes = stop(procs)
            for thread in relays:
                thread.join(1.0)
            print(
                f"launch.py: timed out after {args.timeout:g} s; stopped all {args.processes} "
                f"processes (statuses {codes})",
                file=sys.stderr,
            )
            return 124
        time.sleep(POLL_S)
    for thread in relays:
        thread.join(1.0)
    if failed is None:
        return 0
    index, code, at = failed
    others = ", ".join(f"p{i}: {c}" for i, c in enumerate(codes) if i != index)
    print(
        f"launch.py: process {index} of {args.processes} exited with status {code} after "
        f"{at:.1f} s; the run is stopped ({others}; total {time.monotonic() - started:.1f} s)",
        file=sys.stderr,
    )
    return code if 0 < code < 256 else 1


if __name__ == "__main__":
    sys.exit(main())
