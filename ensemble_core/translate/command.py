"""`ensemble translate [--from FORMAT] --to FORMAT FILE`: a job in another queue's format.

FILE is a batch script (Slurm, PBS, LSF, Flux), a JobSpec, a Flux jobspec or a Kubernetes Job;
without --from its format is told from its directives or keys. The translation goes to stdout;
stderr lists what reading could not carry into the JobSpec and what the target could not take.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ensemble_core.errors import ConfigError
from ensemble_core.translate import FORMATS


@dataclass
class Result:
    """The translated text, and what was lost reading the file and writing the target."""

    text: str
    lost_reading: list[str]
    lost_writing: list[str]


def translate_file(
    path: str,
    target: str,
    *,
    source_format: str | None = None,
    image: str | None = None,
    namespace: str = "default",
) -> Result:
    """What `ensemble translate` prints for `path`."""
    from ensemble_core.translate import formats  # the readers and writers: only when translating

    for name in (source_format, target):
        if name is not None and name not in FORMATS:
            raise ConfigError(f"unknown format '{name}': choose one of {', '.join(FORMATS)}")
    reading = formats.read(formats.read_file(path), path, source_format)
    try:
        writing = formats.write(
            reading.document, target, image=image, namespace=namespace, ensemble_id=Path(path).stem
        )
    except ValueError as error:
        raise ConfigError(f"{path}: cannot be written as {target}: {error}") from None
    return Result(writing.document, reading.lost, writing.lost)


def add_translate_parser(commands: Any) -> None:
    """The `translate` subcommand, added to the CLI's subparsers."""
    translate = commands.add_parser(
        "translate",
        help="a job in another queue's format: Slurm, PBS, LSF, Flux, Kubernetes, JobSpec",
        description=(
            "Translate FILE (a batch script, JobSpec, Flux jobspec or Kubernetes Job) to "
            "another format. What cannot be carried is listed on stderr."
        ),
    )
    translate.add_argument("file", metavar="FILE", help="the job to translate")
    translate.add_argument(
        "--from",
        dest="source_format",
        choices=FORMATS,
        help="FILE's format (default: told from FILE)",
    )
    translate.add_argument("--to", required=True, choices=FORMATS, help="the format to write")
    translate.add_argument("--image", help="kubernetes: the container image")
    translate.add_argument("--namespace", default="default", help="kubernetes: the namespace")
    translate.set_defaults(command=run_translate)


def run_translate(args: argparse.Namespace) -> int:
    """Print the translation on stdout and what could not be carried on stderr."""
    result = translate_file(
        args.file,
        args.to,
        source_format=args.source_format,
        image=args.image,
        namespace=args.namespace,
    )
    print(result.text, end="")
    for item in result.lost_reading:
        print(f"not carried from {args.file}: {item}", file=sys.stderr)
    for item in result.lost_writing:
        print(f"not carried to {args.to}: {item}", file=sys.stderr)
    return 0
