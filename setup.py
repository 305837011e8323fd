"""Not used for metadata: pyproject.toml (scikit-build-core) is the build. Kept only so `python setup.py` says so."""

raise SystemExit("codesign builds with scikit-build-core: run `pip install .` (metadata lives in pyproject.toml)")
