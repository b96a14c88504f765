"""ZeroMQ sockets between the supervisor and the stage processes.

Links (data, PUSH → PULL, bounded by high-water marks so a slow stage holds the others back):

    decoder --frames--> preprocessor --tensors--> inference --colour--> encoder

Every replica of a consuming stage binds its own endpoint; every replica of the producing stage
connects to all of them, so PUSH spreads frames over the replicas and PULL fair-queues them.

Control (supervisor ← stages, PUSH → PULL): small JSON events (``ready``, ``progress``, ``stats``,
``error``, ``done``). Commands (supervisor → stages, PUB → SUB): ``stop`` (exit now) and ``drain``
(decoder: stop reading, send end of stream).

On one host endpoints are ``ipc://`` files in a private directory made per run, so two pipelines
never share an endpoint; ``tcp`` uses loopback ports chosen per run.

Leased links (a stage with ``restart.max_restarts`` > 0 or ``workers.listen`` set): the producing
stage pushes to a broker process instead (``links[link]`` is then the broker's one endpoint), and
the stage's workers (its local replicas, and ``colorize worker`` processes from other processes or
hosts) connect DEALER sockets to the broker's ROUTER (``leases[stage]``, plus ``workers.listen``):

    preprocessor --tensors--> broker <==ROUTER/DEALER==> inference workers
                              broker --colour--> encoder

Workers ask for work with credit, send each result back on the same socket (the result is the
acknowledgement) and heartbeat; the broker keeps every frame until its result is back, sends the
frames of a lost worker again, and forwards each frame downstream exactly once. The wire protocol
is described in :mod:`stream.scaleout.broker`.
"""
from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import dataclass, field

import zmq

from stream.messages import Message, decode, encode

LINKS = ("frames", "tensors", "colour")
LINGER_MS = 5000


@dataclass(frozen=True)
class Endpoints:
    """Where every socket of one run lives. ``links[name]`` lists one endpoint per consumer replica
    (or the broker's input for a leased link); ``leases[stage]`` is where that stage's broker meets
    its workers."""

    links: dict[str, list[str]]
    control: str
    commands: str
    leases: dict[str, str] = field(default_factory=dict)


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_endpoints(kind: str, run_dir: str, consumers: dict[str, int],
                   leased: dict[str, str] | None = None) -> Endpoints:
    """Endpoints for a run: ``kind`` 'ipc' (files under ``run_dir``) or 'tcp' (free loopback ports).

    ``consumers`` maps each link name to the number of replicas of the stage that reads it;
    ``leased`` maps each leased stage to the link it reads (that link gets one endpoint: the broker).
    The control and command links, and the brokers' endpoints for local replicas, are ipc files in
    ``run_dir`` (private: mode 0700) whatever ``kind`` says: on a loopback port any local process
    could connect and end the run with a forged ``done`` or ``error``, or join as a worker.
    """
    def private(name: str) -> str:
        return f"ipc://{os.path.join(run_dir, name)}.sock"

    def endpoint(name: str) -> str:
        return private(name) if kind == "ipc" else f"tcp://127.0.0.1:{_free_tcp_port()}"

    leased = leased or {}
    consumers = {**consumers, **{link: 1 for link in leased.values()}}
    links = {link: [endpoint(f"{link}-{i}") for i in range(consumers[link])] for link in LINKS}
    leases = {stage: private(f"lease-{stage}") for stage in leased}  # local replicas only: workers use workers.listen
    return Endpoints(links=links, control=private("control"), commands=private("commands"), leases=leases)


def poll_timeout_ms(seconds: float) -> int:
    """A wait in seconds → the milliseconds to give ``zmq.Poller.poll``: rounded up, so a wait of
    under a millisecond sleeps instead of returning at once (which would spin the CPU until then)."""
    return max(0, math.ceil(seconds * 1000))


class Link:
    """One side of a data link: a PULL socket bound for input, or a PUSH socket connected for output."""

    def __init__(self, context: zmq.Context, sock_type: int, queue_depth: int):
        self.socket = context.socket(sock_type)
        self.socket.setsockopt(zmq.LINGER, LINGER_MS)
        self.socket.setsockopt(zmq.SNDHWM if sock_type == zmq.PUSH else zmq.RCVHWM, queue_depth)

    @classmethod
    def receiver(cls, context: zmq.Context, endpoint: str, queue_depth: int) -> "Link":
        link = cls(context, zmq.PULL, queue_depth)
        link.socket.bind(endpoint)
        return link

    @classmethod
    def sender(cls, context: zmq.Context, endpoints: list[str], queue_depth: int) -> "Link":
        link = cls(context, zmq.PUSH, queue_depth)
        for endpoint in endpoints:
            link.socket.connect(endpoint)
        return link

    def send(self, message: Message) -> None:
        self.socket.send_multipart(encode(message), copy=False)

    def receive(self) -> Message:
        return decode(self.socket.recv_multipart(copy=False))

    def close(self) -> None:
        self.socket.close()


class ControlChannel:
    """A stage's line to the supervisor: one-line JSON events tagged with stage name and replica."""

    def __init__(self, context: zmq.Context, endpoint: str, stage: str, replica: int):
        self.socket = context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.LINGER, LINGER_MS)
        self.socket.connect(endpoint)
        self.stage, self.replica = stage, replica

    def emit(self, event: str, **fields) -> None:
        payload = {"event": event, "stage": self.stage, "replica": self.replica, "pid": os.getpid(), **fields}
        self.socket.send(json.dumps(payload).encode())

    def close(self) -> None:
        self.socket.close()


class CommandListener:
    """A stage's subscription to the supervisor's commands (``stop``, ``drain``)."""

    def __init__(self, context: zmq.Context, endpoint: str):
        self.socket = context.socket(zmq.SUB)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.socket.connect(endpoint)

    def poll(self) -> str | None:
        """The next pending command, or None without waiting."""
        try:
            return self.socket.recv(zmq.NOBLOCK).decode()
        except zmq.Again:
            return None

    def close(self) -> None:
        self.socket.close()
