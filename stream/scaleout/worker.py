"""Workers of a leased stage: local replicas and ``colorize worker`` processes joining from elsewhere
(that command: :mod:`stream.scaleout.worker_cli`).

Both kinds run :class:`LeaseLoop` against the stage's broker (protocol in :mod:`stream.scaleout.broker`):
hello → welcome → open the stage (load the model) → ready(credit) → work/result/heartbeat until
the broker says ``stop``. The stage's hooks run on one compute thread, so the socket keeps being
served (heartbeats, new work arriving) while a batch runs; onnxruntime and OpenCV release the GIL.

"""
from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time
from dataclasses import dataclass

import zmq

from stream.scaleout.broker import BYE, FLUSH, HEARTBEAT, HELLO, READY, RESET, RESULT, STOP, WELCOME, WORK
from stream.messages import Message, decode, encode
from stream.transport import poll_timeout_ms

LEASED_STAGES = ("preprocessor", "inference")
POLL_CAP_MS = 100


def default_credit(stage_config) -> int:
    """Frames a worker holds at once: two batches and a little more, so the next batch waits ready."""
    return 2 * getattr(stage_config, "batch_size", 1) + 2


@dataclass
class LeaseOutcome:
    """How a :class:`LeaseLoop` ended (``why``: stop, command, left, broker_lost) and what it did."""

    why: str
    frames: int
    busy_s: float
    handed_back: int = 0


class ComputeThread:
    """Runs the stage's hooks one at a time off the socket thread; wakes the loop through a pipe."""

    def __init__(self, stage):
        self.stage = stage
        self.tasks: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.wake_read, self.wake_write = os.pipe()
        self.in_flight = 0
        self.busy = 0.0
        self.thread = threading.Thread(target=self._run, name="compute", daemon=True)
        self.thread.start()

    def submit(self, hook: str, message: Message | None = None) -> None:
        self.in_flight += 1
        self.tasks.put((hook, message))

    def _run(self) -> None:
        while True:
            hook, message = self.tasks.get()
            if hook == "close":
                return
            t0 = time.monotonic()
            try:
                outputs = list(self.stage.handle(message) if hook == "handle" else self.stage.flush())
                failure = None
            except Exception as exc:  # noqa: BLE001 - re-raised on the socket thread
                outputs, failure = [], exc
            self.busy += time.monotonic() - t0
            self.results.put((outputs, self.stage.deadline(), failure))
            os.write(self.wake_write, b"x")

    def completed(self) -> list[tuple[list[Message], float | None]]:
        """Results of finished hook calls (re-raising a hook's exception here)."""
        os.read(self.wake_read, 4096)
        done = []
        while True:
            try:
                outputs, deadline, failure = self.results.get_nowait()
            except queue.Empty:
                return done
            self.in_flight -= 1
            if failure is not None:
                raise failure
            done.append((outputs, deadline))

    def discard_queued(self) -> int:
        """Forget hook calls not started yet (their frames went back to the broker); how many frames."""
        frames = 0
        while True:
            try:
                hook, _ = self.tasks.get_nowait()
            except queue.Empty:
                return frames
            self.in_flight -= 1
            frames += hook == "handle"

    def close(self) -> None:
        self.discard_queued()
        self.tasks.put(("close", None))
        self.thread.join(timeout=5)
        os.close(self.wake_read)
        os.close(self.wake_write)


