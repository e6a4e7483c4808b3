"""What every result records about where it came from: code version and device."""

from __future__ import annotations

import functools
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """Package version, plus the git commit (and '-dirty') when running from a checkout."""
    try:
        version = metadata.version("larnn-hpo")
    except metadata.PackageNotFoundError:
        version = "unknown"
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{commit}{'-dirty' if dirty else ''}"


DEVICES = "auto, cpu, cuda or cuda:N"  # what training runs on


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' is the first GPU when there is one; asking for a missing GPU is an error, not a
    fallback; anything but auto, cpu, cuda and cuda:N is a ValueError naming what is allowed."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):  # torch's message for 'garbage', '' or 'cuda:-1' names no option
        raise ValueError(f"device {name[:40]!r} is not one of {DEVICES}") from None
    if device.type not in ("cpu", "cuda") or device.type == "cpu" and device.index not in (None, 0):
        raise ValueError(f"device {name[:40]!r} is not one of {DEVICES}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} requested but only {torch.cuda.device_count()} GPU(s) exist")
    return device


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"
