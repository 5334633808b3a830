# The few commands a newcomer needs. See README.md.

.PHONY: run test lint bench

# Run Keyfob on its embedded default: SQLite under ./keyfob-data.
run:
	cargo run --release -p keyfob -- serve

# The whole test suite. Set KEYFOB_TEST_POSTGRES_URL to run it on PostgreSQL too.
test:
	cargo nextest run --workspace --no-fail-fast

# Formatting and lints, as CI checks them.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Load test a release build on loopback (see docs/BENCHMARKS.md).
bench:
	bench/run.sh
