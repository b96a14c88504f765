"""Scale-out and restarts: workers join and leave a running pipeline, dead replicas are started again,
and the output stays frame-for-frame what an undisturbed run writes. Real processes, real sockets."""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from stream.config import PROJECT_ROOT, ConfigError, load_config
from stream.scaleout.keys import WorkerKeys, keys_dir
from tests.conftest import BackgroundCli, run_cli, save_colour_model, shared_file, video_facts
from tests.test_pipeline import decoded_frames, descends_from, stage_processes

CONFIGS = sorted((PROJECT_ROOT / "configs").glob("*.yaml"))


def build_slow_model(path: Path, layers: int = 6, width: int = 16, size: int = 224) -> Path:
    """A model with the pipeline's contract whose inference costs tens of milliseconds a frame on a CPU,
    so inference is the bottleneck and workers always hold frames when they die or leave."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    initialisers, nodes, previous, channels = [], [], "l_minus_50", 1
    for i in range(layers):
        weights = rng.normal(0, 0.5 / np.sqrt(9 * channels), (width, channels, 3, 3)).astype(np.float32)
        initialisers.append(numpy_helper.from_array(weights, f"w{i}"))
        nodes += [helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        previous, channels = f"r{i}", width
    initialisers += [numpy_helper.from_array(rng.normal(0, 2, (2, width, 1, 1)).astype(np.float32), "head"),
                     numpy_helper.from_array(np.array([10, 20], np.float32), "bias")]
    nodes += [helper.make_node("AveragePool", [previous], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
              helper.make_node("Conv", ["pooled", "head", "bias"], ["ab"])]
    return save_colour_model(path, "slow_ab", nodes, initialisers, size=size)


@pytest.fixture(scope="module")
def slow_model(tmp_path_factory) -> Path:
    return build_slow_model(tmp_path_factory.mktemp("models") / "slow.onnx")


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory, slow_model) -> list[bytes]:
    """The frames of a plain run (defaults but the model on every frame, direct links) on test_video.mp4."""
    folder = tmp_path_factory.mktemp("reference")
    output = folder / "reference.mkv"
    result = run_cli(shared_file("video", "test_video.mp4"), "-o", output, "--model", slow_model, "-q",
                     "--config", write_config(folder, every_frame("")))
    assert result.returncode == 0, result.stderr
    return decoded_frames(output)


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def every_frame(text: str) -> str:
    """Config ``text`` with the model on every frame (``every_nth_frame: 1``), so every frame goes
    through the workers and replicas under test."""
    line = "inference:\n  every_nth_frame: 1\n"
    return text.replace("inference:\n", line, 1) if "inference:\n" in text else line + text


def listening_run(tmp_path: Path, config_text: str, model: Path, output: Path) -> tuple[BackgroundCli, str]:
    """A run of test_video.mp4 whose inference broker accepts workers; (the run, the address to join)."""
    config = write_config(tmp_path, every_frame(config_text))
    pipeline = BackgroundCli(shared_file("video", "test_video.mp4"), "-o", output, "--model", model,
                             "--config", config)
    endpoint = pipeline.wait_for(r"inference workers can join: colorize worker --stage inference "
                                 r"--connect (tcp://127\.0\.0\.1:\d+)$").group(1)
    return pipeline, endpoint


def test_every_shipped_config_loads():
    assert {"default.yaml", "throughput.yaml", "multihost.yaml"} <= {path.name for path in CONFIGS}
    for path in CONFIGS:
        load_config(path)
    multihost = load_config(PROJECT_ROOT / "configs" / "multihost.yaml")
    assert multihost.inference.workers.listen.startswith("tcp://")


@pytest.mark.parametrize("text, message", [
    ("decoder:\n  restart: {max_restarts: 1}\n", ":2: decoder.restart: unknown key"),
    ("inference:\n  restart:\n    max_restarts: -1\n", ":3: inference.restart.max_restarts: expected an integer in 0..10000"),
    ("inference:\n  workers:\n    listen: 10.0.0.5:5560\n",
     ":3: inference.workers.listen: expected tcp://HOST:PORT (port 0..65535) or ipc://PATH, found '10.0.0.5:5560'"),
    ("inference:\n  workers:\n    listen: tcp://0.0.0.0:70000\n", ":3: inference.workers.listen: expected tcp://HOST:PORT"),
    ("inference:\n  workers:\n    listen: tcp://0.0.0.0:5560\n    advertise: tcp://0.0.0.0:5560\n",
     ":4: inference.workers.advertise: expected an address other hosts can connect to"),
    ("inference:\n  workers:\n    advertise: tcp://gpu1:5560\n",
     ":3: inference.workers.advertise: needs listen"),
    ("preprocessor:\n  replicas: 0\n", ":2: preprocessor.replicas: 0 needs workers.listen"),
    ("inference:\n  workers:\n    heartbeat_interval_s: 2\n    heartbeat_timeout_s: 3\n",
     ":4: inference.workers.heartbeat_timeout_s: expected at least twice heartbeat_interval_s"),
])
def test_scale_out_settings_are_checked_at_load_with_file_line_and_key(tmp_path, text, message):
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}:")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_workers_join_die_leave_and_hang_without_losing_or_repeating_a_frame(tmp_path, slow_model, undisturbed,
                                                                             ab_model):
    """No local inference replica: every frame is done by workers started as separate processes over
    tcp on 127.0.0.1, one at a time, so each event happens mid-run whatever the machine's speed.
    A deep queue keeps the broker handing out work even when the encoder is slower than the model,
    so a worker always holds frames when it goes."""
    output = tmp_path / "joined.mkv"
    pipeline, endpoint = listening_run(tmp_path, "inference:\n  replicas: 0\n  queue_depth: 64\n  workers:\n"
                                                 "    listen: tcp://127.0.0.1:0\n    heartbeat_interval_s: 0.2\n"
                                                 "    heartbeat_timeout_s: 1.0\n", slow_model, output)

    def worker(name: str, model: Path = slow_model) -> BackgroundCli:
        return BackgroundCli("worker", "--stage", "inference", "--connect", endpoint, "--model", model,
                       "--name", name, "--credit", "6", "--threads", "1", "--wait", "30")

    wrong = worker("wrong", ab_model)
    assert wrong.finish(60) == 2
    assert wrong.lines[-1].startswith("error: ") and "is not the pipeline's model" in wrong.lines[-1]

    crashing = worker("crashing")
    pipeline.wait_for(r"inference worker crashing joined")
    time.sleep(0.3)
    crashing.signal(signal.SIGKILL)
    lost = pipeline.wait_for(r"inference worker crashing lost \((.*)\); (\d+) frames? it held sent to other workers")

    leaving = worker("leaving")
    pipeline.wait_for(r"inference worker leaving joined")
    time.sleep(0.3)
    leaving.signal(signal.SIGTERM)
    assert leaving.finish(30) == 0
    assert re.fullmatch(r"worker leaving: \d+ frames, busy \d+%; left the run", leaving.lines[-1])
    left = pipeline.wait_for(r"inference worker leaving left; (\d+) frames? it held sent to other workers")

    hanging = worker("hanging")
    pipeline.wait_for(r"inference worker hanging joined")
    hanging.signal(signal.SIGSTOP)  # at once: on an idle machine it would finish the run within 0.3 s
    hung = pipeline.wait_for(r"inference worker hanging lost \(no heartbeat for 1 s\); (\d+) frames?")
    hanging.signal(signal.SIGCONT)
    pipeline.wait_for(r"inference worker hanging rejoined")

    assert pipeline.finish() == 0, pipeline.lines
    assert hanging.finish(30) == 0
    assert hanging.lines[-1].endswith("the run is over")
    summary = pipeline.lines[-1]
    assert re.match(r"96 frames in .* -> .*; busy: .*; \d+ frames done by 3 joining workers; \d+ frames sent again$",
                    summary), summary
    resent = int(lost.group(2)) + int(left.group(1)) + int(hung.group(1))
    assert resent > 0, "no worker held a frame when it went: nothing was tested"
    assert f"{resent} frames sent again" in summary
    assert decoded_frames(output) == undisturbed
    assert video_facts(output).frames == 96


def wait_for_new_child(cli: BackgroundCli, name: str, exclude: set[int], timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, comm in stage_processes().items():
            if comm == name and pid not in exclude and descends_from(pid, cli.process.pid):
                return pid
        time.sleep(0.05)
    raise AssertionError(f"no {name} process appeared; stderr: {cli.lines}")


def test_with_a_restart_policy_killed_replicas_are_restarted_and_the_output_is_unchanged(tmp_path, slow_model,
                                                                                         undisturbed):
    config = write_config(tmp_path, every_frame("preprocessor:\n  restart: {max_restarts: 2}\n  queue_depth: 64\n"
                                    "inference:\n  restart: {max_restarts: 2}\n  queue_depth: 64\n"))
    output = tmp_path / "restarted.mkv"
    cli = BackgroundCli(shared_file("video", "test_video.mp4"), "-o", output, "--model", slow_model, "--config", config)
    inference = wait_for_new_child(cli, "cz-inference", set())
    preprocessor = wait_for_new_child(cli, "cz-preprocessor", set())
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob(".restarted.colorize-*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(inference, signal.SIGKILL)
    cli.wait_for(r"^warning: inference replica 0 died \(killed by SIGKILL\); started it again \(restart 1 of 2\)")
    os.kill(preprocessor, signal.SIGKILL)
    cli.wait_for(r"^warning: preprocessor replica 0 died \(killed by SIGKILL\); started it again \(restart 1 of 2\)")
    assert cli.finish() == 0, cli.lines
    assert re.search(r"; inference restarted 1×, preprocessor restarted 1×; \d+ frames sent again$", cli.lines[-1])
    assert decoded_frames(output) == undisturbed


def test_a_replica_dying_more_often_than_allowed_fails_the_run(tmp_path, slow_model):
    config = write_config(tmp_path, every_frame("inference:\n  restart: {max_restarts: 1}\n"))
    output = tmp_path / "doomed.mkv"
    cli = BackgroundCli(shared_file("video", "test_video.mp4"), "-o", output, "--model", slow_model, "--config", config, "-q")
    first = wait_for_new_child(cli, "cz-inference", set())
    os.kill(first, signal.SIGKILL)
    second = wait_for_new_child(cli, "cz-inference", {first})
    os.kill(second, signal.SIGKILL)
    assert cli.finish(30) == 1
    assert cli.lines[-1] == ("error: inference stage died (killed by SIGKILL) after 1 restart "
                             "(inference.restart.max_restarts: 1)")
    assert not output.exists()
    assert not [p for p in tmp_path.iterdir() if ".colorize-" in p.name]


def test_tune_measures_this_machine_and_writes_a_config_that_loads(tmp_path, slow_model):
    tuned = tmp_path / "tuned.yaml"
    result = run_cli("tune", shared_file("video", "test_video.mp4"), "-o", tuned, "--model", slow_model,
                     "--frames", "8", timeout=240)
    assert result.returncode == 0, result.stderr
    config = load_config(tuned)
    cores = len(os.sched_getaffinity(0))
    assert 1 <= config.inference.replicas <= cores
    assert config.inference.batch_size in (1, 2, 4, 8)
    assert 1 <= config.preprocessor.replicas <= cores
    text = result.stdout + result.stderr
    for stage in ("decode", "preprocess", "inference", "encode"):
        assert re.search(rf"{stage}\b.*ms", text), text
    assert f"{cores} core" in text
    assert yaml.safe_load(tuned.read_text())["inference"]["replicas"] == config.inference.replicas


def costs(decode_ms: float, preprocess_ms: float, inference_ms: float, encode_ms: float, cores: int):
    from stream.observe.tune import Cost, Measurements

    def cost(ms):
        return Cost(ms / 1000, ms / 1000)

    return Measurements(frames=1, size=(0, 0), cores=cores, decode=cost(decode_ms), preprocess=cost(preprocess_ms),
                        inference={(1, 1): cost(inference_ms), (2, 1): cost(inference_ms * 0.96)},
                        encode=cost(encode_ms))


def test_auto_gives_inference_replicas_in_proportion_to_its_share_of_the_work():
    from stream.observe.tune import plan

    # one-thread costs measured on the 2-core development machine (embedded model, veryfast)
    at_360p, at_1080p = costs(0.4, 0.5, 11.3, 4.4, cores=2), costs(2.2, 3.3, 11.6, 23.8, cores=2)
    assert (plan(at_360p).inference_replicas, plan(at_360p).intra_op_threads, plan(at_360p).batch_size) == (2, 1, 1)
    assert plan(at_1080p).inference_replicas == 1
    sixteen = plan(costs(0.4, 0.5, 11.3, 4.4, cores=16))  # the encoder's 227 fps is the limit: 2.6 busy replicas
    assert sixteen.inference_replicas == 3 and sixteen.preprocessor_replicas == 1


def test_sparse_inference_is_planned_for_its_cost_per_output_frame():
    from stream.observe.tune import plan, sparse_inference

    sixteen = costs(0.4, 0.5, 11.3, 4.4, cores=16)  # every frame: 3 replicas (above)
    one_in_four = plan(sparse_inference(sixteen, 4))  # 227 fps × 2.8 ms = 0.64 busy replicas
    assert one_in_four.inference_replicas == 1 and one_in_four.target_fps == plan(sixteen).target_fps


def test_auto_values_are_fitted_to_this_machine_and_numbers_are_kept(tmp_path):
    from models import DEFAULT_MODEL_PATH
    from models.runtime import ColorModel, SessionSettings
    from stream.config import PLAIN_CHOICES, PipelineConfig, auto_fields, with_choices
    from stream.observe.tune import fit_to_machine

    model = ColorModel(DEFAULT_MODEL_PATH, SessionSettings(intra_op_threads=1))

    cores = len(os.sched_getaffinity(0))
    fitted, line = fit_to_machine(PipelineConfig(), model, 640, 360, live=False)
    assert auto_fields(fitted) == []
    assert 1 <= fitted.inference.replicas <= cores and fitted.inference.intra_op_threads == 1
    assert fitted.inference.batch_size in (1, 2) and fitted.preprocessor.replicas == 1
    assert line.startswith(f"auto: inference {fitted.inference.replicas}× (1 thread, batch {fitted.inference.batch_size})")
    live, live_line = fit_to_machine(PipelineConfig(), model, 640, 360, live=True)
    assert live == with_choices(PipelineConfig(), PLAIN_CHOICES) and "live" in live_line
    explicit = load_config(PROJECT_ROOT / "configs" / "throughput.yaml")
    assert fit_to_machine(explicit, model, 640, 360, live=False) == (explicit, "")


def test_sparse_inference_writes_every_frame_coloured_and_leased_stages_agree(tmp_path, ab_model):
    source = shared_file("video", "test_video.mp4")
    outputs = {}
    for name, extra in (("direct", ""), ("leased", "  restart:\n    max_restarts: 1\n")):
        config = write_config(tmp_path, f"inference:\n  every_nth_frame: 3\n{extra}")
        outputs[name] = tmp_path / f"{name}.mp4"
        result = run_cli(source, "-o", outputs[name], "--model", ab_model, "--config", config, "-q")
        assert result.returncode == 0, result.stderr
    facts = video_facts(outputs["direct"])
    assert facts.frames == video_facts(source).frames == 96
    assert facts.pts == video_facts(source).pts
    assert facts.mean_chroma > 5.0  # every 10th frame is sampled: most of them are frames the model skipped
    assert decoded_frames(outputs["direct"]) == decoded_frames(outputs["leased"])


def test_only_workers_holding_the_pipelines_keys_can_join(tmp_path, slow_model, pipeline_keys):
    """workers.listen is a CURVE server: a worker with other keys, or a plain ZeroMQ peer, never gets
    a welcome (nor the model's hash), and the run goes on with its own replica."""
    import json

    import zmq

    from stream.scaleout.keys import ensure_keys

    output = tmp_path / "guarded.mkv"
    pipeline, endpoint = listening_run(tmp_path, "inference:\n  replicas: 1\n  workers:\n    listen: tcp://127.0.0.1:0\n",
                                       slow_model, output)
    hint = pipeline.wait_for(r"workers on other hosts need the pipeline's keys: copy (\S+) and (\S+) into").groups()
    assert hint == (str(pipeline_keys / "pipeline.key"), str(pipeline_keys / "worker.key_secret"))
    other_keys, _ = ensure_keys(tmp_path / "other-keys")
    outsider = run_cli("worker", "--stage", "inference", "--connect", endpoint, "--model", slow_model, "--wait", "3",
                       env_extra={"COLORIZE_KEYS": str(other_keys)})
    assert outsider.returncode == 1
    assert outsider.last_error_line.startswith(f"error: no pipeline answered at {endpoint} within 3 s (not running, "
                                               f"or its keys are not the ones in {other_keys}")
    context = zmq.Context()
    plain = context.socket(zmq.DEALER)
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(endpoint)
    plain.send_multipart([b"hello", json.dumps({"worker": "plain", "stage": "inference"}).encode()])
    assert plain.poll(3000) == 0  # no welcome, no model hash: the handshake never completed
    plain.close()
    context.term()
    assert pipeline.finish() == 0
    assert not [line for line in pipeline.lines if " joined " in line]
    assert video_facts(output).frames == 96


def test_colorize_keys_creates_private_keys_once_and_says_how_to_share_them(tmp_path):
    import stat

    folder = tmp_path / "keys"
    first = run_cli("keys", env_extra={"COLORIZE_KEYS": str(folder)})
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == f"created keys in {folder}"
    assert sorted(p.name for p in folder.iterdir()) == ["pipeline.key", "pipeline.key_secret", "worker.key",
                                                      "worker.key_secret"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "worker.key_secret").stat().st_mode) == 0o600
    secret = (folder / "worker.key_secret").read_bytes()
    again = run_cli("keys", env_extra={"COLORIZE_KEYS": str(folder)})
    assert again.stdout.splitlines()[0] == f"using keys in {folder}"
    assert (folder / "worker.key_secret").read_bytes() == secret
    assert "copy" in again.stdout.splitlines()[1]


