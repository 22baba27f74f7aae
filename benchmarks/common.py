"""Helpers shared by the benchmark scripts: machine description, timing, memory probes, result files.

Imported as ``common`` by the scripts in this folder (``python benchmarks/<script>.py`` puts the folder on
``sys.path``). Nothing here imports ``hf_relkd``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.util
import itertools
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

MB = 1024.0**2
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# run from a checkout without `pip install -e .`: make the repository's hf_relkd importable
if importlib.util.find_spec("hf_relkd") is None:
    sys.path.insert(0, REPO_ROOT)


# ---------------------------------------------------------------------------------------------------------------------
# environment
# ---------------------------------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was requested but CUDA is not available on this machine.")
    return device


CPU_MALLOC_CHOICES = ("default", "retain")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


def add_cpu_malloc_argument(parser) -> None:
    """``--cpu_malloc``: see :func:`configure_cpu_malloc`."""
    parser.add_argument(
        "--cpu_malloc",
        default="default",
        choices=CPU_MALLOC_CHOICES,
        help="glibc allocator policy for CPU tensors. 'default': glibc as configured by the environment (large "
        "blocks are mmap-ed and returned to the OS on every free, so every large activation page-faults anew); "
        "'retain': freed memory is kept for reuse (mallopt M_MMAP_THRESHOLD = M_TRIM_THRESHOLD = 1 GiB), which is "
        "what a caching allocator (CUDA's, jemalloc, tcmalloc) does and what PyTorch's CPU tuning guide recommends; "
        "same as MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=1073741824 in the environment",
    )


def configure_cpu_malloc(policy: str) -> str:
    """Apply ``--cpu_malloc`` to this process (inherited by forked children) and describe the outcome.

    On CPU, glibc serves blocks above its mmap threshold (dynamic, at most 32 MiB by default) with fresh ``mmap``
    pages that are zero-filled on first touch and unmapped on free; a batch of 128 CIFAR images has activations of
    33 MiB, so doubling the batch (VRM's real + virtual views) crosses that line and costs page faults on every
    layer. ``retain`` raises both thresholds so freed memory is reused, as the CUDA caching allocator does on a GPU.
    """
    if policy == "default":
        return "glibc defaults (environment: " + _malloc_env() + ")"
    if policy != "retain":
        raise ValueError(f"--cpu_malloc must be one of {CPU_MALLOC_CHOICES}, got {policy!r}")
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):
        ok = False
    if not ok:
        raise SystemExit("--cpu_malloc retain needs glibc's mallopt, which this system does not provide.")
    return "glibc mallopt M_MMAP_THRESHOLD = M_TRIM_THRESHOLD = 1 GiB (freed memory is reused, not unmapped)"


def _malloc_env() -> str:
    keys = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")
    found = [f"{k}={os.environ[k]}" for k in keys if os.environ.get(k)]
    return ", ".join(found) or "none set"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device, query_cuda: bool = True) -> dict[str, Any]:
    """What ran the benchmark: CPU model, cores, torch/transformers versions, GPU (if any), load average.

    ``query_cuda=False`` skips the GPU name (which initialises CUDA) for processes that fork afterwards.
    """
    import transformers

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
    }
    with contextlib.suppress(OSError):
        info["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    try:
        with open("/proc/meminfo") as f:
            info["memory_total_gb"] = round(int(f.readline().split()[1]) / 1024**2, 1)
    except (OSError, ValueError, IndexError):
        pass
    if device.type == "cuda" and query_cuda:
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info["gpu"] = props.name
        info["gpu_memory_gb"] = round(props.total_memory / 1024**3, 1)
        info["cuda"] = torch.version.cuda
    return info


def command_line() -> str:
    """The command that produced a result, with the script path relative to the working directory."""
    argv = list(sys.argv)
    if argv:
        with contextlib.suppress(ValueError):
            argv[0] = os.path.relpath(argv[0])
    return "python " + " ".join(shlex.quote(a) for a in argv)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so a host clock brackets it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times_s: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and minimum of a list of durations, in milliseconds."""
    ms = sorted(1000.0 * t for t in times_s)
    if not ms:
        return {}
    if len(ms) >= 2:
        q1, _, q3 = statistics.quantiles(ms, n=4, method="inclusive")
    else:
        q1 = q3 = ms[0]
    return {
        "median_ms": statistics.median(ms),
        "p25_ms": q1,
        "p75_ms": q3,
        "min_ms": ms[0],
        "n": len(ms),
    }


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds taken by ``fn()`` including the device work it queued."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------------------------------
def _proc_status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes() -> int:
    """Current resident set size of this process."""
    kb = _proc_status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """High-water mark of the resident set size (``VmHWM``; ``ru_maxrss`` where /proc is missing)."""
    kb = _proc_status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if sys.platform == "darwin":  # bytes there
            kb //= 1024
    return kb * 1024


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``/proc/self/clear_refs``); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def cpu_peak_live_bytes(fn: Callable[[], Any]) -> int:
    """Peak, over the run of ``fn()``, of the bytes held by CPU tensors allocated during it (net of frees).

    Read from the PyTorch profiler's memory events (every CPU allocator allocation and free, in order): the
    running sum of their sizes is the live tensor memory relative to the start; its maximum is returned. Memory
    held before ``fn`` starts (inputs, parameters) is not included. Not for timing (the profiler slows ``fn``).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=False) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    return max(0, max(itertools.accumulate(e.nbytes() for e in events), default=0))


class SavedTensorBytes:
    """Context manager counting the bytes of distinct tensor storages autograd saves for backward.

    Tensors saved inside activation-checkpointed regions are not seen (checkpointing replaces them with its own
    handles), which is exactly what checkpointing saves. Storages are deduplicated by data pointer.
    """

    def __init__(self):
        self.nbytes = 0
        self._seen: set[int] = set()

    def _pack(self, tensor: torch.Tensor):
        try:
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key not in self._seen:
                self._seen.add(key)
                self.nbytes += storage.nbytes()
        except (RuntimeError, NotImplementedError):  # e.g. tensors without storage
            self.nbytes += tensor.numel() * tensor.element_size()
        return tensor

    @staticmethod
    def _unpack(tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def __enter__(self) -> SavedTensorBytes:
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


# ---------------------------------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------------------------------
def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        return "" if v is None else str(v).replace("|", "\\|")

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def header_markdown(title: str, payload: dict[str, Any]) -> str:
    m = payload["machine"]
    hw = f"{m['cpu']}, {m['usable_cores']} usable of {m['logical_cores']} logical cores, {m['torch_threads']} torch threads"
    if "gpu" in m:
        hw = f"{m['gpu']} ({m['gpu_memory_gb']} GB, CUDA {m['cuda']}); host {hw}"
    return "\n".join(
        [
            f"## {title}",
            "",
            f"* Command: `{payload['command']}`",
            f"* Date: {payload['date']}",
            f"* Machine: {hw}; load average at start {m.get('load_average_at_start')}",
            f"* Software: torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}",
        ]
    )


def write_results(output_dir: str, name: str, payload: dict[str, Any], markdown: str) -> tuple[str, str]:
    """Write ``<name>.json`` and ``<name>.md`` into ``output_dir``; returns both paths."""
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, f"{name}.json")
    md_path = os.path.join(output_dir, f"{name}.md")
    with open(json_path, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=False)
        f.write("\n")
    with open(md_path, "w") as f:
        f.write(markdown.rstrip() + "\n")
    return json_path, md_path
