"""`snakemake --executor ensemble`: Snakemake's jobs run through the ensemble core.

A thin adapter: each job becomes a JobSpec, the core submits it to the chosen member and applies
the rules files; outcomes come back from the member's event stream.
"""

from snakemake_interface_executor_plugins.settings import CommonSettings

from snakemake_executor_plugin_ensemble.executor import Executor
from snakemake_executor_plugin_ensemble.settings import ExecutorSettings

common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=True,
    auto_deploy_default_storage_provider=False,
    init_seconds_before_status_checks=0,
)

__all__ = ["Executor", "ExecutorSettings", "common_settings"]
