"""The garbage collector, paused while `ensemble run` starts (cli.CollectorPause), runs again
before the ensemble does."""

from __future__ import annotations

import gc

from ensemble_core.cli import CollectorPause


def test_resume_restores_the_collector_once():
    assert gc.isenabled()
    collector = CollectorPause()
    assert not gc.isenabled()
    collector.resume()
    assert gc.isenabled()
    gc.disable()
    collector.resume()  # a second resume changes nothing
    assert not gc.isenabled()
    gc.enable()
    gc.unfreeze()


def test_a_collector_paused_before_stays_paused():
    gc.disable()
    try:
        CollectorPause().resume()
        assert not gc.isenabled()
    finally:
        gc.enable()
