#!/usr/bin/env bash
# Runs the command when a CUDA device is visible; otherwise skips (exit 77), saying why.
if ! "$HAS_GPU" >/dev/null 2>&1; then
  echo "SKIP: no CUDA device is visible (the GPU tests run on the GPU machine)"
  exit 77
fi
exec "$@"
