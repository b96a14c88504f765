"""The supervisor: starts the stage processes, watches them, and ends the run cleanly.

It owns the run's private directory of ipc endpoints, the control socket every stage reports to
and the command socket it broadcasts on. The run ends when:

* the encoder reports ``done``: every stage is told ``stop`` and joined (stragglers terminated);
* a stage reports ``error`` or dies (any exit code but 0, SIGKILL included): the others are
  stopped at once and the run fails with that stage's one-line error, within a second or two;
* Ctrl-C: the first asks the decoder to ``drain`` (stop reading; frames in flight are finished and
  the output stays playable); a second one aborts like a failure.

Leased stages (``restart.max_restarts`` > 0 or ``workers.listen``, see :mod:`stream.scaleout.broker`) get a
broker process (``cz-broker-<stage>``) between them and their producer. With a restart policy, a
replica that dies (any exit but 0 or 2, without an ``error`` event of its own: a SIGKILL, a crash,
the OOM killer) is reported to the broker (command ``lost WORKER``, so the frames it held are
sent again at once) and started again, up to ``max_restarts`` times in all; then the run fails as
above. An ``error`` event still fails the run at once: a deterministic failure would only repeat.
A dead broker, decoder or encoder always fails the run. Workers joining from elsewhere are the
broker's business; the supervisor only reports them (``on_notice``).

Whatever happens, no stage process and no ipc file outlives :meth:`Supervisor.run`.
"""
from __future__ import annotations

import json
import multiprocessing
import secrets
import shutil
import sys
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing import forkserver
from typing import Callable

import zmq

from stream.config import PLAIN_CHOICES, PipelineConfig, with_choices
from stream.errors import InputError, PipelineError
from stream.scaleout.keys import copy_hint, keys_dir
from stream.scaleout.broker import BrokerSpec, run_broker
from stream.stop_signals import STOP_SIGNALS
from stream.rundir import make_run_dir, place_fork_server_socket
from stream.stage import Job, StageSpec, run_stage, stage_class
from stream.transport import Endpoints, make_endpoints

STAGE_ORDER = ("encoder", "inference", "preprocessor", "decoder")
PRELOADED_MODULES = ["__main__", "stream.stage", "stream.scaleout.broker", "stages.decoder", "stages.preprocessor",
                     "stages.inference", "stages.encoder", "stages.live_source", "stages.live_sink"]
POLL_MS = 100
STOP_GRACE_S = 3.0
FAILURE_GRACE_S = 0.5
SIGNAL_NAMES = {-s.value: s.name for s in signal.Signals}


def stage_process_context() -> multiprocessing.context.BaseContext:
    """Where stage and broker processes come from: a fork server that imported the stage code (NumPy,
    OpenCV, PyAV, ZeroMQ) once, so a new process is a fork of it, ready at once, instead of a fresh
    interpreter that spends ~0.3 s of CPU on imports (×5 processes on 2 cores: most of a run's
    start-up). The server is started by the first run and serves every later run of this process;
    it exits when this process does. Unlike forking the supervisor itself (which has ZeroMQ's I/O
    threads), forking the server is safe; onnxruntime, which starts a thread when imported, is left
    to the inference processes. Everything a process needs still arrives pickled in its spec.
    """
    place_fork_server_socket()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOADED_MODULES)
    start_helpers_deaf_to_stop_signals()
    return context


def start_helpers_deaf_to_stop_signals() -> None:
    """Start the fork server (and the resource tracker it starts) with SIGINT, SIGTERM and SIGHUP
    ignored, a disposition they keep across exec: a service manager, ``timeout`` or a closed
    terminal signals the whole process group, and a fork server killed then takes every stage with
    it (they die with their parent) before the supervisor can finish the frames in flight."""
    if threading.current_thread() is not threading.main_thread():
        forkserver.ensure_running()
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in STOP_SIGNALS}
    try:
        forkserver.ensure_running()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@dataclass
