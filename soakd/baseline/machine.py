"""The host's facts for the "Hardware" section: CPU, cores, memory, storage, kernel.

Read from /proc, /sys and os at run time, never typed in; what cannot be read
says so ("unknown") rather than guessing.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path

import psutil

from soakd.baseline.model import Machine


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mount_of(path: Path, mounts: Path = Path("/proc/mounts")) -> tuple[str, str]:
    """(device, filesystem type) of the mount holding ``path``: the longest matching prefix."""
    target = str(path.resolve())
    best = ("", "unknown", "unknown")
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return best[1], best[2]
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        device, point, fstype = parts[0], parts[1].replace("\\040", " "), parts[2]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, device, fstype)
    return best[1], best[2]


def _block_kind(dev_id: int, sys_root: Path = Path("/sys")) -> str | None:
    """'NVMe SSD' / 'SSD' / 'HDD' and the model of the disk behind a device number."""
    node = sys_root / "dev" / "block" / f"{os.major(dev_id)}:{os.minor(dev_id)}"
    try:
        real = node.resolve(strict=True)
    except OSError:
        return None
    disk = real.parent if (real / "partition").exists() else real
    name = disk.name
    try:
        rotational = (disk / "queue" / "rotational").read_text().strip() == "1"
    except OSError:
        rotational = None
    model = ""
    for f in (disk / "device" / "model", disk / "device" / "name"):
        try:
            model = f.read_text().strip()
            break
        except OSError:
            continue
    if name.startswith("nvme"):
        kind = "NVMe SSD"
    elif name.startswith(("vd", "xvd")):
        kind = "virtual disk"
    elif rotational is None:
        kind = "disk"
    else:
        kind = "HDD" if rotational else "SSD"
    return f"{kind} {name}" + (f" ({model})" if model else "")


def storage_of(path: Path) -> tuple[str, str]:
    """(storage description, filesystem) for the file system holding ``path``."""
    device, fstype = mount_of(path)
    try:
        kind = _block_kind(path.stat().st_dev)
    except OSError:
        kind = None
    where = f"{device} on {path.resolve()}" if device else str(path.resolve())
    return (kind + f", {where}" if kind else where), fstype


def read_machine(data_path: Path) -> Machine:
    storage, fstype = storage_of(data_path)
    vm = psutil.virtual_memory()
    la = os.getloadavg()
    uname = os.uname()
    return Machine(
        cpu_model=cpu_model(),
        cpu_cores_physical=psutil.cpu_count(logical=False),
        cpu_threads=os.cpu_count() or 1,
        memory_bytes=int(vm.total),
        storage=storage,
        filesystem=fstype,
        kernel=f"{uname.sysname} {uname.release}",
        hostname=socket.gethostname(),
        loadavg_start=(round(la[0], 2), round(la[1], 2), round(la[2], 2)),
    )
