"""Where the package's YAML configuration lives, and how console scripts pass it to ROS."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from lyra_core.utils.errors import LyraError

PACKAGE = "lyra_ros"


class ConfigError(LyraError, ValueError):
    """A bad ``--config`` argument: no file named, or the file does not exist."""


def config_path(name: str) -> Path:
    """Path of ``config/<name>``: the installed share folder, else the source tree.

    Raises:
        FileNotFoundError: neither location has the file.
    """
    candidates = []
    with contextlib.suppress(ImportError, LookupError, OSError):  # no ament index or no package
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory(PACKAGE)) / "config" / name)
    candidates.append(Path(__file__).resolve().parents[2] / "config" / name)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"config/{name} not found (looked in {', '.join(map(str, candidates))})"
    )


FASTDDS_PROFILE = "fastdds_large_data.xml"


def use_large_data_transport(env: dict[str, str] | None = None) -> str | None:
    """Point Fast DDS at config/fastdds_large_data.xml unless a profile is already chosen.

    Must run before ``rclpy.init`` (the DDS participant reads it once). Only Fast DDS (the
    default RMW) reads the variable. Returns the profile path set, or None if left alone.
    """
    env = os.environ if env is None else env
    if env.get("FASTDDS_DEFAULT_PROFILES_FILE") or env.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        return None
    try:
        path = str(config_path(FASTDDS_PROFILE))
    except FileNotFoundError:
        return None
    env["FASTDDS_DEFAULT_PROFILES_FILE"] = path
    return path


def ros_args_with_config(argv: list[str], default: str = "world.yaml") -> list[str]:
    """Turn ``[prog, --config FILE, ...]`` into rclpy arguments with ``--params-file FILE``.

    Without ``--config`` the package's ``config/<default>`` is used; ``--config none`` uses no
    file. Other arguments (``--ros-args ...``) pass through unchanged, after the file, so their
    ``-p name:=value`` overrides win over the file's values.

    Raises:
        ConfigError: ``--config`` without a file, or a file that does not exist.
    """
    args = list(argv)
    config: str | None = None
    if "--config" in args:
        index = args.index("--config")
        if index + 1 >= len(args):
            raise ConfigError("--config needs a file (or 'none')")
        config = args[index + 1]
        del args[index : index + 2]
    if config is None:
        config = str(config_path(default))
    if config == "none":
        return args
    if not Path(config).is_file():
        raise ConfigError(f"config file not found: {config}")
    # The file comes first so that parameters given on the command line (-p) override it.
    return [*args[:1], "--ros-args", "--params-file", config, "--", *args[1:]]
