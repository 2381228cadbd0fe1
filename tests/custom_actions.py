"""A custom action for the controller tests: grow by as many nodes as jobs failed."""

CALLS: list[dict] = []


def grow_by_failures(rule, group, job, ensemble):
    CALLS.append({"group": group, "job": job.key if job else None})
    return {"name": "grow", "value": 1}
