"""The broker of a leased link: frames handed out to workers on credit, kept until they come back.

A stage whose replicas may die and be restarted (``restart.max_restarts``), or that workers from
other processes or hosts may join (``workers.listen``), reads its input through a broker process
(``cz-broker-<stage>``). The broker pulls frames from the producing stage, lends each one to a
worker, takes the result back, merges it into the frame and pushes the frame downstream: exactly
once, whatever happens to the workers.

Wire protocol (ZeroMQ ROUTER in the broker, one DEALER per worker; part 0 is the kind)::

    worker → broker   hello  {worker, stage, host, pid}      asks what the run is
                      ready  {credit}                        may now hold `credit` frames at once
                      result <message parts>                 a frame's new arrays; acknowledges its lease
                                                             and gives one credit back
                      heartbeat {frames, busy_s}             alive (every heartbeat_interval_s)
                      bye                                    leaving now; what it holds goes to others
    broker → worker   welcome {stage, model_input_size, model_sha256, heartbeat_interval_s, ...}
                      work <message parts>                   one frame: its header and only the arrays
                                                             the stage reads (``Stage.reads``)
                      flush                                  the stream has ended: run a partial batch now
                      heartbeat                              alive
                      reset                                  you were declared lost: drop what you hold,
                                                             send ready again
                      stop                                   the run is over: exit

Invariants:

* Every frame received from upstream is held (``held``) until its result arrives; the held
  frame keeps the arrays the worker was not sent, and the result's arrays replace those the stage
  consumes (``Stage.consumes``). A result is taken only from the worker the frame is lent to at
  that moment (a late one from a worker declared lost is dropped and counted) and only if it holds
  exactly what the stage produces (:func:`result_problem`).
* Every message from a peer is checked before use (:func:`stream.messages.decode`, credit and names
  in range, the result contract); a malformed one loses the peer (its frames go to others), tells it
  to stop and ignores it from then on: the run goes on. ZeroMQ disconnects a peer whose message is
  larger than any result can be (``MAXMSGSIZE``).
* A worker is lost on ``bye``, on ``heartbeat_timeout_s`` of silence, when it holds a frame longer
  than ``lease_timeout_s`` (alive, heartbeating, but not returning work), when its connection is
  gone (a send to it fails), or when the supervisor reports its process dead (command
  ``lost WORKER``). Its leased frames are queued again, lowest frame number first.
* Memory is bounded: the broker reads upstream only while fewer than ``queue_depth`` frames wait
  unleased, each worker holds at most its credit, and no frame more than ``workers.window`` ahead
  of the oldest unfinished one is handed out (which bounds the encoder's reorder buffer too).
* End of stream is forwarded downstream as soon as it arrives (it carries the frame count; the
  encoder waits for every frame); the broker keeps serving until the supervisor says ``stop``,
  then tells its workers ``stop``.
"""
from __future__ import annotations

import heapq
import json
import os
import socket
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
import zmq

from stream.checksum import file_sha256
from stream.config import PipelineConfig, bind_address_problem
from stream.memory import queue_depth
from stream.messages import FLAG_CARRY, FRAME, Message, MessageError, decode, encode
from stream.stage_process import become_stage_process, cpu_figures
from stream.transport import LINGER_MS, CommandListener, ControlChannel, Endpoints, poll_timeout_ms

HELLO, READY, RESULT, HEARTBEAT, BYE = b"hello", b"ready", b"result", b"heartbeat", b"bye"
WELCOME, WORK, FLUSH, RESET, STOP = b"welcome", b"work", b"flush", b"reset", b"stop"
WILDCARD_HOSTS = ("*", "0.0.0.0", "[::]", "::")
MAX_CREDIT = 10_000
MAX_NAME = 100
MAX_MODEL_GRID = 1024  # the largest ab grid (h or w) a model may predict


