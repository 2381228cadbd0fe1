"""A custom action for the controller tests: grow by as many nodes as jobs failed."""

CALLS: list[dict] = []


def grow_by_failures(rule, group, job, ensemble):
    CALLS.append({"group": group, "job": job.key if job else None})
    return {"name": "grow", "value": 1}


def raises(rule, group, job, ensemble):
    raise ValueError("the custom action broke")


def returns_nonsense(rule, group, job, ensemble):
    return {"name": "explode"}


def snapshot_then_close(rule, group, job, ensemble):
    """Reads the ensemble (fine on its own thread) and then closes it (refused at once)."""
    CALLS.append({"groups": sorted(ensemble.snapshot()["groups"])})
    ensemble.close()


def waits_for_its_job(rule, group, job, ensemble):
    job.wait()
