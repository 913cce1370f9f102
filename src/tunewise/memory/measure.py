"""Measure the peak memory of a block of work.

On CUDA the peak is ``torch.cuda.max_memory_allocated`` (tensors only, what the caching
allocator handed out). On CPU it is the process's peak resident set size, sampled by a
background thread (psutil) because ``ru_maxrss`` is a lifetime maximum that cannot be reset.
The method is recorded next to the number so that nobody compares one with the other.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

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
        self.baseline_bytes = proc.memory_info().rss
        self.peak_bytes = self.baseline_bytes
        self.method = "process peak resident set size (psutil, sampled)"
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

    def as_dict(self) -> dict[str, object]:
        return {
            "peak_bytes": int(self.peak_bytes),
            "peak_mib": round(self.peak_bytes / 2**20, 1),
            "baseline_bytes": int(self.baseline_bytes),
            "method": self.method,
            "device": str(self.device),
        }
