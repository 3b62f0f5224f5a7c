#!/usr/bin/env bash
# Run edge-ee-run on an arm64 Debian root under qemu-aarch64 and check that every sample
# takes the same exit with the same prediction as the x86 run of the same bundle.
#
#   scripts/aarch64_check.sh BUNDLE [INPUT.npz]
#
# Needs root (apt-get, debootstrap), the Debian archive and PyPI. Steps, each cached under
# $EDGE_EE_AARCH64_DIR (default /var/tmp/edge-ee-aarch64), so a rerun only runs the check:
#   1. qemu-user >= 10 from bookworm-backports (bookworm's 7.2 crashes in onnxruntime >= 1.28)
#      and debootstrap, from apt;
#   2. an arm64 bookworm root: debootstrap --arch=arm64 --foreign --variant=minbase with
#      python3, every downloaded .deb unpacked (no second stage: it needs binfmt_misc,
#      which containers rarely have; qemu-aarch64 -L runs the root's python directly);
#   3. arm64 wheels of numpy, pyyaml, onnxruntime, ai-edge-litert (pip download
#      --platform ...aarch64 --only-binary=:all: on the host, versions from
#      constraints.txt), installed inside with the root's python3 under qemu;
#   4. the device_runners package copied in, edge-ee-run on the host and under
#      QEMU_CPU=cortex-a72 (a Pi 4's core) for each backend the bundle's formats allow
#      (override with EDGE_EE_AARCH64_BACKENDS="onnxruntime tflite"), then a comparison.
# Emulated timings are meaningless; only the decisions are compared.
#
# EDGE_EE_AARCH64_PYZ=1: instead of steps 3-4's pip-installed site, pack the self-contained
# runner (`edge-ee pack-runner --platform linux_aarch64 --python 3.11`, numpy, pyyaml and
# onnxruntime vendored, wheels from PyPI on the host) and run it with the root's plain
# python3 -I (nothing pip-installed in the root; the archive extracts its libraries to
# $WORK/shiv), onnxruntime backend only.
set -euo pipefail

BUNDLE=$(realpath "${1:?usage: scripts/aarch64_check.sh BUNDLE [INPUT.npz]}")
INPUT=${2:-}
[ -n "$INPUT" ] && INPUT=$(realpath "$INPUT")
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${EDGE_EE_AARCH64_DIR:-/var/tmp/edge-ee-aarch64}
ROOT=$WORK/root
WHEELS=$WORK/wheels
# host paths into the root: qemu -L maps reads of /x to $ROOT/x when that exists, but files
# are created at the path as given, so everything is addressed through $ROOT explicitly
OPT=$ROOT/opt/edge-ee
SITE=$OPT/site
HOST_PY=${PYTHON:-$REPO/.venv/bin/python}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
export QEMU_CPU=cortex-a72
mkdir -p "$WORK"
t_start=$(date +%s)
log() { echo "[aarch64 $(( $(date +%s) - t_start ))s] $*"; }

qemu_major() { qemu-aarch64 --version 2>/dev/null | sed -n 's/.*version \([0-9]*\).*/\1/p' | head -1; }

# 1. qemu-user 10.x and debootstrap ------------------------------------------------------
if [ "$(qemu_major || echo 0)" -lt 10 ] 2>/dev/null || ! command -v qemu-aarch64 >/dev/null; then
    log "installing qemu-user from ${SUITE}-backports and debootstrap"
    if ! grep -rqs "${SUITE}-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "deb $MIRROR ${SUITE}-backports main" > /etc/apt/sources.list.d/${SUITE}-backports.list
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t "${SUITE}-backports" qemu-user >/dev/null
fi
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
log "$(qemu-aarch64 --version | head -1), QEMU_CPU=$QEMU_CPU"

# 2. the arm64 root ----------------------------------------------------------------------
if [ ! -x "$ROOT/usr/bin/python3.11" ]; then
    log "debootstrap --arch=arm64 --foreign --variant=minbase $SUITE (+python3)"
    rm -rf "$ROOT"
    debootstrap --arch=arm64 --foreign --variant=minbase --include=python3 "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log"
    for deb in "$ROOT"/var/cache/apt/archives/*.deb; do dpkg-deb -x "$deb" "$ROOT"; done
fi
APY=("qemu-aarch64" "-L" "$ROOT" "$ROOT/usr/bin/python3.11")
log "arm64 python: $("${APY[@]}" -c 'import platform, sys; print(platform.machine(), sys.version.split()[0])')"

PYZ_MODE=${EDGE_EE_AARCH64_PYZ:-0}
RUN_ARGS=(--mode single --threads 1 --warmup-runs 1 --min-runs 1 --min-duration-s 0 --quiet)
[ -n "$INPUT" ] && RUN_ARGS+=(--input "$INPUT")
if [ "$PYZ_MODE" = 1 ]; then
    # 3'. the self-contained runner, run by the root's bare python3 -----------------------
    PYZ=$WORK/edge-ee-run-aarch64.pyz
    log "edge-ee pack-runner --platform linux_aarch64 --python 3.11 (wheels from the index)"
    (cd "$REPO" && PYTHONPATH="$REPO" "$HOST_PY" -m edge_ee.cli pack-runner --platform linux_aarch64 \
        --python 3.11 --glibc 2.36 --out "$PYZ")
    if "${APY[@]}" -I -c "import numpy" 2>/dev/null; then
        echo "the arm64 root's python3 has numpy: not a bare device" >&2; exit 1
    fi
    log "arm64 root python3 -I: no numpy, yaml or onnxruntime importable"
    log "edge-ee-run --backend onnxruntime: x86 (installed)"
    (cd "$REPO" && "$HOST_PY" -m device_runners.cli "$BUNDLE" --backend onnxruntime \
        --out "$WORK/x86-pyz.json" "${RUN_ARGS[@]}")
    log "python3 -I edge-ee-run-aarch64.pyz --backend onnxruntime: arm64 under qemu"
    rm -rf "$WORK/shiv"
    SHIV_ROOT=$WORK/shiv "${APY[@]}" -I "$PYZ" "$BUNDLE" --backend onnxruntime \
        --out "$WORK/arm64-pyz.json" "${RUN_ARGS[@]}"
    log "extracted to $(ls -d "$WORK"/shiv/*/ | head -1) ($(du -sh "$WORK/shiv" | cut -f1))"
    BACKENDS=(pyz)
