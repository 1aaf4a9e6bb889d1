"""Where and how code runs: the device, bf16 autocast, the machine's description (torchrun: fer.distributed),
and the one way files are written (a temp file renamed over the target, so no reader ever sees half a file).
PyTorch is imported inside the functions that use it: the int8 path writes files through here without it.
"""
from __future__ import annotations

import contextlib
import glob
import os
import platform
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:  # annotations only: PyTorch is imported where it is used (the int8 path needs none)
    import torch

# ---------------------------------------------------------------------------------------------------
# Device and precision


def pick_device(name: str = "auto") -> "torch.device":
    """auto (CUDA when there is one, else the CPU), cpu, cuda or cuda:N; ConfigError for anything else."""
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device '{name}' (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{name}': this machine has no CUDA GPU (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{name}': only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif device.type != "cpu":
        raise ConfigError(f"unsupported device '{name}' (expected auto, cpu, cuda or cuda:N)")
    return device


def cpu_has_fast_bf16() -> bool:
    import torch
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_for(device: torch.device, enabled: bool = True):
    """bf16 autocast where the hardware runs it fast (CUDA, CPUs with AMX/AVX512-BF16), else off."""
    import torch
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled and cpu_has_fast_bf16())


def cpu_flags() -> dict[str, bool]:
    """The CPU features that decide inference speed: AVX-512, VNNI (int8 dot products), AMX (matrix tiles)."""
    text = ""
    with contextlib.suppress(OSError):
        text = Path("/proc/cpuinfo").read_text()
    flags = set(re.findall(r"^flags\s*:\s*(.*)$", text, re.M)[0].split()) if "flags" in text else set()
    return {"avx512": "avx512f" in flags, "avx512_vnni": "avx512_vnni" in flags or "avx_vnni" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "amx": any(f.startswith("amx") for f in flags)}


def cpu_model() -> str:
    with contextlib.suppress(OSError, IndexError):
        return re.findall(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)[0].strip()
    return platform.processor() or platform.machine()


def machine_description(device: torch.device | str = "cpu") -> str:
    """One line naming the hardware a number was measured on."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    flags = ", ".join(name for name, present in cpu_flags().items() if present) or "no AVX-512"
    return (f"{cpu_model()}, {os.cpu_count()} cores ({flags}), {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


# ---------------------------------------------------------------------------------------------------
# Writing files


def temp_name(path: Path, pid: int | None = None) -> Path:
    """.NAME.PID.tmp.SUFFIX beside `path`: hidden, owned by one process, and with the suffix that writers
    which choose the format by the name (OpenCV's VideoWriter) need."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}.tmp{path.suffix}")


def remove_stale_temp_files(path: Path) -> None:
    """Delete the temp files that writers of `path` killed mid-write (SIGKILL, power loss) left behind."""
    path = Path(path)
    with contextlib.suppress(OSError):
        for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"):
            pid = leftover.name[len(path.name) + 2:].split(".tmp", 1)[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                leftover.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike):
    """Yield a temp path beside `path`; once the block succeeds it is renamed over `path` in one step.

    A reader sees the old file or the new one, never half of one; if the block fails (or the process is
    killed) the old file stays as it was. The rename replaces a symbolic link at `path` itself, never the
    file the link points to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    tmp = temp_name(path)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # safetensors and others create their files private to the user
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_outputs(outputs: dict[str, str | os.PathLike | None], inputs=()) -> None:
    """Before anything is read or written: refuse (DataError, one line naming the option) an output that is a
    folder, that is one of the inputs, or that another output also names (the same real path, links
    followed), so that no command ever writes over what it reads or loses one of its own results."""
    from .errors import DataError, quote
    seen = {os.path.realpath(p): f"the input {quote(p)}" for p in inputs if p is not None}
    for option, path in outputs.items():
        if path is None:
            continue
        if Path(path).is_dir():
            raise DataError(f"{option} {quote(path)} is a folder; give a file name")
        real = os.path.realpath(path)
        if real in seen:
            raise DataError(f"{option} {quote(path)} is {seen[real]}: choose another name")
        seen[real] = f"the {option} output too"


@contextlib.contextmanager
def native_stderr_silenced():
    """Point file descriptor 2 at /dev/null for the block: FFmpeg and OpenCV print there directly ("moov
    atom not found", "can't open camera by index"), around Python's sys.stderr; the one-line error that
    follows says what went wrong."""
    with contextlib.suppress(AttributeError, ValueError):
        sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
