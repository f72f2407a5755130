"""Each default lives in one place: the CLI options say what the configuration dataclasses say."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import click
import pytest

from pipeline.cli import cli as pipeline_cli
from pipeline.compare import CompareConfig
from pipeline.train import TrainConfig
from serve.cli import cli as serve_cli
from serve.server import ServerConfig

# option name -> (dataclass field, how the option's value becomes the field's)
RENAMED: dict[str, tuple[str | None, Callable[[Any], Any] | None]] = {
    "lrs": ("lrs", tuple),
    "max_body_mb": ("max_body_bytes", lambda v: int(v * 1024 * 1024)), "model_path": (None, None),
    "data_dir": (None, None),
    # chosen by the command from --host (loopback or not), not a fixed default
    "allowed_hosts": (None, None)}


def defaults_checked(command: click.Command, config: type) -> list[str]:
    fields = {f.name: f for f in dataclasses.fields(config)}
    context = click.Context(command)
    checked = []
    for param in command.params:
        name, convert = RENAMED.get(param.name, (param.name, None))
        default = param.get_default(context)
        if name not in fields or not isinstance(default, (bool, int, float, str, tuple, list)):
            continue  # no default of its own (None, or click's "unset" for a repeatable option)
        field = fields[name]
        factory = field.default_factory
        expected = field.default if factory is dataclasses.MISSING else factory()
        value = convert(default) if convert else default
        assert value == expected, \
            f"--{param.name.replace('_', '-')} defaults to {value!r}, {config.__name__}.{name} to {expected!r}"
        checked.append(name)
    return checked


@pytest.mark.parametrize("command, config, at_least", [
    (pipeline_cli.commands["train"], TrainConfig, {"epochs", "lr", "batch_size", "stroke_digits", "bn", "precision"}),
    (pipeline_cli.commands["compare"], CompareConfig, {"epochs", "seeds", "lrs", "optimizer", "mistakes"}),
    (serve_cli.commands["http"], ServerConfig, {"max_batch", "max_delay_ms", "max_queue", "max_body_bytes",
                                                "request_timeout_s", "access_log", "model_name",
                                                "allow_model_control"}),
])
def test_cli_defaults_are_the_configuration_defaults(command: click.Command, config: type, at_least: set[str]) -> None:
    assert at_least <= set(defaults_checked(command, config))
