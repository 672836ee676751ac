#!/usr/bin/env bash
# Build this package's TensorRT engine on the device it will run on, with trtexec, then prove it with run.py.
#
#   ./build_on_device.sh [--precision fp32|fp16|int8] [--dla N] [--no-selftest]
#
# TensorRT engines are tied to the GPU and TensorRT version that built them, so the package carries ONNX files and
# this script picks the trtexec flags for the TensorRT it finds. What the flags rest on (checked in NVIDIA's docs):
# - "Migrating trtexec Usage from TensorRT 10.x to 11.x" (TensorRT 11.0.0 and 11.4.1 migration guide): 11 removed
#   --fp16 --int8 --bf16 --fp8 --int4 --best and --calib; every network is strongly typed, --stronglyTyped is no
#   longer needed. Precision comes from the ONNX: Q/DQ nodes for INT8, an FP16 ONNX for FP16.
# - trtexec README (NVIDIA/TensorRT samples/trtexec): --stronglyTyped (opt-in on 10; no --int8/--best with it),
#   --minShapes/--optShapes/--maxShapes, --useDLACore=N with --allowGPUFallback, --skipInference, --loadInputs,
#   --exportTimes. --timingCacheFile loads the timing cache if it exists and saves it after the build.
# - DLA: TensorRT 10 on Orin has it; 11.0-11.3 none; 11.4+ only on AGX Orin with JetPack 7.2.2+ (Thor has no DLA).
# - TensorRT per JetPack: 6.1/6.2 -> 10.3; 7.0/7.1 (Thor) -> 10.13; 7.2 -> 10.16; 11 on Jetson from JetPack 7.2.2.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# trt.env is written by `medexport package`: PACKAGE_TARGET, INPUT_NAME, SAMPLE_SHAPE, DYNAMIC_BATCH, OPT_BATCH,
# MAX_BATCH, ONNX_FP32, ONNX_FP16, ONNX_INT8, DEFAULT_PRECISION
# shellcheck source=/dev/null
. "$HERE/trt.env"

die() { echo "build_on_device.sh: error: $*" >&2; exit 1; }

precision="$DEFAULT_PRECISION"
dla=""
selftest=1
while [ $# -gt 0 ]; do
    case "$1" in
        --precision) [ $# -ge 2 ] || die "--precision needs a value"; precision="$2"; shift 2 ;;
        --precision=*) precision="${1#*=}"; shift ;;
        --dla) [ $# -ge 2 ] || die "--dla needs a core number"; dla="$2"; shift 2 ;;
        --dla=*) dla="${1#*=}"; shift ;;
        --no-selftest) selftest=0; shift ;;
        -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# ---------------------------------------------------------------- which TensorRT is here
TRTEXEC="${TRTEXEC:-$(command -v trtexec || true)}"
[ -n "$TRTEXEC" ] || [ ! -x /usr/src/tensorrt/bin/trtexec ] || TRTEXEC=/usr/src/tensorrt/bin/trtexec
[ -n "$TRTEXEC" ] || die "trtexec not found: install TensorRT (on Jetson: JetPack) or put trtexec on PATH"

# "major.minor" from trtexec's banner "[TensorRT v100300]" (major*10000 + minor*100 + patch), else the Python
# bindings, else the Debian packages
trt_version() {
    local code
    code="$("$TRTEXEC" --version 2>&1 | sed -n 's/.*\[TensorRT v\([0-9]\{5,6\}\)\].*/\1/p' | head -n 1 || true)"
    if [ -n "$code" ]; then
        echo "$((10#$code / 10000)).$((10#$code / 100 % 100))"
        return
    fi
    python3 -c 'import tensorrt; print(".".join(tensorrt.__version__.split(".")[:2]))' 2>/dev/null && return
    dpkg-query -W -f='${Version}\n' libnvinfer-bin 2>/dev/null | sed -n 's/^\([0-9]*\.[0-9]*\).*/\1/p' | head -n 1
}
version="$(trt_version)"
[ -n "$version" ] || die "cannot tell the TensorRT version (trtexec --version, python3 -c 'import tensorrt', dpkg -l | grep nvinfer all failed)"
major="${version%%.*}"
minor="${version#*.}"

# the device: Jetson model and JetPack version (overridable for a dry run on another machine)
DEVICE_MODEL="${DEVICE_MODEL:-$(tr -d '\0' </proc/device-tree/model 2>/dev/null || true)}"
JETPACK_VERSION="${JETPACK_VERSION:-$(dpkg-query -W -f='${Version}' nvidia-jetpack 2>/dev/null | sed 's/-.*//' || true)}"

# version_ge A B: A >= B for dotted versions
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

