"""Snakemake's own executor test suite (a simple and a group workflow) run on the plugin."""

from __future__ import annotations

import snakemake.common.tests
from snakemake_interface_executor_plugins.settings import ExecutorSettingsBase

from snakemake_executor_plugin_ensemble import ExecutorSettings


class TestWorkflows(snakemake.common.tests.TestWorkflowsLocalStorageBase):
    """`test_simple_workflow` and `test_group_workflow`, in process, on the local member."""

    __test__ = True

    def get_executor(self) -> str:
        return "ensemble"

    def get_executor_settings(self) -> ExecutorSettingsBase:
        return ExecutorSettings()
