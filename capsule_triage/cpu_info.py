"""What CPU this is: its model name and the features that decide which backends are fast and how a
lower precision computes (native bf16, int8 dot products), as benchmarks and ``triage optimize`` record them.

A ``backends.json`` measured on one CPU is read on others (weights are copied between machines, and the
shipped ones were measured on the project's machine): :func:`numerics` is what must match for its agreement
checks of bf16 and int8 to hold here (QA 42: int8's float layers run in bf16 where the CPU has it natively,
in f32 elsewhere; 0.243 against 0.044 max score difference for the same weights).
"""

from __future__ import annotations

import os
import platform
import resource
import time
from functools import cache

CPU_FEATURES = ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")  # what decides the fast backends
NATIVE_BF16 = ("avx512_bf16", "amx_bf16", "bf16")  # x86; Arm's "bf16" (its /proc/cpuinfo "Features" line)
INT8_DOT = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")  # x86; Arm's dot product


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (/proc/cpuinfo's "flags" on x86 Linux, "Features" on Arm; empty where unknown)."""
    try:
        with open("/proc/cpuinfo") as fh:
            return frozenset(next((line.split(":", 1)[1].split() for line in fh if line.startswith(("flags", "Features"))), []))
    except OSError:
        return frozenset()


@cache
def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            return next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "") or platform.processor()
    except OSError:
        return platform.processor() or platform.machine()


def bf16_emulated() -> bool:
    """Whether PyTorch would emulate bf16 on this CPU: its flags are known and show no native bf16 (on macOS, Windows,
    or without /proc/cpuinfo nothing is skipped or warned about for want of a feature, rev54). The one rule behind
    optimize's skip, the run's and training's warnings and fp16's advice."""
    return bool(cpu_flags()) and not numerics()["native_bf16"]


def numerics() -> dict[str, bool]:
    """How bf16 and int8 compute on this CPU: natively (AVX-512-BF16 or AMX; VNNI or AMX dot products) or not."""
    flags = cpu_flags()
    return {"native_bf16": any(f in flags for f in NATIVE_BF16), "int8_dot_product": any(f in flags for f in INT8_DOT)}


def host_record() -> dict:
    """What run.json and metrics.json record of the machine that computed the scores (QA 60: int8 and bf16 scores
    depend on the CPU's instructions, and neither said which): architecture, system, cores, and the CPU as
    :func:`machine` describes it, without the host name; ``cpu.cpus`` counts the CPUs this process may use (its
    affinity), ``logical_cpus`` all of the machine's (rev54: two unnamed counts, 2 and 1 under ``taskset -c 0``)."""
    cpu = {k: v for k, v in machine().items() if k != "host"}
    return {"machine": platform.machine(), "system": platform.system(), "logical_cpus": os.cpu_count(), "cpu": cpu}


def machine() -> dict:
    """The machine a measurement was taken on: host, CPU model, usable cores, the CPU features that decide which
    backends are fast (QA 35: "a Xeon with AMX" was recorded nowhere, only "Intel(R) Xeon(R) Processor") and, said
    outright, how bf16 and int8 compute (QA 42: "no bf16" was to be read from a feature missing from the list)."""
    return {"host": platform.node(), "processor": cpu_model(),
            "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "cpu_features": [f for f in CPU_FEATURES if f in cpu_flags()], **numerics()}


def _busy_cpu_seconds(cpus: set[int]) -> float | None:
    """CPU-seconds run on ``cpus`` since boot: their /proc/stat lines' states other than idle and iowait (a virtual
    machine's steal counts: its host gave that time to another guest). None without /proc/stat."""
    try:
        with open("/proc/stat") as fh:
            rows = [line.split() for line in fh if line.startswith("cpu") and line[3:4].isdigit()]
        ticks = [[int(v) for v in row[1:9]] for row in rows if int(row[0][3:]) in cpus]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    return sum(sum(t) - t[3] - t[4] for t in ticks) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    """CPU-seconds of this process's threads and of its children that have ended and been waited for (the decoder
    processes). A child counts whole when it is waited for: one started before a window and reaped in it would hide
    other load (``triage bench`` starts and waits for its decoders inside its window)."""
    return sum(u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


LOADED_SHARE = 0.1  # other processes using more than this share of the CPUs a measurement ran on: said (bench, optimize)


class OtherLoad:
    """How many CPUs' worth other processes (or a virtual machine's host) used of the CPUs this process may run on
    (its affinity, ``cpus``; ``machine()["cpus"]``) while it measured (QA 76 #3): a window of uniform load slows every
    stage alike, so the stages' figures stay consistent with each other and nothing else shows it (under two busy
    processes the torch backends ran at a third of their idle speed, unflagged). ``cores()`` is None without /proc/stat
    or CPU affinity, or over under a second, where its 10 ms ticks make the figure noise."""

    MIN_SECONDS = 1.0

    def __init__(self):
        self._cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set()
        self.cpus = len(self._cpus)
        self._start = (time.perf_counter(), _busy_cpu_seconds(self._cpus), _own_cpu_seconds())

    def cores(self) -> float | None:
        wall, busy, own = time.perf_counter(), _busy_cpu_seconds(self._cpus), _own_cpu_seconds()
        wall0, busy0, own0 = self._start
        if not self.cpus or busy is None or busy0 is None or wall - wall0 < self.MIN_SECONDS:
            return None
        return max(0.0, (busy - busy0) - (own - own0)) / (wall - wall0)
