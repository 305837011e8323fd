"""The ``codesign`` command line: one class per command, each returning an exit code."""
