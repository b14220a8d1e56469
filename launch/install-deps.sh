#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages dinfer needs to build and test, skipping what is already
# there (found by pkg-config or on PATH, so a machine with the libraries unpacked elsewhere, such
# as the GPU machine's .devdeps, installs nothing). Used by launch/quickstart.sh and tests/run.sh.
# The CUDA Toolkit is not installed here: the CUDA code is built when nvcc is found.
set -euo pipefail

missing=()
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_pc()  { pkg-config --exists "$1" 2>/dev/null || missing+=("$2"); }

need_cmd cc build-essential
need_cmd cmake cmake
need_cmd pkg-config pkg-config
need_cmd mpirun openmpi-bin
need_cmd mpicc libopenmpi-dev
need_cmd protoc-c protobuf-c-compiler
need_cmd curl curl   # the HTTP tests' client
need_cmd jq jq       # and their JSON reader
need_cmd promtool prometheus  # checks /metrics (its server is not started)
if command -v pkg-config >/dev/null 2>&1; then
  need_pc libprotobuf-c libprotobuf-c-dev
  need_pc cmocka libcmocka-dev
  need_pc libcjson libcjson-dev
  need_pc libpcre2-8 libpcre2-dev
  need_pc libutf8proc libutf8proc-dev
  need_pc libmicrohttpd libmicrohttpd-dev
else
  missing+=(libprotobuf-c-dev libcmocka-dev libcjson-dev libpcre2-dev libutf8proc-dev libmicrohttpd-dev)
fi
# Ninja is optional (faster builds); make is the fallback.

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
