#!/usr/bin/env bash
# Fetch the ONNX Runtime C/C++ API headers for cpp/ (lhcml-infer) into build/cpp/deps/.
#
# Why this way (docs/benchmarks/cpp.md, "Runtime"): no package of Debian bookworm ships ONNX
# Runtime; the PyPI `onnxruntime` wheel (already a dependency of lhcml[ml]) ships the shared
# library with the C API (libonnxruntime.so.1.x, exports OrtGetApiBase) but no headers; the
# headers are Debian trixie's `libonnxruntime-dev`, a header-only package (its library is the
# separate libonnxruntime1.21, which we do not install: it needs trixie's glibc). ORT's C API is
# versioned and append-only, so headers of C-API version N work with any library >= N.
#
# The .deb is downloaded with apt-get from the Debian archive through a private apt
# configuration (its own sources and lists under build/cpp/deps/apt): the system's apt sources
# are not touched and nothing is installed system-wide. Idempotent; needs root only for apt's
# sandbox user, which is switched off here.
set -euo pipefail
cd "$(dirname "$0")/.."
deps=build/cpp/deps
inc="$deps/onnxruntime/usr/include/onnxruntime"
if [ -f "$inc/onnxruntime_cxx_api.h" ]; then
  echo "cpp/fetch_deps.sh: ONNX Runtime headers present in $inc"
  exit 0
fi
command -v apt-get >/dev/null || { echo "cpp/fetch_deps.sh: apt-get (Debian/Ubuntu) is needed to download libonnxruntime-dev" >&2; exit 1; }
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || { echo "cpp/fetch_deps.sh: $keyring missing (apt-get install debian-archive-keyring)" >&2; exit 1; }
apt="$PWD/$deps/apt"
mkdir -p "$apt/sources" "$apt/lists/partial" "$apt/cache/archives/partial" "$deps/debs"
cat > "$apt/sources/trixie.sources" <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: $keyring
SRC
opts=(-o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$apt/sources"
      -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
      -o "Dir::State::status=/var/lib/dpkg/status" -o "APT::Sandbox::User=root"
      -o "Debug::NoLocking=1")
apt-get "${opts[@]}" update -qq
(cd "$deps/debs" && apt-get "${opts[@]}" download libonnxruntime-dev)
deb=$(ls "$deps"/debs/libonnxruntime-dev_*.deb | head -1)
rm -rf "$deps/onnxruntime.tmp"
dpkg-deb -x "$deb" "$deps/onnxruntime.tmp"
mv "$deps/onnxruntime.tmp" "$deps/onnxruntime"
echo "cpp/fetch_deps.sh: $(basename "$deb") -> $inc"