def test_malformed_messages_from_peers_are_dropped_and_the_run_is_untouched(tmp_path, slow_model, undisturbed):
    """Peers speaking the wire protocol badly (bad JSON, a non-numeric credit, a result of the wrong
    shape, a buffer declared far larger than sent, an oversized message, a result for a frame never
    lent to them) are each disconnected with one notice; the run finishes with every frame as an
    undisturbed run writes it."""
    import json

    import zmq

    output = tmp_path / "attacked.mkv"
    pipeline, endpoint = listening_run(tmp_path, "inference:\n  replicas: 1\n  workers:\n    listen: tcp://127.0.0.1:0\n",
                                       slow_model, output)
    context = zmq.Context()

    peers = []

    def peer(name: bytes) -> zmq.Socket:
        sock = context.socket(zmq.DEALER)
        peers.append(sock)  # kept open: a closed socket drops what it has not sent yet
        sock.setsockopt(zmq.IDENTITY, name)
        sock.setsockopt(zmq.LINGER, 0)
        WorkerKeys.load(keys_dir()).apply(sock)  # holders of the keys: a buggy worker, not an outsider
        sock.connect(endpoint)
        return sock

    def header(seq: int, buffers: list) -> bytes:
        return json.dumps({"kind": "frame", "seq": seq, "pts": 0, "time_base": [1, 15], "flags": 0,
                           "sent_at": 0.0, "rotation": 0, "buffers": buffers}).encode()

    try:
        peer(b"bad-json").send_multipart([b"ready", b"{not json"])
        peer(b"bad-credit").send_multipart([b"ready", json.dumps({"credit": "lots", "worker": "x"}).encode()])
        peer(b"never-lent").send_multipart([b"result", header(3, [{"name": "ab", "shape": [2, 56, 56],
                                                                   "dtype": "<f4"}]), bytes(2 * 56 * 56 * 4)])
        peer(b"huge").send_multipart([b"result", header(0, [{"name": "ab", "shape": [100000, 100000],
                                                             "dtype": "<f4"}]), b"\0" * 16])
        peer(b"oversized").send_multipart([b"heartbeat", b"\0" * (64 << 20)])
        liar = peer(b"wrong-shape")
        liar.send_multipart([b"ready", json.dumps({"credit": 2, "worker": "wrong-shape", "host": "h", "pid": 1}).encode()])
        deadline = time.monotonic() + 30
        while True:  # heartbeats come too; wait for a frame
            assert liar.poll(max(1, int(1000 * (deadline - time.monotonic())))), "no frame was lent to the liar"
            kind, *work = liar.recv_multipart()
            if kind == b"work":
                break
        seq = json.loads(work[0])["seq"]
        liar.send_multipart([b"result", header(seq, [{"name": "ab", "shape": [3, 5, 5], "dtype": "<f4"}]),
                             bytes(3 * 5 * 5 * 4)])
        assert pipeline.finish(180) == 0, pipeline.lines
    finally:
        context.destroy(linger=0)
    notices = "\n".join(pipeline.lines)
    for name, reason in (("bad-json", "header is not JSON|Expecting"), ("bad-credit", "credit 'lots' is not an integer"),
                         ("huge", "bytes for shape"), ("wrong-shape", r"ab of shape \[3, 5, 5\]")):
        assert re.search(rf"inference worker {name} lost \(malformed message: .*({reason})", notices), (name, notices)
    assert "never-lent" not in notices  # a result for a frame it does not hold is ignored, not taken
    assert decoded_frames(output) == undisturbed


