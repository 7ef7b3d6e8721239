#!/usr/bin/env bash
# Coverage-guided fuzzing of the inputs a hostile user controls: plan YAML → validation, trace
# CSV → replay, Prometheus JSON → readings, Go durations, and the PromQL check.
#
#   scripts/fuzz.sh                 # every target for 30 s (FUZZ_SECONDS), as in the test command
#   scripts/fuzz.sh 600 promql      # one target for 10 minutes
#
# libFuzzer (libfuzzer-sys) on the stable toolchain: the coverage instrumentation is plain -C
# flags, so neither nightly nor cargo-fuzz is needed (cargo-fuzz only adds -Zsanitizer on top).
# Seeds are read from fuzz/corpus/<target> (kept in the repository); what the fuzzer learns goes
# to target/fuzz/corpus/<target>, and a crash to target/fuzz/artifacts/<target>/, which fails the
# script: turn the input into a regression test, then fix it.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-${FUZZ_SECONDS:-30}}"
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(plan_yaml trace_csv prometheus_json go_duration promql)
fi

TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
export CARGO_TARGET_DIR="$PWD/target/fuzz"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (they must not be
# instrumented).
echo "==> building fuzz targets (instrumented, release, $TRIPLE)"
BINS=()
for t in "${TARGETS[@]}"; do BINS+=(--bin "$t"); done
(cd fuzz && cargo build --release --locked --target "$TRIPLE" "${BINS[@]}")

status=0
for t in "${TARGETS[@]}"; do
  work="target/fuzz/corpus/$t"
  artifacts="target/fuzz/artifacts/$t"
  mkdir -p "$work" "$artifacts"
  log="target/fuzz/$t.log"
  echo "==> fuzzing $t for ${SECONDS_EACH}s"
  if "target/fuzz/$TRIPLE/release/$t" "$work" "fuzz/corpus/$t" \
      -max_total_time="$SECONDS_EACH" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1)
    echo "    $t: ${runs:-?} runs, ${rate:-?} exec/s, ${cov:-cov: ?}, no crash"
  else
    status=1
    echo "    $t: CRASH (input in $artifacts/); last lines of $log:"
    tail -n 30 "$log" | sed 's/^/      /'
  fi
done
exit $status