class LeaseLoop:
    """One worker's side of the broker protocol, after the welcome, until stop / leave / broker loss.

    ``commands``: the supervisor's command socket for local replicas (``stop`` ends the loop);
    ``leave``: a callable telling when the worker should leave (signal received).
    """

    def __init__(self, stage, sock: zmq.Socket, credit: int, welcome: dict, identity: dict, commands=None,
                 leave=lambda: False, on_broker_silence: str = "wait"):
        self.stage, self.socket, self.credit, self.identity = stage, sock, credit, identity
        self.reads = tuple(type(stage).reads)
        self.interval = float(welcome["heartbeat_interval_s"])
        self.timeout = float(welcome["heartbeat_timeout_s"])
        self.commands, self.leave = commands, leave
        self.on_broker_silence = on_broker_silence
        self.frames = 0

    def run(self) -> LeaseOutcome:
        compute = ComputeThread(self.stage)
        try:
            return self._serve(compute)
        finally:
            compute.close()

    def _serve(self, compute: ComputeThread) -> LeaseOutcome:
        self._send(READY, {"credit": self.credit, **self.identity})
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(compute.wake_read, zmq.POLLIN)
        if self.commands is not None:
            poller.register(self.commands.socket, zmq.POLLIN)
        heard = next_heartbeat = time.monotonic()
        deadline: float | None = None
        held = 0
        while True:
            pass_started = time.monotonic()
            wait = min(next_heartbeat - pass_started, POLL_CAP_MS / 1000)
            if deadline is not None and compute.in_flight == 0:
                wait = min(wait, deadline - pass_started)
            ready = dict(poller.poll(poll_timeout_ms(wait)))
            if self.commands is not None and self.commands.socket in ready and self.commands.poll() == "stop":
                return LeaseOutcome("command", self.frames, compute.busy)
            if compute.wake_read in ready:
                for outputs, deadline in compute.completed():
                    for message in outputs:
                        new = {k: v for k, v in message.arrays.items() if k not in self.reads}
                        self.socket.send_multipart([RESULT, *encode(Message(message.header, new))], copy=False)
                        self.frames += 1
                        held -= 1
            while self.socket.poll(0):
                parts = self.socket.recv_multipart(copy=False)
                heard = time.monotonic()
                kind = parts[0].bytes
                if kind == WORK:
                    compute.submit("handle", decode(parts[1:]))
                    held += 1
                elif kind == FLUSH:
                    compute.submit("flush")
                elif kind == RESET:
                    held -= compute.discard_queued()
                    self._send(READY, {"credit": self.credit, **self.identity})
                elif kind == STOP:
                    return LeaseOutcome("stop", self.frames, compute.busy)
            now = time.monotonic()
            stalled = now - pass_started - max(0.0, wait)
            if stalled > self.interval:
                # this pass ran a heartbeat interval past its wait: the process did not run (stopped,
                # starved), which is not the broker's silence; counted before that silence is judged
                heard += stalled
            if deadline is not None and compute.in_flight == 0 and now >= deadline:
                deadline = None
                compute.submit("flush")
            if self.leave():
                self.socket.send(BYE)
                return LeaseOutcome("left", self.frames, compute.busy, handed_back=max(0, held))
            if now - heard > self.timeout and self.on_broker_silence == "exit":
                return LeaseOutcome("broker_lost", self.frames, compute.busy)
            if now >= next_heartbeat:
                next_heartbeat = now + self.interval
                self._send(HEARTBEAT, {"frames": self.frames, "busy_s": compute.busy})

    def _send(self, kind: bytes, payload: dict) -> None:
        self.socket.send_multipart([kind, json.dumps(payload).encode()])


def connect(context: zmq.Context, endpoint: str, identity: str, keys=None) -> zmq.Socket:
    """A DEALER to the broker under the ZeroMQ identity ``identity`` (unique per process: the broker
    keys workers by it, so two workers must never share one); ``keys`` (:class:`stream.scaleout.keys.WorkerKeys`)
    for a broker's ``workers.listen`` address, which only CURVE clients holding them may join."""
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, identity.encode())
    sock.setsockopt(zmq.LINGER, 1000)
    if keys is not None:
        keys.apply(sock)
    sock.connect(endpoint)
    return sock


def greet(sock: zmq.Socket, info: dict, patience_s: float, interrupted=lambda: False) -> dict | None:
    """Send hello (again every second) until the welcome arrives; None after ``patience_s``."""
    give_up = time.monotonic() + patience_s
    while time.monotonic() < give_up and not interrupted():
        sock.send_multipart([HELLO, json.dumps(info).encode()])
        resend = time.monotonic() + 1.0
        while time.monotonic() < min(resend, give_up) and not interrupted():
            if sock.poll(POLL_CAP_MS):
                parts = sock.recv_multipart()
                if parts[0] == WELCOME:
                    return json.loads(parts[1])
    return None


def run_local_replica(stage, context: zmq.Context, endpoint: str, identity: str, credit: int, commands) -> float:
    """A supervised replica of a leased stage (the stage is already open): serve until ``stop``.

    Returns the busy seconds.
    """
    sock = connect(context, endpoint, identity)
    try:
        info = {"worker": identity, "stage": type(stage).name, "host": socket.gethostname(), "pid": os.getpid()}
        welcome = None
        while welcome is None:
            welcome = greet(sock, info, patience_s=1.0)
            if commands.poll() == "stop":
                return 0.0
        return LeaseLoop(stage, sock, credit, welcome, info, commands=commands).run().busy_s
    finally:
        sock.close(linger=0)
