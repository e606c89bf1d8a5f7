#!/usr/bin/env bash
# The project's test command: everything the tests need, then every test.
# Runs from any directory; installs nothing that is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --locked --all-targets

# The example nginx site in front of the gate built above (target/debug/signal-gate).
bash tests/nginx/run.sh

# The client API against its OpenAPI document (docs/openapi.yaml), with schemathesis from PyPI,
# on the same binary.
bash tests/schema/run.sh
