"""``colorize profile``: the real pipeline traced, the Perfetto trace, the per-stage table and the advice."""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from stream.config import PLAIN_CHOICES, load_config, with_choices
from stream.observe.profile import Profile, StageFigures, advise
from tests.conftest import run_cli, shared_file, video_facts

STAGES = ("decoder", "preprocessor", "inference", "encoder")
ADVICE = re.compile(r"^advice: (decoder|preprocessor|inference|encoder) is the bottleneck \(busy \d+% .*\); \S")


def table_row(stdout: str, stage: str, replicas: int, frames: int) -> re.Match | None:
    return re.search(rf"^{stage} +{replicas} +{frames} +[\d.]+ +[\d.]+ +\d+% +\d+% +\d+% +[\d.]+$", stdout, re.M)


def slices_by_stage(events: list[dict]) -> dict[str, Counter]:
    """stage → how many ``frame N`` slices each seq got, over all of the stage's processes."""
    found: dict[str, Counter] = {}
    for event in events:
        if event["ph"] == "X" and event["name"].startswith("frame "):
            assert event["name"] == f"frame {event['args']['seq']}"
            found.setdefault(event["cat"], Counter())[event["args"]["seq"]] += 1
    return found


def test_profile_traces_one_slice_per_frame_per_stage_process_and_names_the_bottleneck(tmp_path, ab_model):
    source = shared_file("video", "test_video.mp4")
    frames = video_facts(source).frames
    config, trace, run_tmp = tmp_path / "two.yaml", tmp_path / "run.trace.json", tmp_path / "tmp"
    config.write_text("preprocessor:\n  replicas: 2\ninference:\n  batch_size: 4\n  every_nth_frame: 1\n")
    run_tmp.mkdir()
    result = run_cli("profile", source, "--model", ab_model, "--config", config, "--trace", trace, tmpdir=run_tmp)
    assert result.returncode == 0, result.stderr

    events = json.loads(trace.read_text())["traceEvents"]
    names = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert sorted(names.values()) == sorted(["decoder", "preprocessor #1", "preprocessor #2", "inference",
                                             "encoder", "queues"])
    slices = slices_by_stage(events)
    for stage in STAGES:
        assert slices[stage] == Counter(range(frames)), f"{stage}: not exactly one slice per frame"
    per_replica = Counter(names[e["pid"]] for e in events if e["ph"] == "X" and e["cat"] == "preprocessor")
    assert set(per_replica) == {"preprocessor #1", "preprocessor #2"} and sum(per_replica.values()) == frames
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in events if e["ph"] == "X")
    assert any(e["args"].get("batch") == 4 for e in events if e["ph"] == "X" and e["cat"] == "inference")
    for link in ("frames", "tensors", "colour"):
        depths = [e["args"]["queued"] for e in events if e["ph"] == "C" and e["name"] == link]
        assert len(depths) == 2 * frames + 1, link  # the start, then one change per send and per take-off
        assert min(depths) == 0 and max(depths) >= 1 and depths[-1] == 0, link

    for stage in STAGES:
        assert table_row(result.stdout, stage, 2 if stage == "preprocessor" else 1, frames), result.stdout
    assert ADVICE.match(result.stdout.splitlines()[-1]), result.stdout
    assert [p.name for p in run_tmp.iterdir() if p.name.startswith("colorize-")] == [], "temporary output left"


def test_profile_frames_limits_the_run_and_output_keeps_the_video(tmp_path, ab_model):
    source = shared_file("video", "chaplin.mp4")
    output, trace = tmp_path / "first 30.mp4", tmp_path / "trace.json"
    result = run_cli("profile", source, "-o", output, "--model", ab_model, "--trace", trace, "--frames", "30")
    assert result.returncode == 0, result.stderr
    assert video_facts(output).frames == 30
    slices = slices_by_stage(json.loads(trace.read_text())["traceEvents"])
    assert all(slices[stage] == Counter(range(30)) for stage in STAGES)
    assert all(table_row(result.stdout, stage, 1, 30) for stage in STAGES), result.stdout


@pytest.mark.parametrize("args, line", [
    (("missing.mp4", "--trace", "{trace}"), "error: input not found: missing.mp4"),
    (("{source}", "--frames", "0", "--trace", "{trace}"), "error: --frames must be 1 or more, got 0"),
    (("{source}", "--trace", "no/such/folder/t.json"), "error: trace directory does not exist: no/such/folder"),
    (("{source}", "-o", "{kept}", "--trace", "{trace}"), "error: output exists: {kept} (-y replaces it)"),
])
def test_bad_input_is_one_error_line_exit_2_and_nothing_written(tmp_path, args, line):
    source, trace, kept = shared_file("video", "test_video.mp4"), tmp_path / "t.json", tmp_path / "earlier.mp4"
    kept.write_bytes(b"an earlier recording")
    result = run_cli("profile", *(arg.format(source=source, trace=trace, kept=kept) for arg in args))
    assert (result.returncode, result.stderr.strip()) == (2, line.format(kept=kept))
    assert not trace.exists() and kept.read_bytes() == b"an earlier recording"


def test_tune_keeps_an_existing_yaml_unless_y(tmp_path):
    tuned = tmp_path / "mine.yaml"
    tuned.write_text("encoder:\n  crf: 20\n")
    result = run_cli("tune", shared_file("video", "test_video.mp4"), "-o", tuned)
    assert (result.returncode, result.stderr) == (2, f"error: output exists: {tuned} (-y replaces it)\n")
    assert tuned.read_text() == "encoder:\n  crf: 20\n"


def figures(stage: str, busy: float, replicas: int = 1, cores: float = 0.2) -> StageFigures:
    return StageFigures(stage, replicas, 100, 10.0, 12.0, busy, 1 - busy, 0.0, cores)


def machine(bottleneck: str, cores: int, idle_cores: float) -> Profile:
    stages = [figures(stage, 0.9 if stage == bottleneck else 0.3, cores=0.9 if stage == bottleneck else 0.1)
              for stage in STAGES]
    return Profile(stages, frames=100, window_s=4.0, cores=cores, idle_cores=idle_cores)


def config(tmp_path: Path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return with_choices(load_config(path), PLAIN_CHOICES)


def test_advice_follows_the_bottleneck_and_the_free_cores(tmp_path, ab_model):
    defaults = with_choices(load_config(None), PLAIN_CHOICES)  # auto resolved as where nothing was measured
    encoder = advise(machine("encoder", cores=2, idle_cores=0.0), defaults, ab_model)
    assert (encoder.stage, encoder.change.split(":")[0]) == ("encoder", "a faster x264 preset")
    assert "encoder.preset: superfast (now veryfast" in encoder.change
    spare = advise(machine("inference", cores=8, idle_cores=6.0), defaults, ab_model)
    assert spare.change.startswith("more replicas: inference.replicas: 2")
    busy_cpu = advise(machine("inference", cores=2, idle_cores=0.1), defaults, ab_model)
    assert busy_cpu.change.startswith("an INT8 model: colorize quantize")
    gpu = advise(machine("inference", cores=2, idle_cores=0.1), config(tmp_path, "inference:\n  provider: cuda\n"),
                 ab_model)
    assert gpu.change.startswith("a bigger batch: inference.batch_size: 2 (now 1")
    crowded = advise(machine("preprocessor", cores=4, idle_cores=0.3), defaults, ab_model)
    assert crowded.change.startswith("no core was free") and crowded.line().startswith(
        "advice: preprocessor is the bottleneck (busy 90% of the time, 10.0 ms a frame)")
