"""Peak memory of a process, as the benchmarks and the decoder process report it."""

from __future__ import annotations

import resource
import sys


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB: ``VmHWM`` of /proc/self/status.

    Not ``getrusage().ru_maxrss``: Linux carries that across exec, so a process started by a large
    parent (a benchmark harness with torch loaded) reports the parent's size (measured: 1,037 MB
    reported for a run whose own peak was ~240 MB).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0 if sys.platform != "darwin" else 1024.0**2)
