# The few commands a newcomer needs. See README.md.

.PHONY: run test test-rust test-sdk browser-tools lint deny fuzz bench

# Run Keyfob on its embedded default: SQLite under ./keyfob-data.
run:
	cargo run --release -p keyfob -- serve

# The whole test suite: the Rust crates, then the JS SDK against the keyfob binary.
# Set KEYFOB_TEST_POSTGRES_URL to run the Rust tests on PostgreSQL too.
test: test-rust test-sdk

test-rust: browser-tools
	cargo nextest run --workspace --no-fail-fast

# What the browser tests inject into the pages they check (axe-core), from npm; the tests skip that
# check, with a note, without it (unless KEYFOB_REQUIRE_BROWSER is set).
browser-tools:
	cd crates/keyfob/tests/browser-tools && npm ci --no-audit --no-fund

# The JS SDK (sdk/js): unit tests, tests against a real `keyfob serve`, and one in headless Chromium.
KEYFOB_BIN ?= $(CURDIR)/target/debug/keyfob
# (Built with every target, as the Rust tests build it, so that after them this is a no-op rather
# than a rebuild of the dependencies with other features.)
test-sdk:
	cargo build --workspace --all-targets
	cd sdk/js && npm ci --no-audit --no-fund && KEYFOB_BIN="$(KEYFOB_BIN)" npm test

# Formatting and lints, as CI checks them, then the supply-chain checks.
lint:
	cargo fmt --all -- --check
	cargo fmt --manifest-path fuzz/Cargo.toml -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(MAKE) deny

# cargo-deny: known advisories, licences, duplicate versions and sources, by the policy in deny.toml.
# cargo-deny fetches the RustSec advisory database with git. Where a local copy of it exists
# (ADVISORY_DB_MIRROR, a git repository), git is told to fetch from it instead, for machines whose
# only network is a package registry. With neither that nor github.com, a database fetched
# before is used as it is; with none at all, the other checks run and a warning says advisories
# were not checked.
ADVISORY_DB_MIRROR ?= /work/.mirror/rustsec+advisory-db/repo
ADVISORY_DB_URL := https://github.com/rustsec/advisory-db
deny:
	@command -v cargo-deny >/dev/null 2>&1 || { echo "cargo-deny is missing: cargo install --locked cargo-deny" >&2; exit 1; }
	if [ -d "$(ADVISORY_DB_MIRROR)" ]; then \
	  GIT_CONFIG_COUNT=1 \
	  GIT_CONFIG_KEY_0="url.file://$(ADVISORY_DB_MIRROR).insteadOf" \
	  GIT_CONFIG_VALUE_0=$(ADVISORY_DB_URL) \
	  cargo deny --locked check; \
	elif timeout 20 git ls-remote $(ADVISORY_DB_URL) HEAD >/dev/null 2>&1; then \
	  cargo deny --locked check; \
	elif ls -d $${CARGO_HOME:-$$HOME/.cargo}/advisory-dbs/advisory-db-* >/dev/null 2>&1; then \
	  echo "warning: the RustSec advisory database cannot be fetched; using the copy fetched before" >&2; \
	  cargo deny --locked --offline check; \
	else \
	  echo "warning: no RustSec advisory database can be reached (no network, no ADVISORY_DB_MIRROR): advisories NOT checked" >&2; \
	  cargo deny --locked check bans licenses sources; \
	fi

# Fuzz the parsers an attacker reaches first (fuzz/fuzz_targets/), FUZZ_SECONDS each. cargo-fuzz
# needs a nightly compiler's flags; RUSTC_BOOTSTRAP=1 lets a stable one take them. New inputs go to
# fuzz/corpus/ (not committed); a crash stops the run and is saved under fuzz/artifacts/.
FUZZ_SECONDS ?= 20
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo-fuzz is missing: cargo install --locked cargo-fuzz" >&2; exit 1; }
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build --debug-assertions
	cd fuzz && for target in $$(cargo fuzz list); do \
	  mkdir -p corpus/$$target && \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run --debug-assertions $$target corpus/$$target seeds/$$target -- \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -timeout=10 -print_final_stats=1 || exit 1; \
	done

# Load test a release build on loopback (see docs/BENCHMARKS.md).
bench:
	bench/run.sh
