"""JobSpec to and from what each queue reads: Flux jobspec v1 and batch scripts, Slurm, PBS and
LSF batch scripts, Kubernetes Jobs. One module per format, all meeting at `JobSpec`."""

from dataclasses import dataclass, field
from typing import Any

#: The formats, as `ensemble translate --from/--to` name them.
FORMATS = ("jobspec", "flux", "flux-batch", "slurm", "pbs", "lsf", "kubernetes")

#: Free attributes several formats carry, named as Flux names them where Flux has them.
QUEUE = "system.queue"  # Slurm partition, PBS and LSF queue, Flux queue
BANK = "system.bank"  # Slurm and PBS account, LSF project, Flux bank
DEPENDENCIES = "system.dependencies"  # RFC 26 entries: [{"scheme": "afterok", "value": "12"}]
ARRAY = "array"  # Slurm's index syntax: "0-15", "1-9:2%4", "1,3,5"
#: The command is a batch script's body run once for the whole job (it starts its own tasks,
#: with srun or mpiexec), not a program run once per task. Set only for jobs of several tasks.
BATCH = "batch"


@dataclass
class Translation:
    """A translated job and the JobSpec fields the target format could not carry."""

    document: Any
    lost: list[str] = field(default_factory=list)
