"""The ``lyra`` command: one entry point for the core's tools.

    lyra generate --out data/procedural --split train --num-scenes 300   # procedural data
    lyra train-vae --config config/vae_tiny.yaml                          # the video VAE
    lyra train --config config/train_tiny.yaml                            # the student
    lyra export --run outputs/train_tiny --vae outputs/vae_tiny/vae --out FOLDER
    lyra eval --student hybrid=FOLDER --student all_transformer=FOLDER     # held-out metrics
    lyra demo                                                             # the core demo

``lyra COMMAND --help`` describes each command's options.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "generate": ("lyra_core.data.procedural", "generate procedural multi-trajectory scenes"),
    "train-vae": ("lyra_core.training.train_vae", "train the small video VAE"),
    "train": (
        "lyra_core.training.train_student",
        "self-distillation training of the student decoder",
    ),
    "export": ("lyra_core.training.export", "assemble a student checkpoint from a training run"),
    "eval": (
        "lyra_core.evaluation.evaluate",
        "held-out metrics of students vs the 3D-cache baseline",
    ),
    "demo": ("lyra_core.cli.demo", "the core demo (no ROS)"),
}


def usage() -> str:
    lines = ["usage: lyra COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``lyra COMMAND ...`` to the command module's ``main``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"lyra: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
