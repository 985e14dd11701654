#!/usr/bin/env bash
# Benchmark: pull + convert a multi-layer image from a local registry.
#   husk pull (download, verify, unpack, mkfs.erofs per layer, in parallel)
#   vs  skopeo copy docker:// -> oci: dir, then tar -x + mkfs.erofs per layer.
# Needs root, docker-registry, skopeo, erofs-utils. Writes docs/BENCHMARKS.md
# ("## Images" section, replaced on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
[ "$(id -u)" = 0 ] || { echo "bench-images: needs root" >&2; exit 1; }
for t in docker-registry skopeo mkfs.erofs; do
  command -v "$t" >/dev/null || { echo "bench-images: $t missing" >&2; exit 1; }
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
cargo build --release -p husk >&2
HUSK=$CARGO_TARGET_DIR/release/husk

WORK=$(mktemp -d /var/tmp/husk-bench.XXXXXX)
REG_PID=
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- registry on a free port
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$PORT
YML
docker-registry serve "$WORK/registry.yml" >/dev/null 2>&1 &
REG_PID=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done

# --- a 4-layer gzip image as an OCI layout, pushed with skopeo
LAYOUT=$WORK/layout
mkdir -p "$LAYOUT/blobs/sha256"
layers_json=""; diff_ids=""; total_tar=0; total_gz=0
for src in usr/share/locale usr/share/doc usr/lib/python3.11 usr/libexec; do
  tar -C / -cf "$WORK/l.tar" "$src"
  diff=$(sha256sum "$WORK/l.tar" | cut -d' ' -f1)
  gzip -1 -c "$WORK/l.tar" >"$WORK/l.tar.gz"
  dig=$(sha256sum "$WORK/l.tar.gz" | cut -d' ' -f1)
  size=$(stat -c %s "$WORK/l.tar.gz")
  total_tar=$((total_tar + $(stat -c %s "$WORK/l.tar"))); total_gz=$((total_gz + size))
  mv "$WORK/l.tar.gz" "$LAYOUT/blobs/sha256/$dig"
  layers_json+="${layers_json:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$dig\",\"size\":$size}"
  diff_ids+="${diff_ids:+,}\"sha256:$diff\""
done
rm -f "$WORK/l.tar"
printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$diff_ids" >"$WORK/config"
cdig=$(sha256sum "$WORK/config" | cut -d' ' -f1); csize=$(stat -c %s "$WORK/config")
mv "$WORK/config" "$LAYOUT/blobs/sha256/$cdig"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' "$cdig" "$csize" "$layers_json" >"$WORK/manifest"
mdig=$(sha256sum "$WORK/manifest" | cut -d' ' -f1); msize=$(stat -c %s "$WORK/manifest")
mv "$WORK/manifest" "$LAYOUT/blobs/sha256/$mdig"
echo '{"imageLayoutVersion":"1.0.0"}' >"$LAYOUT/oci-layout"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"bench"}}]}' "$mdig" "$msize" >"$LAYOUT/index.json"
REF=127.0.0.1:$PORT/bench:1
skopeo copy --quiet --dest-tls-verify=false "oci:$LAYOUT:bench" "docker://$REF" >&2

now() { date +%s.%N; }
mb() { awk -v b="$1" 'BEGIN{printf "%.0f", b/1e6}'; }
rate() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.1f", b/1e6/s}'; }

runs=${RUNS:-3}
husk_times=(); skopeo_times=()
for i in $(seq "$runs"); do
  sync; echo 3 >/proc/sys/vm/drop_caches || true
  root=$WORK/husk-root-$i
  t0=$(now); HUSK_ROOT=$root "$HUSK" pull -q "$REF" >/dev/null; t1=$(now)
  husk_times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')")
  n=$(ls "$root/image/layers/"*.erofs | wc -l); [ "$n" = 4 ] || { echo "husk made $n disks" >&2; exit 1; }
  rm -rf "$root"

  sync; echo 3 >/proc/sys/vm/drop_caches || true
  out=$WORK/skopeo-$i; mkdir -p "$out"
  t0=$(now)
  skopeo copy --quiet --src-tls-verify=false "docker://$REF" "oci:$out/oci:bench" >/dev/null
  for blob in $(python3 -c 'import json,sys; d=sys.argv[1]; i=json.load(open(d+"/index.json")); m=i["manifests"][0]["digest"].split(":")[1]; print(" ".join(l["digest"].split(":")[1] for l in json.load(open(d+"/blobs/sha256/"+m))["layers"]))' "$out/oci"); do
    mkdir -p "$out/x/$blob"
    tar -C "$out/x/$blob" --numeric-owner --xattrs -xzf "$out/oci/blobs/sha256/$blob"
    mkfs.erofs --quiet "$out/$blob.erofs" "$out/x/$blob" >/dev/null
    rm -rf "$out/x/$blob"
  done
  t1=$(now)
  skopeo_times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')")
  rm -rf "$out"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
hm=$(median "${husk_times[@]}"); sm=$(median "${skopeo_times[@]}")

section=$(cat <<MD
## Images

Pull + convert of a 4-layer gzip image (usr/share/locale, usr/share/doc,
usr/lib/python3.11, usr/libexec from the host: $(mb $total_gz) MB compressed,
$(mb $total_tar) MB uncompressed) from Debian's docker-registry on 127.0.0.1,
page cache dropped before each run, median of $runs runs
($(nproc) cores, $(date -u +%Y-%m-%d), scripts/bench-images.sh):

| tool | seconds | MB/s (uncompressed) | MB/s (compressed) | runs (s) |
| --- | --- | --- | --- | --- |
| \`husk pull\` (download + verify + unpack + mkfs.erofs, 3 layers in parallel) | $hm | $(rate $total_tar "$hm") | $(rate $total_gz "$hm") | ${husk_times[*]} |
| \`skopeo copy\` to an OCI dir, then \`tar -x\` + \`mkfs.erofs\` per layer | $sm | $(rate $total_tar "$sm") | $(rate $total_gz "$sm") | ${skopeo_times[*]} |
MD
)
doc=$REPO/docs/BENCHMARKS.md
[ -f "$doc" ] || printf '# Benchmarks\n' >"$doc"
python3 - "$doc" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2].rstrip() + "\n"
text = open(path).read()
pat = re.compile(r"^## Images\n.*?(?=^## |\Z)", re.S | re.M)
text = pat.sub(lambda m: section + "\n", text) if pat.search(text) else text.rstrip() + "\n\n" + section
open(path, "w").write(text)
PY
echo "$section"
