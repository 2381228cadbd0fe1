"""The options of Slurm's sbatch and srun, as Slurm's own option table defines them.

Listed from `src/common/slurm_opt.c` (Slurm 26.11.0rc1, August 2026): every option's long
name, its short letter and whether it takes a value, so that a directive splits as sbatch splits
it and an unknown option is refused as sbatch refuses it.
"""

from ensemble_core.translate.options import Table

_BOTH = """
account A required; acctg-freq - required; bbf - required; autocomplete - required; begin b
required; bb - required; consolidate-segments - none; cluster-constraint - required; chdir D
required; clusters M required; cluster - required; comment - required; constraint C required;
container - required; container-id - required; runtime - required; context - required;
contiguous - none; core-spec S required; cores-per-socket - required; cpu-freq - required;
cpus-per-gpu - required; cpus-per-task c required; deadline - required; delay-boot - required;
dependency d required; distribution m required; error e required; exclude x required;
exclusive - optional; export - required; extra - required; extra-node-info B required;
gpu-bind - required; tres-bind - required; gpu-freq - required; gpus G required; gpus-per-node
- required; gpus-per-socket - required; gpus-per-task - required; tres-per-task - required;
gres - required; gres-flags - required; help h none; hint - required; hold H none; input i
required; job-name J required; licenses L required; mail-type - required; mail-user -
required; mcs-label - required; oom-kill-step - optional; mem - required; mem-bind - required;
mem-per-cpu - required; mem-per-gpu - required; mem-update - required; mincpus - required;
network - required; nice - optional; no-kill k optional; nodefile F required; nodelist w
required; nodes N required; ntasks n required; ntasks-per-core - required; ntasks-per-node -
required; ntasks-per-socket - required; ntasks-per-tres - required; ntasks-per-gpu - required;
open-mode - required; output o required; overcommit O none; oversubscribe s none; parsable -
none; partition p required; prefer - required; priority - required; profile - required;
propagate - optional; qos q required; quiet Q none; reboot - none; reservation - required;
resources - required; resv-ports - optional; segment - required; signal - required;
sockets-per-node - required; spread-job - none; spread-segments - none; stepmgr - none;
switches - required; tasks-per-node - required; test-only - none; thread-spec - required;
threads-per-core - required; time t required; time-min - required; tmp - required;
use-min-nodes - none; usage - none; verbose v none; version V none; wckey - required
"""
_SBATCH_ONLY = """
array a required; batch - required; export-file - required; external - none; get-user-env -
none; gid - required; ignore-pbs - none; kill-on-invalid-dep - required; no-requeue - none;
requeue - optional; uid - required; wait W none; wait-all-nodes - required; wrap - required
"""
_SRUN_ONLY = """
accel-bind - required; async - none; bcast - optional; bcast-exclude - required; compress -
optional; cpu-bind - required; cpu_bind - required; debugger-test - none; disable-status X
none; epilog - required; exact - none; external-launcher - optional; treewidth - required;
ignore-signals - required; immediate I optional; interactive - none; jobid - required;
kill-on-bad-exit K optional; label l none; threads T required; mpi - required; msg-timeout -
required; multi-prog - none; no-allocate Z none; overlap - optional; pack-group - required;
het-group - required; preserve-env E none; prolog - required; pty - optional;
quit-on-interrupt - none; relative r required; send-libs - optional; slurmd-debug - required;
task-epilog - required; task-prolog - required; unbuffered u none; wait W required;
wait-for-children - none; whole - none
"""

SBATCH = Table(_BOTH + ";" + _SBATCH_ONLY)
SRUN = Table(_BOTH + ";" + _SRUN_ONLY)