def test_a_hoarding_worker_loses_its_frames_and_no_peer_can_take_another_workers_identity(tmp_path, slow_model,
                                                                                         undisturbed):
    """A peer that takes frames and heartbeats but never returns them is lost after lease_timeout_s and
    its frames go to others; a peer using the old, predictable identity of a local replica is just
    another worker; two real workers started with the same --name both work. The output is exact."""
    import json

    import zmq

    output = tmp_path / "hoarded.mkv"
    pipeline, endpoint = listening_run(tmp_path, "inference:\n  replicas: 0\n  workers:\n    listen: tcp://127.0.0.1:0\n"
                                                 "    heartbeat_interval_s: 0.2\n    heartbeat_timeout_s: 1.0\n"
                                                 "    lease_timeout_s: 2.0\n", slow_model, output)
    context = zmq.Context()
    hoarder = context.socket(zmq.DEALER)
    hoarder.setsockopt(zmq.IDENTITY, b"inference-0.1")  # what a local replica's identity used to be
    hoarder.setsockopt(zmq.LINGER, 0)
    WorkerKeys.load(keys_dir()).apply(hoarder)
    hoarder.connect(endpoint)
    hoarder.send_multipart([b"ready", json.dumps({"credit": 8, "worker": "hoarder", "host": "h", "pid": 1}).encode()])
    pipeline.wait_for(r"inference worker hoarder joined from h")
    taken, stop = 0, time.monotonic() + 30
    twins = []
    try:
        while time.monotonic() < stop:
            if hoarder.poll(200):
                kind, *_ = hoarder.recv_multipart()
                taken += kind == b"work"
            hoarder.send_multipart([b"heartbeat", b"{}"])
            if taken and not twins:  # it holds frames: now the real workers come
                twins = [BackgroundCli("worker", "--stage", "inference", "--connect", endpoint, "--model", slow_model,
                                       "--name", "twin", "--credit", "4", "--threads", "1", "--wait", "30")
                         for _ in range(2)]
            if any("held frame" in line for line in pipeline.lines):
                break
        lost = pipeline.wait_for(r"inference worker hoarder lost \(held frame \d+ for more than 2 s\); "
                                 r"(\d+) frames? it held sent to other workers")
        assert int(lost.group(1)) == taken > 0
        assert pipeline.finish(180) == 0, pipeline.lines
    finally:
        context.destroy(linger=0)
    assert sum("inference worker twin joined" in line for line in pipeline.lines) == 2, pipeline.lines
    for twin in twins:
        assert twin.finish(30) == 0, twin.lines
    assert decoded_frames(output) == undisturbed
