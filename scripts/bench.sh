#!/usr/bin/env bash
# The benchmark of docs/benchmarks.md, from a fresh clone: installs wrk and nginx from Debian
# when they are missing (that needs root), builds in release mode, then runs
#   1. the side-by-side run (examples/bench): refusal floods against nginx limit_req and a
#      bare actix-web handler, memory under a million new addresses, time in the gate, SQLite
#      decisions under 64 clients, start-up and idle memory;
#   2. the WebSocket pass-through run (examples/ws_bench);
#   3. with --micro, the criterion hot-path benchmarks (benches/hot_path.rs).
# Every server listens on 127.0.0.1 only. Arguments after the flags go to examples/bench, for
# example `scripts/bench.sh --rounds 3 --seconds 3 --keys 200000` for a shorter run.
set -euo pipefail

cd "$(dirname "$0")/.."

micro=no
if [[ ${1:-} == --micro ]]; then
    micro=yes
    shift
fi

missing=()
command -v wrk >/dev/null || missing+=(wrk)
[[ -x /usr/sbin/nginx || -x /usr/local/sbin/nginx ]] || command -v nginx >/dev/null ||
    missing+=(nginx-light)
command -v taskset >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
    if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
        echo "bench: missing ${missing[*]}; install them (apt-get install ${missing[*]})" >&2
        exit 1
    fi
    echo "# installing ${missing[*]} from Debian"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi

echo "# building in release mode"
cargo build --release --locked --bin signal-gate --example bare_actix --example bench \
    --example ws_bench

client_core=()
if (($(nproc) >= 2)); then client_core=(taskset -c 1); fi

"${client_core[@]}" target/release/examples/bench "$@"

echo
echo "### WebSocket pass-through (examples/ws_bench)"
echo
# An unauthenticated idle socket takes one descriptor in the gate; an account's socket is
# relayed at once and takes two. Stay under the process limit.
limit=$(ulimit -Hn)
idle=10000
relayed=10000
if [[ $limit != unlimited ]]; then
    ulimit -Sn "$limit"
    if ((limit < idle + 100)); then idle=$((limit - 100)); fi
    if ((limit < 2 * relayed + 100)); then
        relayed=$(((limit - 100) / 2))
        echo "(descriptor limit $limit per process: $relayed relayed account sockets, not 10,000)"
    fi
else
    ulimit -Sn $((2 * relayed + 100))
fi
"${client_core[@]}" target/release/examples/ws_bench "$idle" "$relayed"

if [[ $micro == yes ]]; then
    cargo bench --locked --bench hot_path
fi
