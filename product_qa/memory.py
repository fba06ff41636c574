"""Peak memory of this process and of its finished children, the same on Linux and macOS."""
from __future__ import annotations

import sys


def peak_rss_mb(children: bool = False) -> float | None:
    """Peak resident memory of this process (or of its finished children), in MB to 0.1; None where the platform
    cannot say (Windows has no `resource` module)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 2**20 if sys.platform == "darwin" else peak / 1024, 1)  # macOS: bytes, Linux: KiB
