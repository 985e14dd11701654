#!/usr/bin/env bash
# Coverage-guided fuzzing of husk's parsers of hostile input (the targets are
# in fuzz/src, wrapped for libFuzzer in fuzz/libfuzzer), with cargo-fuzz on
# the nightly toolchain and AddressSanitizer.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]    # default: 600 s, all
#
# New inputs and crash artefacts go to $HUSK_FUZZ_DIR/<target>/ (default
# /var/cache/husk/fuzz), outside the checkout; the committed seed corpus
# fuzz/corpus/<target>/ is read, never written. To keep a new input as a
# regression test, copy it into fuzz/corpus/<target>/: the husk-fuzz tests
# (part of scripts/test.sh) replay that corpus on the stable toolchain.
# Prints one summary line per target (runs, coverage, crashes).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SECONDS_PER_TARGET="${1:-600}"
shift || true
FUZZ_DIR="${HUSK_FUZZ_DIR:-$HUSK_CACHE/fuzz}"
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    mapfile -t TARGETS < <(sed -n 's/^name = "\(.*\)"$/\1/p' "$HUSK_REPO/fuzz/libfuzzer/Cargo.toml" | grep -v '^husk-fuzz')
fi
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd "$HUSK_REPO/fuzz/libfuzzer"
log "building ${#TARGETS[@]} fuzz targets"
cargo +nightly fuzz build --fuzz-dir .
status=0
for t in "${TARGETS[@]}"; do
    work="$FUZZ_DIR/$t"
    mkdir -p "$work/corpus" "$work/artifacts"
    log "fuzzing $t for $SECONDS_PER_TARGET s"
    set +e
    touch "$work/started"
    TIMEFORMAT='%U %S'
    { time cargo +nightly fuzz run --fuzz-dir . "$t" "$work/corpus" "$HUSK_REPO/fuzz/corpus/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$work/artifacts/" -print_final_stats=1 >"$work/log" 2>&1 ; } 2>"$work/cpu"
    rc=$?
    set -e
    cpu=$(awk '{ printf "%d", $1 + $2 }' "$work/cpu")
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$work/log" | tail -1)
    crashes=$(find "$work/artifacts" -type f -newer "$work/started" | wc -l)
    echo "$t: exit $rc, ${runs:-?} runs, ${cov:-cov: ?}, ${cpu} CPU-s, $crashes new artefacts in $work/artifacts"
    [ "$rc" -eq 0 ] || status=1
done
exit "$status"