def result_problem(stage: str, result: Message, lent: Message, model_input_size: tuple[int, int]) -> str | None:
    """Why a worker's result for the frame ``lent`` cannot be taken (None: it is what the stage produces).

    Only the arrays the stage produces, with the shapes and types it produces them in, and finite
    values: a worker cannot recolour a frame with NaN, nor replace the picture (its lightness) from
    the inference stage.
    """
    if result.header.kind != FRAME:
        return f"a {result.header.kind!r} message where a frame result belongs"
    arrays = result.arrays
    if stage == "inference":
        if "l_input" not in lent.arrays:  # the model skips this frame: nothing comes back
            return None if not arrays else f"arrays {sorted(arrays)} for a frame the model skips"
        ab = arrays.get("ab")
        if set(arrays) != {"ab"}:
            return f"arrays {sorted(arrays)} where only 'ab' belongs"
        if (ab.dtype != np.float32 or ab.ndim != 3 or ab.shape[0] != 2
                or not 1 <= ab.shape[1] <= MAX_MODEL_GRID or not 1 <= ab.shape[2] <= MAX_MODEL_GRID):
            return f"ab of shape {list(ab.shape)} {ab.dtype}, expected float32 2×h×w"
        if not np.isfinite(ab).all():
            return "ab holds NaN or infinite values"
        return None
    wanted = {"lightness"} if lent.header.flags & FLAG_CARRY else {"l_input", "lightness"}
    if set(arrays) != wanted:
        return f"arrays {sorted(arrays)} where {' and '.join(repr(name) for name in sorted(wanted))} belong"
    l_input, lightness = arrays.get("l_input"), arrays["lightness"]
    if l_input is not None and (l_input.dtype != np.float32 or l_input.shape != (1, *model_input_size)
                                or not np.isfinite(l_input).all()):
        return f"l_input of shape {list(l_input.shape)} {l_input.dtype}, expected finite float32 1×{model_input_size[0]}×{model_input_size[1]}"
    frame, luma = lent.arrays.get("frame"), lent.arrays.get("luma")
    if frame is not None:
        expected = frame.shape[:2]
    elif luma is not None:
        expected = (luma.shape[0] // 2, luma.shape[1] // 2)
    else:
        return "a result for a frame lent with neither 'frame' nor 'luma'"
    if lightness.dtype != np.uint16 or lightness.shape != expected:
        return (f"lightness of shape {list(lightness.shape)} {lightness.dtype}, expected uint16 "
                f"{expected[0]}×{expected[1]}")
    return None


@dataclass(frozen=True)
class BrokerSpec:
    """What a broker process needs (picklable): the stage it feeds and that stage's contract.

    ``reads``: arrays a worker is sent; ``consumes``: arrays its result replaces (both from the
    stage class). ``model`` / ``model_input_size`` are passed on to joining workers.
    """

    stage: str
    input_link: str
    output_link: str
    reads: tuple[str, ...]
    consumes: tuple[str, ...]
    config: PipelineConfig
    endpoints: Endpoints
    model: str
    model_input_size: tuple[int, int]
    frame_bytes: int = 0
    supervisor_pid: int = field(default_factory=os.getpid)


@dataclass
class WorkerState:
    """A worker the broker knows: its credit, the frames it holds now, when it was last heard."""

    name: str
    host: str
    pid: int
    credit: int = 0
    leased: set[int] = field(default_factory=set)
    last_seen: float = 0.0
    frames: int = 0
    flushed: bool = True

    @property
    def free_credit(self) -> int:
        return self.credit - len(self.leased)


def advertised_address(bound: str, advertise: str) -> str:
    """The address to tell joining workers: ``advertise``, else the bound one with this host's name."""
    if advertise:
        return advertise
    host, _, port = bound.removeprefix("tcp://").rpartition(":")
    if bound.startswith("tcp://") and host.strip("[]") in ("0.0.0.0", "::", "*"):
        return f"tcp://{socket.gethostname()}:{port}"
    return bound


class Broker:
    """The lease table and its sockets. :meth:`serve` runs until the supervisor says ``stop``."""

    def __init__(self, spec: BrokerSpec, context: zmq.Context, control: ControlChannel,
                 commands: CommandListener):
        self.spec, self.control, self.commands = spec, control, commands
        stage_config = getattr(spec.config, spec.stage)
        self.pool = stage_config.workers
        self.queue_depth = queue_depth(spec.config, spec.input_link, spec.frame_bytes)
        self.frontend = context.socket(zmq.PULL)
        self.frontend.setsockopt(zmq.RCVHWM, self.queue_depth)
        self.frontend.setsockopt(zmq.LINGER, LINGER_MS)
        self.frontend.bind(spec.endpoints.links[spec.input_link][0])
        self.backend = context.socket(zmq.ROUTER)
        self.backend.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.backend.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self.backend.setsockopt(zmq.SNDHWM, 10_000)
        self.backend.setsockopt(zmq.LINGER, 0)
        # a peer sending more than a result can hold is disconnected by ZeroMQ before it is read
        self.backend.setsockopt(zmq.MAXMSGSIZE, max(spec.frame_bytes, 1 << 20) + (4 << 20))
        self.backend.bind(spec.endpoints.leases[spec.stage])
        self.public: str | None = None
        self.authenticator = None
        if self.pool.listen:
            listen = self.pool.listen
            if listen.startswith("tcp://") and listen.endswith(":0"):
                listen = listen[:-2] + ":*"
            problem = bind_address_problem(self.pool.listen)  # checked at load; a file may have appeared since
            if problem:
                raise RuntimeError(f"workers.listen {self.pool.listen}: {problem}")
            self._require_curve(context)  # for this address only: the local one above was bound before
            self.backend.bind(listen)
            self.public = self.backend.getsockopt_string(zmq.LAST_ENDPOINT)
        self.downstream = context.socket(zmq.PUSH)
        self.downstream.setsockopt(zmq.SNDHWM, queue_depth(spec.config, spec.output_link, spec.frame_bytes))
        self.downstream.setsockopt(zmq.LINGER, LINGER_MS)
        for endpoint in spec.endpoints.links[spec.output_link]:
            self.downstream.connect(endpoint)
        self.held: dict[int, Message] = {}
        self.pending: list[int] = []
        self.queued: set[int] = set()
        self.lessee: dict[int, bytes] = {}
        self.workers: dict[bytes, WorkerState] = {}
        self.reset_sent: set[bytes] = set()
        self.refused: set[bytes] = set()  # peers that sent a malformed message: ignored from then on
        self.lent_at: dict[int, float] = {}  # seq → when it was lent (lease deadlines)
        self.late = 0
        self.outbox: deque[list] = deque()
        self.eos_seen = False
        self.forwarded = self.resent = self.duplicates = 0
        self.finished_workers: dict[str, int] = {}
        self.busy = 0.0
        self.next_heartbeat = 0.0
        self.last_loop = time.monotonic()
        self.model_sha256 = file_sha256(spec.model) if self.public and spec.stage == "inference" else None

    # -- the loop ---------------------------------------------------------------------------

    def serve(self) -> None:
        if self.public:
            self.control.emit("listening", endpoint=self.public,
                              advertise=advertised_address(self.public, self.pool.advertise))
        while True:
            poller = zmq.Poller()
            poller.register(self.backend, zmq.POLLIN)
            poller.register(self.commands.socket, zmq.POLLIN)
            if len(self.queued) < self.queue_depth:
                poller.register(self.frontend, zmq.POLLIN)
            if self.outbox:
                poller.register(self.downstream, zmq.POLLOUT)
            ready = dict(poller.poll(min(poll_timeout_ms(self.next_heartbeat - time.monotonic()), 100)))
            t0 = time.monotonic()
            if self.commands.socket in ready:
                command = self.commands.poll()
                if command == "stop":
                    break
                if command and command.startswith("lost "):
                    self._lose(command.split(" ", 1)[1].encode(), "its process died")
            if self.frontend in ready:
                self._take_upstream()
            while self.backend.poll(0):
                self._from_worker(self.backend.recv_multipart(copy=False))
            self._send_downstream()
            self._expire_and_heartbeat()
            self._dispatch()
            self.busy += time.monotonic() - t0
        self._stop_workers()

    def _take_upstream(self) -> None:
        while len(self.queued) < self.queue_depth:
            try:
                parts = self.frontend.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            message = decode(parts)
            if message.is_eos:
                self.eos_seen = True
                self.outbox.append(encode(message))
                continue
            seq = message.header.seq
            if seq in self.held:
                continue
            self.held[seq] = message
            self._queue(seq)

    def _queue(self, seq: int) -> None:
        if seq not in self.queued:
            self.queued.add(seq)
            heapq.heappush(self.pending, seq)

    def _dispatch(self) -> None:
        """Hand out waiting frames, lowest number first, to the workers with the most free credit."""
        if not self.pending or len(self.outbox) >= self.queue_depth:
            return
        limit = None
        while self.pending:
            seq = self.pending[0]
            if seq not in self.held or seq in self.lessee:
                heapq.heappop(self.pending)
                self.queued.discard(seq)
                continue
            if limit is None:
                limit = min(self.held) + self.pool.window
            if seq >= limit:
                return
            worker_id, worker = max(self.workers.items(), key=lambda item: item[1].free_credit,
                                    default=(None, None))
            if worker is None or worker.free_credit <= 0:
                return
            heapq.heappop(self.pending)
            self.queued.discard(seq)
            message = self.held[seq]
            lent = Message(replace(message.header, buffers=[]),
                           {name: message.arrays[name] for name in self.spec.reads if name in message.arrays})
            if not self._send(worker_id, [WORK, *encode(lent)]):
                self._queue(seq)
                continue
            worker.leased.add(seq)
            worker.flushed = False
            self.lessee[seq] = worker_id
            self.lent_at[seq] = time.monotonic()

    def _from_worker(self, parts: list) -> None:
        """One message from a peer on the backend. Whatever it sent is checked before use; a
        malformed message loses the peer (its frames go to others) and it is ignored from then on."""
        worker_id = parts[0].bytes
        if worker_id in self.refused:
            return
        try:
            self._handle_worker_message(worker_id, parts[1:])
        except (MessageError, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
            self._refuse(worker_id, f"{type(exc).__name__ if not str(exc) else str(exc)}"[:200])

    def _handle_worker_message(self, worker_id: bytes, parts: list) -> None:
        if not parts:
            raise MessageError("empty message")
        kind, body = parts[0].bytes, parts[1:]
        worker = self.workers.get(worker_id)
        now = time.monotonic()
        if worker is not None:
            worker.last_seen = now
        if kind == HELLO:
            self._send(worker_id, [WELCOME, json.dumps({
                "stage": self.spec.stage, "model_input_size": list(self.spec.model_input_size),
                "model_sha256": self.model_sha256, "heartbeat_interval_s": self.pool.heartbeat_interval_s,
                "heartbeat_timeout_s": self.pool.heartbeat_timeout_s}).encode()])
        elif kind == READY:
            info = json.loads(body[0].bytes)
            credit, name, host, pid = info["credit"], info.get("worker", ""), info.get("host", "?"), info.get("pid", 0)
            if not isinstance(credit, int) or isinstance(credit, bool) or not 1 <= credit <= MAX_CREDIT:
                raise MessageError(f"credit {str(credit)[:20]!r} is not an integer in 1..{MAX_CREDIT}")
            if not isinstance(name, str) or not isinstance(host, str) or not isinstance(pid, int):
                raise MessageError("bad worker name, host or pid")
            self.reset_sent.discard(worker_id)
            if worker is not None:
                self._lose(worker_id, "it started again")
            self.workers[worker_id] = WorkerState(name=(name or worker_id.decode(errors="replace"))[:MAX_NAME],
                                                  host=host[:MAX_NAME], pid=pid, credit=credit, last_seen=now)
            name = self.workers[worker_id].name
            self.control.emit("worker", action="rejoined" if name in self.finished_workers else "joined",
                              worker=name, host=self.workers[worker_id].host, credit=credit)
        elif kind == RESULT:
            result = decode(body)
            seq = result.header.seq
            if self.lessee.get(seq) != worker_id:  # not lent to it (any more): a late or forged result
                self.late += 1
                if worker is not None:
                    worker.leased.discard(seq)
                else:
                    self._reset(worker_id)
                return
            problem = result_problem(self.spec.stage, result, self.held[seq], self.spec.model_input_size)
            if problem:
                raise MessageError(f"result for frame {seq}: {problem}")
            self._accept(worker_id, worker, result)
        elif kind == HEARTBEAT and worker is None:
            self._reset(worker_id)
        elif kind == BYE and worker is not None:
            self._lose(worker_id, "it left")
        elif kind not in (HEARTBEAT, BYE):
            raise MessageError(f"unknown message kind {kind[:20]!r}")

    def _refuse(self, worker_id: bytes, reason: str) -> None:
        """A peer sent a malformed message: it is lost (its frames go to others), told to stop, and
        ignored from then on; the run goes on."""
        self.refused.add(worker_id)
        if worker_id in self.workers:
            self._lose(worker_id, f"malformed message: {reason}")
        else:
            self.control.emit("worker", action="lost", worker=worker_id.decode(errors="replace")[:MAX_NAME],
                              host="?", reason=f"malformed message: {reason}", resent=0)
        self._send(worker_id, [STOP])

    def _reset(self, worker_id: bytes) -> None:
        """Tell a worker it was declared lost (once, until it is ready again)."""
        if worker_id not in self.reset_sent:
            self.reset_sent.add(worker_id)
            self._send(worker_id, [RESET])

    def _accept(self, worker_id: bytes, worker: WorkerState | None, result: Message) -> None:
        seq = result.header.seq
        if worker is not None:
            worker.leased.discard(seq)
            worker.frames += 1
        original = self.held.pop(seq, None)
        self.queued.discard(seq)
        if original is None:
            self.duplicates += 1
            return
        holder = self.lessee.pop(seq, None)
        self.lent_at.pop(seq, None)
        if holder is not None and holder != worker_id and holder in self.workers:
            self.workers[holder].leased.discard(seq)
        arrays = {name: array for name, array in original.arrays.items() if name not in self.spec.consumes}
        arrays.update(result.arrays)
        self.outbox.append(encode(Message(original.header, arrays)))
        self.forwarded += 1

    def _send_downstream(self) -> None:
        while self.outbox:
            try:
                self.downstream.send_multipart(self.outbox[0], flags=zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            self.outbox.popleft()

    def _send(self, worker_id: bytes, parts: list) -> bool:
        """Send to one worker; a worker whose connection is gone is lost (False)."""
        try:
            self.backend.send_multipart([worker_id, *parts], flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.ZMQError as exc:
            if exc.errno not in (zmq.EHOSTUNREACH, zmq.EAGAIN):
                raise
            if worker_id in self.workers:
                self._lose(worker_id, "its connection is gone")
            return False

    def _lose(self, worker_id: bytes, reason: str) -> None:
        worker = self.workers.pop(worker_id, None)
        if worker is None:
            return
        requeued = 0
        for seq in worker.leased:
            if self.lessee.get(seq) == worker_id:
                del self.lessee[seq]
                self.lent_at.pop(seq, None)
                if seq in self.held:
                    self._queue(seq)
                    requeued += 1
        self.resent += requeued
        self.finished_workers[worker.name] = self.finished_workers.get(worker.name, 0) + worker.frames
        self.control.emit("worker", action="left" if reason == "it left" else "lost", worker=worker.name,
                          host=worker.host, reason=reason, resent=requeued)

    def _expire_and_heartbeat(self) -> None:
        now = time.monotonic()
        gap, self.last_loop = now - self.last_loop, now
        for worker_id, worker in list(self.workers.items()):
            if gap > self.pool.heartbeat_interval_s:
                worker.last_seen += gap  # time the broker did not run is not the worker's silence
            if now - worker.last_seen > self.pool.heartbeat_timeout_s:
                self._lose(worker_id, f"no heartbeat for {self.pool.heartbeat_timeout_s:g} s")
                continue
            if gap > self.pool.heartbeat_interval_s:
                for seq in worker.leased:
                    self.lent_at[seq] = self.lent_at.get(seq, now) + gap
            overdue = [seq for seq in worker.leased if now - self.lent_at.get(seq, now) > self.pool.lease_timeout_s]
            if overdue:
                self._lose(worker_id, f"held frame {min(overdue)} for more than {self.pool.lease_timeout_s:g} s")
        waiting = any(seq in self.held and seq not in self.lessee for seq in self.queued)
        if self.eos_seen and not waiting:
            for worker_id, worker in list(self.workers.items()):
                if worker.leased and not worker.flushed:
                    worker.flushed = True
                    self._send(worker_id, [FLUSH])
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + self.pool.heartbeat_interval_s
            for worker_id in list(self.workers):
                self._send(worker_id, [HEARTBEAT])

    def _stop_workers(self) -> None:
        for worker_id in list(self.workers):
            self._send(worker_id, [STOP])

    def stats(self) -> dict:
        frames = dict(self.finished_workers)
        for worker in self.workers.values():
            frames[worker.name] = frames.get(worker.name, 0) + worker.frames
        return {"forwarded": self.forwarded, "resent": self.resent, "duplicates": self.duplicates, "late": self.late,
                "worker_frames": frames}

    def _require_curve(self, context: zmq.Context) -> None:
        """Make the addresses bound from now on CURVE servers that let in only peers holding the
        worker key (:mod:`stream.scaleout.keys`; created on first use), checked by ZeroMQ's ZAP handler
        running on a thread of this process."""
        from zmq.auth.thread import ThreadAuthenticator

        from stream.scaleout.keys import ServerKeys, ensure_keys

        keys = ServerKeys.load(ensure_keys()[0])
        self.authenticator = ThreadAuthenticator(context)
        self.authenticator.start()
        self.authenticator.configure_curve(domain="*", location=str(keys.allowed_dir))
        self.backend.setsockopt(zmq.CURVE_SERVER, 1)
        self.backend.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
        self.backend.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)

    def close(self) -> None:
        for sock in (self.frontend, self.backend, self.downstream):
            sock.close()
        if self.authenticator is not None:
            self.authenticator.stop()


def run_broker(spec: BrokerSpec) -> None:
    """Process entry point of a broker: serve until ``stop``; any failure is one ``error`` event."""

    become_stage_process(f"broker-{spec.stage}", spec.supervisor_pid)
    context = zmq.Context()
    name = f"broker-{spec.stage}"
    control = ControlChannel(context, spec.endpoints.control, name, 0)
    commands = CommandListener(context, spec.endpoints.commands)
    broker = None
    exit_code = 0
    started = time.monotonic()
    cpu_at_ready = None
    try:
        broker = Broker(spec, context, control, commands)
        control.emit("ready")
        cpu_at_ready = time.process_time()
        broker.serve()
    except Exception as exc:  # noqa: BLE001 - every failure must reach the supervisor as one line
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        control.emit("error", message=f"{type(exc).__name__}: {detail}", exit_code=1,
                     traceback=traceback.format_exc(limit=8))
        exit_code = 1
    finally:
        figures = broker.stats() if broker is not None else {}
        control.emit("stats", busy_s=broker.busy if broker else 0.0, alive_s=time.monotonic() - started,
                     **cpu_figures(cpu_at_ready), **figures)
        if broker is not None:
            broker.close()
        commands.close()
        control.close()
        context.term()
    sys.exit(exit_code)
