"""``colorize worker``: join a running pipeline as one more worker of a stage.

    colorize worker --stage inference --connect tcp://HOST:PORT [--model FILE.onnx] [--config FILE.yaml]
                    [--batch-size N] [--threads N] [--credit N] [--name NAME] [--wait S]

The worker connects with this installation's CURVE keys (:mod:`stream.scaleout.keys`), checks that its model
is the pipeline's (SHA-256 sent in the welcome; without ``--model`` the embedded twin with that hash
is taken) and runs :class:`stream.scaleout.worker.LeaseLoop`. It exits 0 when the run ends (``stop``) or
when it leaves on SIGINT/SIGTERM (``bye``: the broker sends what it held to other workers), 1 if no
broker answers within ``--wait`` seconds or the broker goes silent, and 2 for a bad option, config,
key or model (one ``error:`` line each time).
"""
from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import zmq

from stream.allocator import reuse_freed_memory
from stream.checksum import file_sha256
from stream.scaleout.worker import LEASED_STAGES, LeaseLoop, connect, default_credit, greet


class _NoControl:
    """A joining worker has no supervisor line: stage hooks that emit events are not used by workers."""

    def emit(self, event: str, **fields) -> None:
        pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="colorize worker",
        description="Join a running pipeline as one more worker of a stage (its broker's workers.listen).")
    parser.add_argument("--stage", choices=LEASED_STAGES, default="inference",
                        help="which stage of the running pipeline this worker does (default inference)")
    parser.add_argument("--connect", required=True, metavar="ENDPOINT",
                        help="the broker's address, e.g. tcp://10.0.0.5:5560 (printed by the pipeline at start)")
    parser.add_argument("--model", type=Path, help="ONNX model; must be the pipeline's (default: the embedded model)")
    parser.add_argument("--config", type=Path, help="YAML whose section for this stage sets batch size, threads...")
    parser.add_argument("--batch-size", type=int, help="frames per model call (overrides the config)")
    parser.add_argument("--threads", type=int, help="onnxruntime intra-op threads; 0 = one per core")
    parser.add_argument("--credit", type=int, help="frames held at once (default: 2 × batch size + 2)")
    parser.add_argument("--name", help="how the pipeline names this worker (default HOST:PID)")
    parser.add_argument("--wait", type=float, default=60.0, metavar="S",
                        help="give up if no pipeline answers within S seconds (default 60)")
    return parser


def main(argv: list[str]) -> int:
    from dataclasses import replace

    from models import DEFAULT_INT8_MODEL_PATH, DEFAULT_MODEL_PATH
    from models.runtime import ModelError
    from stream.config import PLAIN_CHOICES, ConfigError, load_config, with_choices
    from stream.scaleout.keys import KeysError, WorkerKeys, copy_hint, keys_dir
    from stream.errors import InputError, error_lines
    from stream.stage import Job, StageSpec, stage_class
    from stream.transport import Endpoints

    args = build_parser().parse_args(argv)
    name = args.name or f"{socket.gethostname()}:{os.getpid()}"
    try:
        for option in ("batch_size", "threads", "credit"):
            value = getattr(args, option)
            if value is not None and value < (0 if option == "threads" else 1):
                raise InputError(f"--{option.replace('_', '-')} must be {'0' if option == 'threads' else '1'} "
                                 f"or more, got {value}")
        if not args.connect.startswith(("tcp://", "ipc://")):
            raise InputError(f"--connect: expected tcp://HOST:PORT or ipc://PATH, got {args.connect}")
        config = with_choices(load_config(args.config), PLAIN_CHOICES)
        model = args.model or DEFAULT_MODEL_PATH
        if args.stage == "inference" and not model.is_file():
            raise ModelError(f"model file not found: {model}")
        stage_config = getattr(config, args.stage)
        if args.batch_size is not None and args.stage == "inference":
            stage_config = replace(stage_config, batch_size=args.batch_size)
        if args.threads is not None and args.stage == "inference":
            stage_config = replace(stage_config, intra_op_threads=args.threads)
        config = replace(config, **{args.stage: stage_config})
    except (InputError, ConfigError, ModelError) as exc:
        print(error_lines(exc), file=sys.stderr)
        return 2
    credit = args.credit or default_credit(stage_config)
    keys_folder = keys_dir()
    try:
        keys = WorkerKeys.load(keys_folder)
    except KeysError as exc:
        print(f"error: {exc} ({copy_hint(keys_folder)})", file=sys.stderr)
        return 2

    reuse_freed_memory()
    leaving = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: leaving.set())
    context = zmq.Context()
    sock = connect(context, args.connect, f"{name}#{secrets.token_hex(8)}", keys)  # --name twice: two workers
    stage = None
    try:
        info = {"worker": name, "stage": args.stage, "host": socket.gethostname(), "pid": os.getpid()}
        welcome = greet(sock, info, args.wait, interrupted=leaving.is_set)
        if welcome is None:
            if leaving.is_set():
                return 0
            print(f"error: no pipeline answered at {args.connect} within {args.wait:g} s (not running, or "
                  f"its keys are not the ones in {keys_folder}: {copy_hint(keys_folder)})", file=sys.stderr)
            return 1
        if welcome["stage"] != args.stage:
            print(f"error: {args.connect} serves the {welcome['stage']} stage, not {args.stage}", file=sys.stderr)
            return 2
        if args.model is None and welcome.get("model_sha256"):  # the embedded twin the pipeline runs, if any
            model = next((twin for twin in (DEFAULT_MODEL_PATH, DEFAULT_INT8_MODEL_PATH)
                          if twin.is_file() and file_sha256(str(twin)) == welcome["model_sha256"]), model)
        if welcome.get("model_sha256") and file_sha256(str(model)) != welcome["model_sha256"]:
            print(f"error: {model} is not the pipeline's model (SHA-256 differs); pass the same file with --model",
                  file=sys.stderr)
            return 2
        job = Job(input="", output_tmp="", model=str(model), model_input_size=tuple(welcome["model_input_size"]))
        spec = StageSpec(stage=args.stage, replica=0, job=job, config=config,
                         endpoints=Endpoints(links={}, control="", commands=""))
        stage = stage_class(args.stage)(spec, _NoControl())
        try:
            stage.open()
        except (ModelError, InputError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(f"joined {args.connect} as {args.stage} worker {name} (credit {credit})", file=sys.stderr, flush=True)
        started = time.monotonic()
        outcome = LeaseLoop(stage, sock, credit, welcome, info, leave=leaving.is_set,
                            on_broker_silence="exit").run()
        share = 100 * outcome.busy_s / max(1e-9, time.monotonic() - started)
        if outcome.why == "broker_lost":
            print(f"error: the pipeline at {args.connect} stopped answering (after {outcome.frames} frames)",
                  file=sys.stderr)
            return 1
        ending = "left the run" if outcome.why == "left" else "the run is over"
        print(f"worker {name}: {outcome.frames} frames, busy {share:.0f}%; {ending}", file=sys.stderr)
        return 0
    finally:
        if stage is not None:
            stage.close()
        sock.close(linger=1000)
        context.term()
