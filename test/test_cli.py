"""The ``lyra`` command: every option documented, expected failures in one line with exit 2.

Bad input (a missing file, a YAML syntax error, a :class:`LyraError`) must end with one line,
``lyra COMMAND: error: MESSAGE``, and exit status 2; real bugs keep their traceback.
"""

from __future__ import annotations

import argparse
import importlib.metadata
from types import SimpleNamespace
from unittest import mock

import pytest

from lyra_core import __version__, cli
from lyra_core.utils.errors import CheckpointError


class ParserCapturedError(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__(parser.prog)
        self.parser = parser


def command_parser(command: str) -> argparse.ArgumentParser:
    """The argparse parser of ``lyra COMMAND``: the module's ``build_parser()``, else the parser
    its ``main`` builds (caught at ``parse_args``, before the command does anything)."""
    module = cli.command_module(command)
    if hasattr(module, "build_parser"):
        return module.build_parser()

    def capture(self, *args, **kwargs):
        raise ParserCapturedError(self)

    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", capture),
        pytest.raises(ParserCapturedError) as caught,
    ):
        module.main(["--help"])
    return caught.value.parser


def stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def assert_one_error_line(capsys, command: str, needle: str) -> None:
    lines = stderr_lines(capsys)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"lyra {command}: error: "), lines[0]
    assert needle in lines[0], lines[0]


MODE_PARSERS = {
    "generate --dynamic": "lyra_core.data.dynamic",
    "eval --dynamic": "lyra_core.evaluation.dynamic",
}
"""Commands whose ``--dynamic`` hands the rest to another module's parser."""


@pytest.mark.parametrize("command", [*cli.COMMANDS, *MODE_PARSERS])
def test_every_option_has_help(command):
    if command in MODE_PARSERS:
        parser = importlib.import_module(MODE_PARSERS[command]).build_parser()
    else:
        parser = command_parser(command)
    assert parser.prog == f"lyra {command}"
    assert parser.description, f"lyra {command} has no description"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        assert action.help and action.help.strip(), f"lyra {command} {name} has no help text"


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_command_help_exits_0_with_usage(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: lyra {command} ")


def test_top_level_usage_version_and_unknown_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: lyra ")
    assert all(command in out for command in cli.COMMANDS)
    assert cli.main([]) == 2
    assert "usage: lyra " in capsys.readouterr().err
    assert cli.main(["--version"]) == 0
    installed = importlib.metadata.version("lyra-world")
    assert capsys.readouterr().out.strip() == f"lyra {installed}"
    assert installed == __version__, "stale install: pip install --no-deps -e ."
    assert cli.main(["fly"]) == 2
    lines = stderr_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("lyra: error: unknown command 'fly'")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["eval", "--data", "/nonexistent"], "/nonexistent"),
        (["train", "--config", "/nonexistent.yaml"], "/nonexistent.yaml"),
        (["train-vae", "--config", "/nonexistent.yaml"], "/nonexistent.yaml"),
        (["export", "--run", "/nonexistent", "--out", "{tmp}/student"], "/nonexistent"),
    ],
)
def test_missing_input_is_one_line_and_exit_2(argv, needle, tmp_path, capsys):
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in argv]
    assert cli.main(argv) == 2
    assert_one_error_line(capsys, argv[0], needle)
    assert not (tmp_path / "student").exists()


def test_yaml_syntax_error_is_one_line(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("steps: [1, 2\nlr: 0.1\n")
    assert cli.main(["train", "--config", str(config)]) == 2
    assert_one_error_line(capsys, "train", "broken.yaml")


def test_demo_output_that_is_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    assert cli.main(["demo", "--out", str(blocker), "--device", "cpu"]) == 2
    assert_one_error_line(capsys, "demo", str(blocker))


def fake_command(monkeypatch, error: BaseException) -> None:
    def main(argv):
        raise error

    monkeypatch.setattr(cli, "command_module", lambda command: SimpleNamespace(main=main))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (CheckpointError("ckpt: no decoder/\n  (was it exported?)"), "ckpt: no decoder/ (was it"),
        (FileNotFoundError(2, "No such file or directory", "/x/y"), "No such file or directory"),
        (PermissionError(13, "Permission denied", "secret/z"), "Permission denied: secret/z"),
        (IsADirectoryError(21, "Is a directory", "/tmp"), "Is a directory: /tmp"),
        (NotADirectoryError(20, "Not a directory", "/etc/hosts/x"), "Not a directory"),
    ],
)
def test_dispatcher_turns_input_errors_into_one_line(monkeypatch, capsys, error, expected):
    fake_command(monkeypatch, error)
    assert cli.main(["eval"]) == 2
    assert_one_error_line(capsys, "eval", expected)


def test_dispatcher_reports_yaml_errors_in_one_line(monkeypatch, capsys):
    import yaml

    try:
        yaml.safe_load("a: [1, 2\nb: 3\n")
    except yaml.YAMLError as err:
        fake_command(monkeypatch, err)
    assert cli.main(["train"]) == 2
    assert_one_error_line(capsys, "train", "line 2")


def test_real_bugs_keep_their_traceback(monkeypatch):
    fake_command(monkeypatch, RuntimeError("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["train"])
    fake_command(monkeypatch, KeyError("missing"))
    with pytest.raises(KeyError):
        cli.main(["train"])
