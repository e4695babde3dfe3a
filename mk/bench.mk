# Benchmarks: figures, not pass/fail. Results in bench/results/.
.PHONY: bench bench-quick
bench: setup images molecule-image wheelhouse ## Throughput, failover, footprint, converge figures -> bench/results/
	$(BIN)/python -m bench.run all

bench-quick: setup images molecule-image wheelhouse ## A small, fast run of the benchmarks (smoke)
	$(BIN)/python -m bench.run all --quick
