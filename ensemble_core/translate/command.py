"""`ensemble translate --to TARGET SPEC`: show what a job becomes on each queue.

SPEC is a JobSpec (YAML or JSON) or a Flux jobspec v1 (JSON or YAML, told apart by its `version`
and `resources` keys). The CLI prints the text and, on stderr, what the target could not carry.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ensemble_core.errors import ConfigError
from ensemble_core.spec import JobSpec
from ensemble_core.translate import Translation
from ensemble_core.translate.flux import from_flux, to_flux
from ensemble_core.translate.kubernetes import to_kubernetes
from ensemble_core.translate.slurm import to_slurm

TARGETS = ("flux", "kubernetes", "slurm")
#: The image a Kubernetes Job names when none was given; `kubectl apply` refuses it.
IMAGE_PLACEHOLDER = "IMAGE-NOT-SET"


def load_spec(path: str) -> JobSpec:
    """The JobSpec in a file, or a ConfigError naming the file and what is wrong."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read it ({error.strerror or error})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML or JSON ({_yaml_problem(error)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JobSpec or a Flux jobspec (a mapping)")
    try:
        if "version" in data and "resources" in data:
            return from_flux(data)
        return JobSpec.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in error.errors()
        )
        raise ConfigError(f"{path}: not a valid JobSpec ({problems})") from None
    except (KeyError, TypeError, ValueError) as error:
        raise ConfigError(f"{path}: not a valid Flux jobspec v1 ({error})") from None


def translate_command(
    path: str, target: str, *, image: str | None = None, namespace: str = "default"
) -> tuple[str, list[str]]:
    """The text `ensemble translate` prints for `path` on `target`, and what was lost."""
    if target not in TARGETS:
        raise ConfigError(f"unknown target '{target}': choose one of {', '.join(TARGETS)}")
    spec = load_spec(path)
    translation: Translation
    if target == "flux":
        try:
            translation = to_flux(spec)
        except ValueError as error:
            raise ConfigError(f"{path}: {error}") from None
        return json.dumps(translation.document, indent=2) + "\n", translation.lost
    if target == "slurm":
        translation = to_slurm(spec)
        return translation.document, translation.lost
    translation = to_kubernetes(
        spec,
        image=image or IMAGE_PLACEHOLDER,
        namespace=namespace,
        ensemble_id=Path(path).stem,
    )
    lost = list(translation.lost)
    if not image:
        lost.insert(0, f"image (none given: pass --image; the Job names {IMAGE_PLACEHOLDER})")
    return _yaml(translation.document), lost


def add_translate_parser(commands: Any) -> None:
    """The `translate` subcommand, added to the CLI's subparsers."""
    translate = commands.add_parser(
        "translate", help="print a job as Flux jobspec, Kubernetes Job or Slurm script"
    )
    translate.add_argument("spec", help="a JobSpec (YAML/JSON) or a Flux jobspec v1 file")
    translate.add_argument("--to", required=True, choices=TARGETS, help="the target format")
    translate.add_argument("--image", help="kubernetes: the container image")
    translate.add_argument("--namespace", default="default", help="kubernetes: the namespace")
    translate.set_defaults(command=run_translate)


def run_translate(args: argparse.Namespace) -> int:
    """Print the translation on stdout and what the target could not carry on stderr."""
    text, lost = translate_command(args.spec, args.to, image=args.image, namespace=args.namespace)
    print(text, end="")
    for item in lost:
        print(f"not carried to {args.to}: {item}", file=sys.stderr)
    return 0


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: where, and what."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def _yaml(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