class RunReport:
    """What a finished run did: counts, wall time, and each stage's busy seconds and CPU seconds
    (summed over replicas): ``cpu_s`` from the stage's ``ready`` on, ``startup_cpu_s`` before it.

    ``restarts``: replicas started again per stage; ``resent_frames``: frames a lost worker held that
    were sent again; ``joined_frames``: frames done by each worker that joined from elsewhere.
    ``frames_dropped``: frames decoded but deliberately not written (live runs), summed over the
    stages' ``dropped`` figures; ``decoder_reported``: the decoder's final figures arrived (else
    ``frames_decoded`` is unknown); ``warnings``: lines for the user from the stages' ``warnings``
    (a damaged input, say). See :mod:`stream.accounting`.
    """

    frames_written: int = 0
    frames_decoded: int = 0
    undecodable_packets: int = 0
    wall_s: float = 0.0
    busy_s: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    startup_cpu_s: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    audio: str | None = None
    notes: list[str] = field(default_factory=list)
    restarts: dict[str, int] = field(default_factory=dict)
    resent_frames: int = 0
    joined_frames: dict[str, int] = field(default_factory=dict)
    frames_dropped: int = 0
    decoder_reported: bool = False
    warnings: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames_written / self.wall_s if self.wall_s > 0 else 0.0

    def busy_share(self, stage: str, replicas: int = 1) -> float:
        """Busy seconds over wall time, per replica (0..1)."""
        return self.busy_s.get(stage, 0.0) / (self.wall_s * replicas) if self.wall_s > 0 and replicas else 0.0


@dataclass
class ProgressEvent:
    frames_done: int
    frames_total: int | None


