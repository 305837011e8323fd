"""Device profiling (``codesign profile``): measurement journal so far; TVM measurement is the next step."""

from codesign.profile.journal import Journal, read_journal, with_retries

__all__ = ["Journal", "read_journal", "with_retries"]
