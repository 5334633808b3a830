# The few commands a newcomer needs. See README.md.

.PHONY: run test test-rust test-sdk lint bench

# Run Keyfob on its embedded default: SQLite under ./keyfob-data.
run:
	cargo run --release -p keyfob -- serve

# The whole test suite: the Rust crates, then the JS SDK against the keyfob binary.
# Set KEYFOB_TEST_POSTGRES_URL to run the Rust tests on PostgreSQL too.
test: test-rust test-sdk

test-rust:
	cargo nextest run --workspace --no-fail-fast

# The JS SDK (sdk/js): unit tests, tests against a real `keyfob serve`, and one in headless Chromium.
KEYFOB_BIN ?= $(CURDIR)/target/debug/keyfob
# (Built with every target, as the Rust tests build it, so that after them this is a no-op rather
# than a rebuild of the dependencies with other features.)
test-sdk:
	cargo build --workspace --all-targets
	cd sdk/js && npm ci --no-audit --no-fund && KEYFOB_BIN="$(KEYFOB_BIN)" npm test

# Formatting and lints, as CI checks them.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Load test a release build on loopback (see docs/BENCHMARKS.md).
bench:
	bench/run.sh