class Supervisor:
    """Runs one job through the four stages. ``on_progress`` is called from the supervisor's loop.

    ``auto`` values still in ``config`` (the caller did not fit them to the machine with
    :func:`stream.observe.tune.fit_to_machine`) get :data:`stream.config.PLAIN_CHOICES`.
    """

    def __init__(self, job: Job, config: PipelineConfig,
                 on_progress: Callable[[ProgressEvent], None] | None = None,
                 on_notice: Callable[[str], None] | None = None,
                 on_live: Callable[[dict], None] | None = None):
        self.job, self.config = job, with_choices(config, PLAIN_CHOICES)
        config = self.config
        self.on_live = on_live or (lambda event: None)  # live runs' figures and log lines (stream/live/run.py)
        self.on_progress = on_progress or (lambda event: None)
        self.on_notice = on_notice or (lambda text: print(text, file=sys.stderr, flush=True))
        self.replicas = {"decoder": 1, "preprocessor": config.preprocessor.replicas,
                         "inference": config.inference.replicas, "encoder": 1}
        self.leased = {stage: stage_class(stage).input_link for stage in ("preprocessor", "inference")
                       if getattr(config, stage).leased}
        self.processes: dict[tuple[str, int], multiprocessing.Process] = {}
        self.worker_ids: dict[tuple[str, int], str] = {}
        self.local_workers: set[str] = set()
        self.generation = 0
        self.told_keys = False
        self.endpoints: Endpoints | None = None
        self.report = RunReport()
        self.total: int | None = None
        self.errors: deque[dict] = deque()
        self.stats_pending: set[tuple[str, int]] = set()

    def run(self) -> RunReport:
        run_dir = make_run_dir()
        context = zmq.Context()
        control = commands = None
        completed = False
        started = time.monotonic()
        try:
            endpoints = make_endpoints(self.config.transport, run_dir, {
                "frames": self.replicas["preprocessor"], "tensors": self.replicas["inference"],
                "colour": self.replicas["encoder"]}, leased=self.leased)
            control = context.socket(zmq.PULL)
            control.bind(endpoints.control)
            commands = context.socket(zmq.PUB)
            commands.setsockopt(zmq.LINGER, 0)
            commands.bind(endpoints.commands)
            self._start(endpoints)
            self._watch(control, commands)
            self.report.wall_s = time.monotonic() - started
            completed = True
            return self.report
        finally:
            if commands is not None:
                self._broadcast(commands, "stop")
            self._reap(STOP_GRACE_S if completed else FAILURE_GRACE_S)
            if control is not None:
                self._collect_stats(control, timeout_s=0.0)
                control.close(linger=0)
            if commands is not None:
                commands.close(linger=0)
            context.term()
            shutil.rmtree(run_dir, ignore_errors=True)

    def _start(self, endpoints: Endpoints) -> None:
        self.endpoints = endpoints
        self.process_context = stage_process_context()
        for stage, link in self.leased.items():
            cls = stage_class(stage, self.job.live)
            spec = BrokerSpec(stage=stage, input_link=link, output_link=cls.output_link, reads=cls.reads,
                              consumes=cls.consumes, config=self.config, endpoints=endpoints,
                              model=self.job.model, model_input_size=self.job.model_input_size,
                              frame_bytes=self.job.frame_bytes)
            process = self.process_context.Process(target=run_broker, args=(spec,), name=f"colorize-broker-{stage}", daemon=True)
            process.start()
            self.processes[(f"broker-{stage}", 0)] = process
            self.stats_pending.add((f"broker-{stage}", 0))
        for stage in STAGE_ORDER:
            for replica in range(self.replicas[stage]):
                self._spawn(stage, replica)

    def _spawn(self, stage: str, replica: int) -> None:
        """Start one replica of a stage (again, after a death); leased replicas get a fresh worker id."""
        self.generation += 1
        # unguessable, so no peer on the network can take over a local replica's identity
        worker_id = f"{stage}-{replica}.{self.generation}#{secrets.token_hex(8)}" if stage in self.leased else ""
        spec = StageSpec(stage=stage, replica=replica, job=self.job, config=self.config,
                         endpoints=self.endpoints, worker_id=worker_id)
        process = self.process_context.Process(
            target=run_stage, args=(spec,), name=f"colorize-{stage}-{replica}", daemon=True)
        process.start()
        self.processes[(stage, replica)] = process
        self.worker_ids[(stage, replica)] = worker_id
        self.local_workers.add(worker_id)
        self.stats_pending.add((stage, replica))

    def _watch(self, control: zmq.Socket, commands: zmq.Socket) -> None:
        done = False
        drain_sent = False
        while not done:
            try:
                if control.poll(POLL_MS):
                    done = self._handle_event(json.loads(control.recv()))
                if not done:
                    self._check_processes(control, commands)
            except KeyboardInterrupt:
                if drain_sent:
                    raise
                drain_sent = True
                self.report.interrupted = True
                self._broadcast(commands, "drain")
                self.on_notice("interrupted: finishing the frames in flight (Ctrl-C again stops at once)")
        self._broadcast(commands, "stop")
        deadline = time.monotonic() + STOP_GRACE_S
        while self.stats_pending and time.monotonic() < deadline:
            self._collect_stats(control, timeout_s=0.1)

    def _handle_event(self, event: dict) -> bool:
        """Apply one control event; True when the run is complete."""
        kind = event["event"]
        if kind == "total":
            self.total = event.get("frames")
        elif kind == "progress":
            self.on_progress(ProgressEvent(event["frames"], self.total))
        elif kind == "error":
            self._fail(event)
        elif kind == "stats":
            self._record_stats(event)
        elif kind == "live":
            self.on_live(event)
        elif kind in ("listening", "worker"):
            self._report_broker_event(event)
        elif kind == "done":
            self.report.frames_written = event.get("written", 0)
            self.report.latency_p50_ms = event.get("latency_p50_ms")
            self.report.latency_p95_ms = event.get("latency_p95_ms")
            self.report.audio = event.get("audio")
            self.on_progress(ProgressEvent(self.report.frames_written, self.total))
            return True
        return False

    def _fail(self, event: dict) -> None:
        message = f"{event['stage']} stage: {event['message']}" if event.get("exit_code") != 2 else event["message"]
        if event.get("exit_code") == 2:
            raise InputError(message)
        raise PipelineError(message)

    def _check_processes(self, control: zmq.Socket, commands: zmq.Socket) -> None:
        for (stage, replica), process in list(self.processes.items()):
            code = process.exitcode
            if code is None or code == 0:
                continue
            while control.poll(200):  # its own error event, if it managed to send one, comes first
                self._handle_event(json.loads(control.recv()))
            how = f"killed by {SIGNAL_NAMES[code]}" if code in SIGNAL_NAMES else f"exited with code {code}"
            self.stats_pending.discard((stage, replica))
            allowed = getattr(self.config, stage).restart.max_restarts if stage in self.leased else 0
            done = self.report.restarts.get(stage, 0)
            if done >= allowed or code == 2:
                again = f" after {done} restart{'s' if done != 1 else ''} ({stage}.restart.max_restarts: {allowed})"
                raise PipelineError(f"{stage} stage died ({how}){again if allowed else ''}")
            self.report.restarts[stage] = done + 1
            self._broadcast(commands, f"lost {self.worker_ids[(stage, replica)]}")
            self.on_notice(f"warning: {stage} replica {replica} died ({how}); started it again "
                           f"(restart {done + 1} of {allowed}); the frames it held are sent again")
            self._spawn(stage, replica)

    def _report_broker_event(self, event: dict) -> None:
        stage = event["stage"].removeprefix("broker-")
        if event["event"] == "listening":
            self.on_notice(f"{stage} workers can join: colorize worker --stage {stage} --connect {event['advertise']}")
            if not self.told_keys:
                self.told_keys = True
                self.on_notice(copy_hint(keys_dir()))
            return
        local = event["worker"] in self.local_workers
        if event["action"] in ("joined", "rejoined") and not local:
            self.on_notice(f"{stage} worker {event['worker']} {event['action']} from {event['host']}")
        elif event["action"] in ("left", "lost") and not (local and not event.get("reason", "").startswith("no heartbeat")):
            resent = event.get("resent", 0)
            what = "left" if event["action"] == "left" else f"lost ({event.get('reason')})"
            self.on_notice(f"{stage} worker {event['worker']} {what}; {resent} frame{'s' if resent != 1 else ''} "
                           "it held sent to other workers")

    def _record_stats(self, event: dict) -> None:
        key = (event["stage"], event["replica"])
        self.stats_pending.discard(key)
        stage = event["stage"]
        self.report.busy_s[stage] = self.report.busy_s.get(stage, 0.0) + event.get("busy_s", 0.0)
        for figure in ("cpu_s", "startup_cpu_s"):
            totals = getattr(self.report, figure)
            totals[stage] = totals.get(stage, 0.0) + event.get(figure, 0.0)
        if stage.startswith("broker-"):
            self.report.resent_frames += event.get("resent", 0)
            self.report.joined_frames.update({name: frames for name, frames in event.get("worker_frames", {}).items()
                                              if name not in self.local_workers})
        self.report.frames_dropped += event.get("dropped", 0)
        self.report.warnings.extend(event.get("warnings", []))
        self.report.notes.extend(event.get("notes", []))
        if stage == "decoder":
            self.report.frames_decoded = event.get("decoded", 0)
            self.report.undecodable_packets = event.get("undecodable_packets", 0)
            self.report.decoder_reported = True

    def _collect_stats(self, control: zmq.Socket, timeout_s: float) -> None:
        """Read pending stats events (errors that arrive now no longer matter)."""
        while control.poll(int(timeout_s * 1000)):
            event = json.loads(control.recv())
            if event["event"] == "stats":
                self._record_stats(event)
            timeout_s = 0.0

    @staticmethod
    def _broadcast(commands: zmq.Socket, command: str) -> None:
        commands.send(command.encode())

    def _reap(self, grace_s: float) -> None:
        """Join every stage; terminate, then kill, whatever does not exit within ``grace_s``."""
        deadline = time.monotonic() + grace_s
        for process in self.processes.values():
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes.values():
            if process.is_alive():
                process.terminate()
        for process in self.processes.values():
            process.join(1.0)
            if process.is_alive():
                process.kill()
                process.join()