case "$major" in
    10|11) ;;
    *) die "TensorRT $version is not supported by this package (it needs TensorRT 10 or 11)" ;;
esac
if [ "$PACKAGE_TARGET" = jetson ] && [ "$major" = 11 ] && [ -n "$JETPACK_VERSION" ] \
        && ! version_ge "$JETPACK_VERSION" 7.2.2; then
    die "TensorRT 11 on Jetson needs JetPack 7.2.2 or later (found JetPack $JETPACK_VERSION)"
fi

# medexport's readiness check found an ONNX file of this package that this TensorRT's parser would not take
for v in ${NOT_READY_FOR:-}; do
    if [ "$v" = "$major.$minor" ] || [ "$v" = "$major" ]; then
        die "an ONNX file of this package fails the TensorRT $v readiness check (see package.json: tensorrt_readiness)"
    fi
done

# ---------------------------------------------------------------- precision: from the ONNX on 11, flags on 10
flags=()
case "$precision" in
    fp32) onnx="$ONNX_FP32" ;;
    fp16)
        if [ "$major" = 11 ]; then
            onnx="$ONNX_FP16"   # strongly typed: the FP16 ONNX is what makes it FP16
            [ -n "$onnx" ] || die "this package has no FP16 ONNX, which TensorRT 11 needs for FP16 (build it with --precision fp16)"
        else
            onnx="$ONNX_FP32"; flags+=(--fp16)
        fi ;;
    int8)
        onnx="$ONNX_INT8"
        [ -n "$onnx" ] || die "this package has no INT8 Q/DQ ONNX (build it with --precision int8)"
        # explicit quantization: the Q/DQ ONNX, strongly typed (opt-in on 10, always on 11)
        [ "$major" = 11 ] || flags+=(--stronglyTyped) ;;
    *) die "unknown precision '$precision' (fp32, fp16 or int8)" ;;
esac

# ---------------------------------------------------------------- DLA only where it exists
if [ -n "$dla" ]; then
    case "$dla" in *[!0-9]*|"") die "--dla takes a core number (0 or 1), got '$dla'" ;; esac
    [ "$PACKAGE_TARGET" = jetson ] || die "DLA exists only on Jetson Orin; this package is for $PACKAGE_TARGET"
    case "$DEVICE_MODEL" in
        *Orin*) ;;
        *) die "DLA needs a Jetson Orin (this device: ${DEVICE_MODEL:-unknown})" ;;
    esac
    [ "$precision" != fp32 ] || die "DLA runs FP16 or INT8 only: pass --precision fp16 or int8 with --dla"
    if [ "$major" = 11 ]; then
        [ "$minor" -ge 4 ] || die "TensorRT $version has no DLA support (11.0-11.3); use TensorRT 10 or 11.4+"
        case "$DEVICE_MODEL" in
            *AGX*) ;;
            *) die "TensorRT $version supports DLA only on Jetson AGX Orin (this device: $DEVICE_MODEL)" ;;
        esac
        { [ -n "$JETPACK_VERSION" ] && version_ge "$JETPACK_VERSION" 7.2.2; } \
            || die "DLA with TensorRT $version needs JetPack 7.2.2 or later (found ${JETPACK_VERSION:-unknown})"
    fi
    flags+=("--useDLACore=$dla" --allowGPUFallback)
fi

# ---------------------------------------------------------------- shapes: the dynamic batch (3D: the patch shape)
if [ "$DYNAMIC_BATCH" = 1 ]; then
    flags+=("--minShapes=$INPUT_NAME:1x$SAMPLE_SHAPE" "--optShapes=$INPUT_NAME:${OPT_BATCH}x$SAMPLE_SHAPE"
            "--maxShapes=$INPUT_NAME:${MAX_BATCH}x$SAMPLE_SHAPE")
fi

mkdir -p "$HERE/engines"
engine="$HERE/engines/model.$precision.plan"
cache="$HERE/engines/timing.cache"   # saved by the first build, reused (and extended) by the next ones
echo "TensorRT $version, $precision from $onnx -> engines/model.$precision.plan"
"$TRTEXEC" "--onnx=$HERE/$onnx" "--saveEngine=$engine" "--timingCacheFile=$cache" --skipInference "${flags[@]}" \
    || die "trtexec failed to build the $precision engine (TensorRT $version)"
[ -s "$engine" ] || die "trtexec reported success but wrote no engine at $engine"
printf '{"tensorrt": "%s", "precision": "%s", "onnx": "%s", "dla": "%s", "flags": "%s"}\n' \
    "$version" "$precision" "$onnx" "$dla" "${flags[*]}" >"$HERE/engines/model.$precision.json"

if [ "$selftest" = 1 ]; then
    python3 "$HERE/run.py" selftest --precision "$precision"
fi
