"""Pipeline configuration: the shipped YAML is the defaults, and bad files are named precisely."""
from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import ALLOWED_CPUS, DEFAULT_CONFIG_PATH, MAX_THREADS, ConfigError, PipelineConfig, load_config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def test_default_yaml_documents_exactly_the_built_in_defaults():
    assert load_config(DEFAULT_CONFIG_PATH) == PipelineConfig()


def test_values_from_yaml_reach_the_dataclasses(tmp_path):
    cfg = load_config(write(tmp_path, "inference:\n  batch_size: 4\n  provider: cuda\nencoder:\n  crf: 23\n"))
    assert (cfg.inference.batch_size, cfg.inference.provider, cfg.encoder.crf) == (4, "cuda", 23)
    assert cfg.preprocessor == PipelineConfig().preprocessor


def test_an_empty_file_means_defaults(tmp_path):
    assert load_config(write(tmp_path, "# nothing\n")) == PipelineConfig()


@pytest.mark.parametrize("text, message", [
    ("inference:\n  batch_sise: 4\n",
     ":2: inference.batch_sise: unknown key (expected one of: replicas, queue_depth, batch_size,"),
    ("inference:\n  batch_size: eight\n", ":2: inference.batch_size: expected an integer in 1..1024 or auto, found 'eight'"),
    ("encoder:\n  crf: 60\n", ":2: encoder.crf: expected an integer in 0..51, found '60'"),
    ("inference:\n  provider: tpu\n", ":2: inference.provider: expected one of cpu, cuda, npu, openvino, found 'tpu'"),
    ("transport: ipc\ndecoder: 3\n", ":2: decoder: expected a mapping of keys"),
    ("decoder:\n  cpu_affinity: [0, x]\n", ":2: decoder.cpu_affinity: expected an integer >= 0, found 'x'"),
    ("inference:\n  replicas: true\n", f":2: inference.replicas: expected an integer in 0..{MAX_THREADS} or auto, found 'true'"),
    ("encoder:\n  crf: [1\n", ": malformed YAML"),
    ("encoder:\n  temporal:\n    strength: 1.5\n",
     ":3: encoder.temporal.strength: expected a number in 0.0..0.99, found '1.5'"),
    ("colour:\n  saturation: 2.5\n", ":2: colour.saturation: expected a number in 0.0..2.0, found '2.5'"),
    ("inference:\n  intra_op_threads: 2000\n",
     f":2: inference.intra_op_threads: expected an integer in 0..{MAX_THREADS} or auto, found '2000'"),
    ("encoder:\n  temporal:\n    strength: .nan\n",
     ":3: encoder.temporal.strength: expected a number in 0.0..0.99, found '.nan'"),
    ("inference:\n  batch_timeout_ms: .inf\n",
     ":2: inference.batch_timeout_ms: expected a number in 0..60000, found '.inf'"),
    ("inference:\n  queue_depth: 1000000\n", ":2: inference.queue_depth: expected an integer in 1..10000, found '1000000'"),
    (f"decoder:\n  cpu_affinity: [{max(ALLOWED_CPUS) + 1}]\n",
     ":2: decoder.cpu_affinity: expected a CPU this process may run on"),
    ("encoder:\n  preset: " + "x" * 300 + "\n", ": encoder.preset: expected one of ultrafast"),
    ("encoder:\n  crf: 20\n  crf: 22\n", ":3: encoder.crf: duplicate key (first on line 2)"),
    ("[" * 5000 + "]" * 5000 + "\n", ": malformed YAML: nested too deeply"),
    ("colour:\n  upsampling: nearest\n", ":2: colour.upsampling: expected one of bilinear, guided, found 'nearest'"),
])
def test_bad_files_name_file_line_key_and_expectation(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(str(path))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match=r"^config file not found: .*nope\.yaml$"):
        load_config(tmp_path / "nope.yaml")


def test_long_values_are_cut_short_in_the_message(tmp_path):
    with pytest.raises(ConfigError) as error:
        load_config(write(tmp_path, "encoder:\n  preset: " + "x" * 300 + "\n"))
    assert str(error.value).endswith("found '" + "x" * 40 + "…'")


def test_every_problem_in_a_file_is_reported_at_once_a_line_each(tmp_path):
    path = write(tmp_path, "inference:\n  batch_size: 0\n  provider: tpu\n  nonsense: 1\n"
                           "encoder:\n  crf: 99\ntransport: pigeon\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).splitlines() == [
        f"{path}:2: inference.batch_size: expected an integer in 1..1024 or auto, found '0'",
        f"{path}:3: inference.provider: expected one of cpu, cuda, npu, openvino, found 'tpu'",
        f"{path}:4: inference.nonsense: unknown key (expected one of: replicas, queue_depth, batch_size, "
        "batch_timeout_ms, every_nth_frame, provider, precision, device_id, intra_op_threads, inter_op_threads, cpu_affinity, restart, workers)",
        f"{path}:6: encoder.crf: expected an integer in 0..51, found '99'",
        f"{path}:7: transport: expected one of ipc, tcp, found 'pigeon'",
    ]


def test_the_command_line_prints_each_problem_as_an_error_line(tmp_path):
    from tests.conftest import run_cli, shared_file

    config = write(tmp_path, "inference:\n  intra_op_threads: 2000\nencoder:\n  crf: -1\n")
    result = run_cli(shared_file("video", "chaplin.mp4"), "-o", tmp_path / "out.mp4", "--config", config)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: {config}:2: inference.intra_op_threads: expected an integer in 0..{MAX_THREADS} or auto, found '2000'",
        f"error: {config}:4: encoder.crf: expected an integer in 0..51, found '-1'"]
    assert not (tmp_path / "out.mp4").exists()


def test_an_ipc_listen_path_holding_a_file_is_refused_and_the_file_kept(tmp_path):
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    path = write(tmp_path, f"inference:\n  workers:\n    listen: ipc://{precious}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    value = f"ipc://{precious}"
    shown = value if len(value) <= 40 else value[:40] + "…"
    assert str(error.value) == (f"{path}:3: inference.workers.listen: expected a path that is free or a socket "
                                f"(something else is there, and binding would delete it), found '{shown}'")
    assert precious.read_text() == "keep me"
    free = tmp_path / "free.sock"
    assert load_config(write(tmp_path, f"inference:\n  workers:\n    listen: ipc://{free}\n")).inference.leased


def test_auto_is_the_default_for_replicas_threads_and_batch_and_a_number_overrides_it(tmp_path):
    from stream.config import PLAIN_CHOICES, auto_fields, with_choices

    defaults = PipelineConfig()
    assert auto_fields(defaults) == ["preprocessor.replicas", "inference.replicas", "inference.batch_size",
                                     "inference.intra_op_threads"]
    cfg = load_config(write(tmp_path, "inference:\n  replicas: 3\n  batch_size: auto\n"))
    assert cfg.inference.replicas == 3 and cfg.inference.batch_size == "auto"
    chosen = with_choices(cfg, {**PLAIN_CHOICES, "inference.replicas": 5, "inference.batch_size": 2})
    assert (chosen.inference.replicas, chosen.inference.batch_size, chosen.preprocessor.replicas) == (3, 2, 1)
    assert auto_fields(chosen) == []
