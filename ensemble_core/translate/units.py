"""Counts, sizes and durations as each scheduler writes them, to and from a JobSpec's units.

A JobSpec counts memory and disk in MB of 2**20 bytes (what Slurm's `M`, PBS's `mb`, LSF's `MB`
and Kubernetes' `Mi` all mean) and time in seconds. A size that is not a whole number of MB is
rounded up: a job never gets less than it asked for.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

MB = 2**20
_SLURM_SIZE = re.compile(r"^(\d+)([KMGT]?)B?$", re.IGNORECASE)
_SLURM_FACTORS = {"": 1.0, "k": 1 / 1024, "m": 1.0, "g": 1024.0, "t": 1024.0**2}
_PBS_SIZE = re.compile(r"^(\d+)([kmgtp]?)(b|w)?$", re.IGNORECASE)
_LSF_SIZE = re.compile(r"^(\d+(?:\.\d+)?)([KMGTPE]?)B?$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_FSD = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)?$")
_FSD_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_CLOCK = re.compile(r"^\d+(?::\d+){0,2}(?:\.\d+)?$")


def count(text: str, what: str, *, least: int = 1) -> int:
    """A whole number of at least `least`, or a ValueError naming `what`."""
    if not text.isdigit() or int(text) < least:
        raise ValueError(f"{what} must be a whole number of at least {least}, not '{text}'")
    return int(text)


def slurm_megabytes(text: str, what: str) -> int:
    """Slurm's sizes (`str_to_mbytes`): a count with K, M (the default), G or T, B optional."""
    match = _SLURM_SIZE.match(text)
    if not match:
        raise ValueError(f"{what} must be a size such as 4096, 500M or 16G, not '{text}'")
    return math.ceil(int(match[1]) * _SLURM_FACTORS[match[2].lower()])


def pbs_megabytes(text: str, what: str) -> int:
    """PBS sizes: a count of bytes (b, the default) or words (w), with k, m, g, t or p (powers
    of 1024)."""
    match = _PBS_SIZE.match(text)
    if not match:
        raise ValueError(f"{what} must be a size such as 4gb or 500mb, not '{text}'")
    unit = 8 if (match[3] or "b").lower() == "w" else 1
    return math.ceil(int(match[1]) * unit * 1024 ** _POWERS[match[2].lower()] / MB)


def lsf_megabytes(text: str, what: str) -> int:
    """LSF sizes: KB when no unit is given (LSF_UNIT_FOR_LIMITS's default), else KB to EB."""
    match = _LSF_SIZE.match(text)
    if not match:
        raise ValueError(f"{what} must be a size such as 4GB or 500MB, not '{text}'")
    power = _POWERS[match[2].lower()] if match[2] else 1
    return math.ceil(float(match[1]) * 1024**power / MB)


def slurm_seconds(text: str, what: str) -> float | None:
    """Slurm's times (`time_str2secs`): minutes, minutes:seconds, hours:minutes:seconds,
    days-hours[:minutes[:seconds]]; UNLIMITED, INFINITE and -1 are None."""
    if text.upper() in ("UNLIMITED", "INFINITE", "-1"):
        return None
    days, dash, clock = text.rpartition("-") if "-" in text else ("0", "", text)
    parts = clock.split(":")
    if not days.isdigit() or not all(part.isdigit() for part in parts) or len(parts) > 3:
        raise ValueError(f"{what} must be a time such as 30, 1:30:00 or 2-00:00:00, not '{text}'")
    numbers = [int(part) for part in parts]
    if dash:  # days-hours[:minutes[:seconds]]
        numbers += [0] * (3 - len(numbers))
        hours, minutes, seconds = numbers
    elif len(numbers) == 3:
        hours, minutes, seconds = numbers
    else:  # minutes[:seconds]
        hours, minutes, seconds = 0, numbers[0], (numbers[1:] or [0])[0]
    return float(int(days) * 86400 + hours * 3600 + minutes * 60 + seconds) or None


def clock_seconds(text: str, what: str) -> float:
    """PBS times: seconds, minutes:seconds or hours:minutes:seconds (fractions allowed)."""
    if not _CLOCK.match(text):
        raise ValueError(f"{what} must be a time such as 3600 or 01:00:00, not '{text}'")
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def fsd_seconds(text: str, what: str, *, bare: str = "s") -> float:
    """Flux Standard Duration (`30s`, `1.5h`, `2d`); a bare number counts in `bare` units."""
    match = _FSD.match(text)
    if not match:
        raise ValueError(f"{what} must be a duration such as 90s, 30m or 1.5h, not '{text}'")
    return float(match[1]) * _FSD_FACTORS[match[2] or bare]


def clock(seconds: float) -> str:
    """Seconds as `hours:minutes:seconds`, rounded up to the second (hours may pass 24)."""
    minutes, secs = divmod(math.ceil(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def fsd(seconds: float) -> str:
    """Seconds as a Flux Standard Duration that reads back as the same float (`90s`, `0.5s`)."""
    return f"{Decimal(repr(float(seconds))).normalize():f}s"


_QUANTITY = re.compile(
    r"^(\d+(?:\.\d+)?|\.\d+)(?:[eE]([+-]?\d+))?(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])?$"
)
_QUANTITY_FACTORS = {
    **{
        suffix: 1024.0 ** (index + 1)
        for index, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))
    },
    **{suffix: 1000.0 ** (index + 1) for index, suffix in enumerate("kMGTPE")},
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
}


def quantity(text: object, what: str) -> float:
    """A Kubernetes resource quantity (`500m`, `2`, `1.5Gi`, `129e6`) in its base unit."""
    match = _QUANTITY.match(str(text))
    if not match:
        raise ValueError(f"{what} must be a quantity such as 2, 500m or 4Gi, not '{text}'")
    number = float(match[1]) * 10.0 ** int(match[2] or 0)
    return number * _QUANTITY_FACTORS.get(match[3] or "", 1.0)
