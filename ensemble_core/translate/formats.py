"""Every format `ensemble translate` reads and writes, and telling them apart.

A file is read into a JobSpec (with what it could not carry) and a JobSpec written out (with what
the target could not carry). Without `--from`, a script is known by its directives (`#SBATCH`,
`#PBS`, `#BSUB`, `# flux:`) and a YAML or JSON document by its keys.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import yaml
from pydantic import ValidationError

from ensemble_core.errors import ConfigError
from ensemble_core.rules.yamlfile import read_text
from ensemble_core.spec import JobSpec
from ensemble_core.translate import FORMATS, Translation, documents
from ensemble_core.translate.flux import from_flux, to_flux
from ensemble_core.translate.flux_batch import from_flux_batch, to_flux_batch
from ensemble_core.translate.kubernetes import from_kubernetes, to_kubernetes
from ensemble_core.translate.lsf import from_lsf, to_lsf
from ensemble_core.translate.pbs import from_pbs, to_pbs
from ensemble_core.translate.slurm import from_slurm, to_slurm

__all__ = ["FORMATS", "read", "read_file", "write"]
#: Batch scripts, and the directive that tells each apart.
SCRIPTS = {
    "slurm": re.compile(r"^#SBATCH(\s|$)", re.MULTILINE),
    "pbs": re.compile(r"^\s*#PBS(\s|$)", re.MULTILINE),
    "lsf": re.compile(r"^\s*#BSUB(\s|$)", re.MULTILINE),
    "flux-batch": re.compile(r"^[^\w\n]*#[^\w\n]*(flux|FLUX):", re.MULTILINE),
}
_SCRIPT_READERS: dict[str, Callable[[str, str], Translation]] = {
    "slurm": from_slurm,
    "pbs": from_pbs,
    "lsf": from_lsf,
    "flux-batch": from_flux_batch,
}
#: The image a Kubernetes Job names when none was given; `kubectl apply` refuses it.
IMAGE_PLACEHOLDER = "IMAGE-NOT-SET"


def read_file(path: str) -> str:
    """The text of `path`, or a ConfigError saying why it cannot be read (the rules files'
    reader: a FIFO, a directory, a huge or non-UTF-8 file is refused in one line)."""
    return read_text(path)


def detect(text: str, source: str) -> str:
    """The format of `text`, or a ConfigError saying why it cannot be told."""
    found = {}
    for name, directive in SCRIPTS.items():
        match = directive.search(text)
        if match:
            found[name] = text.count("\n", 0, match.start()) + 1
    if len(found) > 1:
        seen = ", ".join(f"{name} on line {line}" for name, line in found.items())
        first = min(found.values())
        raise ConfigError(
            f"{source}:{first}: directives of several schedulers ({seen}): pass --from FORMAT"
        )
    if found:
        return next(iter(found))
    if text.startswith("#!"):
        raise ConfigError(
            f"{source}:1: a script with no #SBATCH, #PBS, #BSUB or '# flux:' directives: "
            "pass --from slurm, pbs, lsf or flux-batch"
        )
    nodes = documents.compose(text, source)
    keys = documents.keys(nodes[0]) if len(nodes) >= 1 else {}
    if any(documents.keys(node).get("kind") == "Job" for node in nodes):
        return "kubernetes"
    if len(nodes) == 1 and "version" in keys and "resources" in keys:
        return "flux"
    if len(nodes) == 1 and "command" in keys:
        return "jobspec"
    raise ConfigError(
        f"{source}:1: cannot tell the format: not a batch script with directives, and not a "
        "JobSpec (a mapping with `command`), a Flux jobspec (`version`, `resources`) or a "
        f"Kubernetes Job (`kind: Job`); pass --from ({', '.join(FORMATS)})"
    )


def read(text: str, source: str, format_name: str | None = None) -> Translation:
    """The JobSpec in `text` (of `format_name`, else detected) and what it could not carry."""
    name = format_name or detect(text, source)
    if name in _SCRIPT_READERS:
        return _SCRIPT_READERS[name](text, source)
    if name == "kubernetes":
        return from_kubernetes(text, source)
    data = _json(text)
    if data is None:
        nodes = documents.compose(text, source)
        data = documents.data(nodes[0]) if len(nodes) == 1 else None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}:1: expected one mapping: a {_NAMES[name]}")
    if name == "flux":
        try:
            return Translation(document=from_flux(data))
        except (KeyError, TypeError, ValueError, IndexError) as error:
            problem = error if isinstance(error, ValueError) else f"{error!r} is missing or wrong"
            raise ConfigError(f"{source}:1: not a valid Flux jobspec v1 ({problem})") from None
    try:
        return Translation(document=JobSpec.model_validate(data))
    except ValidationError as error:
        location, what = documents.problem(error)
        raise ConfigError(
            f"{source}:{_line(text, source, location)}: not a valid JobSpec ({what})"
        ) from None


def _line(text: str, source: str, path: list[Any]) -> int:
    """The line of `path` in a document that parsed (as JSON, YAML may still refuse it)."""
    try:
        return documents.line(documents.compose(text, source)[0], path)
    except ConfigError:
        return 1


_NAMES = {"jobspec": "JobSpec", "flux": "Flux jobspec v1"}


def _json(text: str) -> Any:
    """JSON text as JSON reads it: YAML would split an escaped character beyond U+FFFF in two."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def write(
    spec: JobSpec,
    format_name: str,
    *,
    image: str | None = None,
    namespace: str = "default",
    ensemble_id: str = "ensemble",
) -> Translation:
    """`spec` as `format_name` text, and what that format could not carry.

    Raises ValueError for a job Flux cannot shape (more nodes than tasks).
    """
    if format_name == "jobspec":
        return Translation(document=_yaml(spec.model_dump(exclude_defaults=True)))
    if format_name == "flux":
        translation = to_flux(spec)
        return Translation(
            json.dumps(translation.document, indent=2, ensure_ascii=False) + "\n", translation.lost
        )
    if format_name == "kubernetes":
        translation = to_kubernetes(
            spec, image=image or IMAGE_PLACEHOLDER, namespace=namespace, ensemble_id=ensemble_id
        )
        lost = list(translation.lost)
        if not image:
            lost.insert(0, f"image (none given: pass --image; the Job names {IMAGE_PLACEHOLDER})")
        return Translation(_yaml(translation.document), lost)
    writers = {"slurm": to_slurm, "pbs": to_pbs, "lsf": to_lsf, "flux-batch": to_flux_batch}
    return writers[format_name](spec)


def _yaml(document: Any) -> str:
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
