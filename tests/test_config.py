"""Pipeline configuration: the shipped YAML is the defaults, and bad files are named precisely."""
from __future__ import annotations

from pathlib import Path

import pytest

from stream.config import DEFAULT_CONFIG_PATH, ConfigError, PipelineConfig, load_config


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
    ("inference:\n  batch_size: eight\n", ":2: inference.batch_size: expected an integer >= 1, found 'eight'"),
    ("encoder:\n  crf: 60\n", ":2: encoder.crf: expected an integer in 0..51, found '60'"),
    ("inference:\n  provider: tpu\n", ":2: inference.provider: expected one of cpu, cuda, npu, openvino, found 'tpu'"),
    ("transport: ipc\ndecoder: 3\n", ":2: decoder: expected a mapping of keys"),
    ("decoder:\n  cpu_affinity: [0, x]\n", ":2: decoder.cpu_affinity: expected an integer >= 0, found 'x'"),
    ("inference:\n  replicas: true\n", ":2: inference.replicas: expected an integer >= 0, found 'true'"),
    ("encoder:\n  crf: [1\n", ": malformed YAML"),
    ("encoder:\n  temporal:\n    strength: 1.5\n",
     ":3: encoder.temporal.strength: expected a number in 0.0..0.99, found '1.5'"),
    ("colour:\n  saturation: 2.5\n", ":2: colour.saturation: expected a number in 0.0..2.0, found '2.5'"),
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
