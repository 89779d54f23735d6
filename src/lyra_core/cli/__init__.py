"""The ``lyra`` command: one entry point for the core's tools.

    lyra generate --out data/procedural --split train --num-scenes 300   # procedural data
    lyra train-vae --config config/vae_tiny.yaml                          # the video VAE
    lyra train --config config/train_tiny.yaml                            # the student
    lyra export --run outputs/train_tiny --out FOLDER                     # a student checkpoint
    lyra eval --student hybrid=FOLDER --student all_transformer=FOLDER     # held-out metrics
    lyra fit DATA --out RUN                                               # a world from a capture
    lyra world --image IMG --depth D --intrinsics fx,fy,cx,cy --out W.ply  # one frame to a world
    lyra import-teacher model.pt --out FOLDER                             # GEN3C's transformer
    lyra teacher encode-text --t5 FOLDER --out FILE                       # prompt embeddings
    lyra generate --teacher gen3c --images DIR --out DATA                  # teacher-made data
    lyra eval-views --format re10k DATA --student FOLDER --out DIR         # benchmark protocol
    lyra demo                                                             # the core demo

``lyra COMMAND --help`` describes each command's options; ``python -m lyra_core.cli`` is the
same command. Bad input (a missing or unreadable file, a YAML syntax error, or any
:class:`~lyra_core.utils.errors.LyraError` such as an invalid config or checkpoint) ends with
one line on stderr, ``lyra COMMAND: error: MESSAGE``, and exit status 2, as argparse does for
bad options; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from types import ModuleType

from lyra_core.utils.errors import USAGE_ERROR, run_command

COMMANDS = {
    "generate": ("lyra_core.data.generator", "generate procedural multi-trajectory scenes"),
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
    "fit": ("lyra_core.training.fit", "fit a Gaussian world to a posed capture (3DGS)"),
    "world": ("lyra_core.cli.world", "one camera frame (image, depth) to a Gaussian world"),
    "demo": ("lyra_core.cli.demo", "the core demo (no ROS)"),
    "import-checkpoint": (
        "lyra_core.models.lyra1_checkpoint",
        "convert Lyra-1's released decoder (.pt) into a decoder folder",
    ),
    "import-teacher": (
        "lyra_core.models.gen3c_checkpoint",
        "convert GEN3C's released model.pt into a diffusers transformer folder",
    ),
    "teacher": ("lyra_core.cli.teacher", "teacher tools (encode-text: the constant T5 embeddings)"),
    "eval-views": (
        "lyra_core.evaluation.eval_views",
        "single-view protocol of RealEstate10K / DL3DV / transforms.json captures",
    ),
}
"""``lyra`` subcommand -> (module with ``main(argv) -> int``, one-line summary)."""


def usage() -> str:
    lines = [
        "usage: lyra [-h] [--version] COMMAND [options]",
        "",
        "Lyra core tools: data, training, export, evaluation and the demo.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<10} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "Run 'lyra COMMAND --help' for a command's options."]
    return "\n".join(lines)


def version() -> str:
    """The installed distribution's version (``lyra_core.__version__`` when it was installed)."""
    try:
        return importlib.metadata.version("lyra-world")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "(not installed)"


def command_module(command: str) -> ModuleType:
    """The module that implements ``lyra COMMAND`` (imported on demand: some are heavy)."""
    return importlib.import_module(COMMANDS[command][0])


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``lyra COMMAND ...`` to the command module's ``main``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(usage(), file=sys.stderr)
        return USAGE_ERROR
    if argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"lyra {version()}")
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        choices = ", ".join(COMMANDS)
        print(f"lyra: error: unknown command {command!r} (choose from {choices})", file=sys.stderr)
        return USAGE_ERROR
    module = command_module(command)
    try:
        return run_command(f"lyra {command}", lambda: module.main(rest))
    except KeyboardInterrupt:
        print(f"lyra {command}: interrupted", file=sys.stderr)
        return 130