fi

# 3. arm64 wheels, installed inside ------------------------------------------------------
PKGS=(numpy pyyaml onnxruntime ai-edge-litert)
if [ "$PYZ_MODE" != 1 ] && [ ! -f "$SITE/.installed" ]; then
    log "pip download (aarch64 wheels): ${PKGS[*]}"
    mkdir -p "$WHEELS"
    "$HOST_PY" -m pip download -q --only-binary=:all: --implementation cp --python-version 3.11 \
        --abi cp311 --abi abi3 --abi none \
        $(for v in $(seq 36 -1 17); do printf -- "--platform manylinux_2_%s_aarch64 " "$v"; done) \
        --platform manylinux2014_aarch64 --platform any \
        -c "$REPO/constraints.txt" -d "$WHEELS" "${PKGS[@]}" pip
    log "pip install inside the arm64 root (under qemu)"
    PIPWHL=$(ls "$WHEELS"/pip-*.whl | head -1)
    "${APY[@]}" "$PIPWHL/pip" install -q --no-index --find-links "$WHEELS" --target "$SITE" \
        --no-compile --disable-pip-version-check --root-user-action=ignore "${PKGS[@]}"
    touch "$SITE/.installed"
fi

# 4. the runner, on x86 and on arm64 -------------------------------------------------------
if [ "$PYZ_MODE" != 1 ]; then
rm -rf "$OPT/device_runners"
mkdir -p "$OPT"
cp -r "$REPO/device_runners" "$OPT/"
find "$OPT/device_runners" -name __pycache__ -prune -exec rm -rf {} +
"${APY[@]}" -c "import sys; sys.path[:0] = ['$SITE', '$OPT']
import importlib.util, numpy, onnxruntime, ai_edge_litert, device_runners
print('arm64 site:', 'numpy', numpy.__version__, '| onnxruntime', onnxruntime.__version__, '| torch importable:', importlib.util.find_spec('torch') is not None)"

if [ -n "${EDGE_EE_AARCH64_BACKENDS:-}" ]; then
    read -r -a BACKENDS <<<"$EDGE_EE_AARCH64_BACKENDS"
else
    read -r -a BACKENDS <<<"$("$HOST_PY" - "$BUNDLE" <<'EOF'
import sys
from device_runners.backends import format_backends
from device_runners.manifest import load_bundle
fb = format_backends(); print(" ".join(fb[f] for f in load_bundle(sys.argv[1]).formats if f in fb))
EOF
)"
fi
for b in "${BACKENDS[@]}"; do
    log "edge-ee-run --backend $b: x86"
    (cd "$REPO" && "$HOST_PY" -m device_runners.cli "$BUNDLE" --backend "$b" --out "$WORK/x86-$b.json" "${RUN_ARGS[@]}")
    log "edge-ee-run --backend $b: arm64 under qemu"
    PYTHONPATH="$SITE:$OPT" "${APY[@]}" -m device_runners.cli "$BUNDLE" --backend "$b" \
        --out "$WORK/arm64-$b.json" "${RUN_ARGS[@]}" 2> >(grep -v "XNNPACK delegate" >&2)
done
fi

log "compare"
"$HOST_PY" - "$WORK" "${BACKENDS[@]}" <<'EOF'
import json, sys
work, backends = sys.argv[1], sys.argv[2:]
bad = 0
for b in backends:
    x, a = (json.load(open(f"{work}/{m}-{b}.json")) for m in ("x86", "arm64"))
    sx, sa = x["samples"], a["samples"]
    n = len(sx["exit"])
    same_exit = sum(p == q for p, q in zip(sx["exit"], sa["exit"]))
    same_pred = sum(p == q for p, q in zip(sx["prediction"], sa["prediction"]))
    ok = n == len(sa["exit"]) and same_exit == n and same_pred == n
    bad += not ok
    print(f"{b:17s} samples {n:4d}  exits equal {same_exit}/{n}  predictions equal {same_pred}/{n}  "
          f"arm64: {a['environment'].get('machine', '?')} {a['backend']['version']}  "
          f"self-check {a['self_check']['passed'] if a.get('self_check') else 'skipped'}  "
          f"{'OK' if ok else 'MISMATCH'}")
    print(f"{'':17s} arm64 runner from {a['environment'].get('runner_file')} "
          f"(python {a['environment'].get('python')}, numpy {a['environment'].get('numpy')})")
sys.exit(1 if bad else 0)
EOF
log "done"
