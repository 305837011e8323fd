"""Device profiling (``codesign profile``).

So far: the resumable measurement journal and the TVM primitives (workload -> fused kernel, MetaSchedule
tuning, schedule replay, timing) in :mod:`codesign.profile.tvm_backend` (imported lazily: TVM is optional).
"""

from codesign.profile.journal import Journal, read_journal, with_retries

__all__ = ["Journal", "read_journal", "with_retries"]
