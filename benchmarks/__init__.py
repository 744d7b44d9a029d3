"""clip-search performance benchmarks: `python -m benchmarks` (see run.py)."""
