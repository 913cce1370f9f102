"""Measure the peak memory of a block of work.

On CUDA the peak is ``torch.cuda.max_memory_allocated`` (tensors only, what the caching
allocator handed out). On CPU it is the process's peak resident set size. ``ru_maxrss`` is a
lifetime maximum that cannot be reset, so on Linux the kernel's high-water mark (``VmHWM``)
is reset on entry by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0, see proc(5))
and read on exit: an exact peak, short spikes included. Elsewhere, or where the reset is not
permitted, a background thread samples the RSS (psutil) and may miss spikes shorter than
``interval_s``. The method is recorded next to the number so that nobody compares one with
the other.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import torch


@dataclass
class PeakMemory:
    """Context manager recording the peak memory inside its block.

    Args:
        device: "cuda" (or "cuda:N") to measure GPU tensors, anything else for CPU RSS.
        interval_s: sampling period for the CPU resident-set sampler.

    Example:
        >>> with PeakMemory("cpu") as peak:
        ...     work()
        >>> peak.peak_bytes, peak.method
    """

    device: str = "cpu"
    interval_s: float = 0.02
    peak_bytes: int = 0
    baseline_bytes: int = 0
    method: str = ""
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _hwm: bool = field(default=False, repr=False)

    @property
    def is_cuda(self) -> bool:
        return str(self.device).startswith("cuda") and torch.cuda.is_available()

    def __enter__(self) -> PeakMemory:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
            return self
        proc = psutil.Process()
        self._hwm = _reset_high_water_mark()
        self.baseline_bytes = proc.memory_info().rss
        self.peak_bytes = self.baseline_bytes
        self.method = (
            "process peak resident set size (VmHWM, reset on entry)"
            if self._hwm
            else "process peak resident set size (psutil, sampled)"
        )
        self._stop.clear()

        def sample() -> None:
            while not self._stop.is_set():
                self.peak_bytes = max(self.peak_bytes, proc.memory_info().rss)
                time.sleep(self.interval_s)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak_bytes = max(self.peak_bytes, psutil.Process().memory_info().rss)
        if self._hwm:
            self.peak_bytes = max(self.peak_bytes, _high_water_mark() or 0)

    def as_dict(self) -> dict[str, object]:
        return {
            "peak_bytes": int(self.peak_bytes),
            "peak_mib": round(self.peak_bytes / 2**20, 1),
            "baseline_bytes": int(self.baseline_bytes),
            "method": self.method,
            "device": str(self.device),
        }


_STATUS = Path("/proc/self/status")


def _high_water_mark() -> int | None:
    """The kernel's peak RSS of this process (VmHWM) in bytes, or None off Linux."""
    try:
        match = re.search(r"VmHWM:\s+(\d+)\s+kB", _STATUS.read_text())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _reset_high_water_mark() -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/self/clear_refs``); False if impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _high_water_mark() is not None


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def configure_cpu_allocator(threshold_bytes: int = 128 * 1024) -> bool:
    """Make glibc return freed tensor memory to the OS (call once, before training on CPU).

    glibc raises its mmap threshold dynamically (up to 32 MiB) each time a large block is
    freed; activation tensors below it are then carved from the heap, and freed heap memory
    is kept by the process. Training MiniLM on CPU, the resident memory grew 2.2 -> 2.8 -> 3.6
    GiB over three identical steps whose live tensors peak below 2 GiB. Fixing the mmap and
    trim thresholds (``mallopt``, the same as ``MALLOC_MMAP_THRESHOLD_=131072``) gave a flat
    0.84 GiB after each step and no measurable slow-down; the memory estimate assumes it.

    Args:
        threshold_bytes: allocations at least this large are mmapped (and unmapped on free).

    Returns:
        True when glibc accepted the setting, False elsewhere (macOS, Windows, musl).
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, int(threshold_bytes)) == 1
        return bool(ok and libc.mallopt(M_TRIM_THRESHOLD, int(threshold_bytes)) == 1)
    except (OSError, AttributeError):
        return False
