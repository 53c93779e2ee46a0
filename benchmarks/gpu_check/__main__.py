"""``python -m benchmarks.gpu_check`` (see the package docstring)."""
from benchmarks.gpu_check import main

raise SystemExit(main())
