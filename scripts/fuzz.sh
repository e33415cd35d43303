#!/usr/bin/env bash
# Runs every fuzz target for a few seconds each (default 15), as CI does; longer by hand:
#   scripts/fuzz.sh 600
# A brief run (up to 60 s a target) builds the targets unoptimized and without
# AddressSanitizer: that build takes a third of the optimized, instrumented one (minutes of a
# CI run, for seconds of fuzzing) and still runs thousands of inputs a second. A longer run
# builds as cargo-fuzz does by default (optimized, AddressSanitizer), where the build is worth
# its time.
# Needs a nightly toolchain and cargo-fuzz (installed, pinned, under target/ when missing).
# A crash fails the run and leaves the input in fuzz/artifacts/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-15}"
case "$seconds" in
  '' | *[!0-9]*)
    echo "fuzz: the time per target must be a whole number of seconds, not '$seconds' (e.g. scripts/fuzz.sh 600)" >&2
    exit 2
    ;;
esac

tools="$PWD/target/test-tools"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  echo "installing test dependencies: cargo-fuzz (cargo install, into $tools)"
  cargo install --quiet cargo-fuzz --version 0.13.1 --locked --root "$tools"
fi
export PATH="$tools/bin:$PATH"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: no nightly toolchain (rustup toolchain install nightly); cannot fuzz" >&2
  exit 1
fi

targets=(webhook codecommit_event config_file git_output lfs)
build=()
if [ "$seconds" -le 60 ]; then
  build=(--dev --sanitizer none)
fi
cargo +nightly fuzz build --fuzz-dir fuzz "${build[@]}"
for t in "${targets[@]}"; do
  echo "fuzz: $t for ${seconds}s"
  corpus="target/fuzz-corpus/$t"
  mkdir -p "$corpus"
  log="target/fuzz-corpus/$t.log"
  set +e
  cargo +nightly fuzz run --fuzz-dir fuzz "${build[@]}" "$t" "$corpus" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz: $t found a crash (exit $status); the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
# A closing line any CI reader understands: each target that ran without a crash passed.
echo "fuzz: ${#targets[@]} passed, 0 failed"
