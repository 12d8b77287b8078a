"""Speed and memory benchmarks of ENSAM inference; run `python -m benchmarks.run_all`."""
