# Shared by tests/nginx/run.sh and tests/schema/run.sh, sourced from the repository root after
# they set caller_dir (where the test was started) and repo (the repository): the binary under
# test, counting checks, stopping every process on exit, free loopback ports, and starting the
# emulators and the gate's readiness wait. It sets bin, SITEKEY, SECRET, passed, failed, pids
# and work (the temporary directory, empty until the test makes one).

bin=${SIGNAL_GATE_BIN:-target/debug/signal-gate}
if [[ $bin != /* ]]; then
    # An explicit relative SIGNAL_GATE_BIN is read from where the test was started; the
    # default is relative to the repository.
    if [[ -n ${SIGNAL_GATE_BIN:-} ]]; then bin=$caller_dir/$bin; else bin=$repo/$bin; fi
fi

# hCaptcha's published test site key and secret, which the emulator accepts.
SITEKEY=10000000-ffff-ffff-ffff-000000000001
SECRET=0x0000000000000000000000000000000000000000

passed=0
failed=0
pids=()
work=

ok() {
    passed=$((passed + 1))
    printf 'ok   - %s\n' "$1"
}

not_ok() {
    failed=$((failed + 1))
    printf 'FAIL - %s\n' "$1"
}

check() { # check "description" command...
    local description=$1
    shift
    if "$@"; then ok "$description"; else not_ok "$description"; fi
}

summary_and_exit() {
    if ((failed > 0)) && [[ -n $work && -d $work ]]; then
        echo "# logs kept in $work"
    fi
    printf '%d passed, %d failed\n' "$passed" "$failed"
    if ((failed > 0)); then exit 1; fi
    exit 0
}

setup_failed() { # a set-up step failed: count it and stop
    not_ok "set-up: $1"
    if [[ -n $work ]]; then
        local log
        for log in "$work"/*.log "$work"/*/error.log; do
            [[ -s $log ]] || continue
            echo "# --- last lines of $log"
            tail -n 15 "$log" | sed 's/^/# /'
        done
    fi
    summary_and_exit
}

cleanup() {
    local pid i
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${pids[@]}"; do
        for i in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null
        fi
        wait "$pid" 2>/dev/null
    done
    if [[ -n $work && -d $work ]] && ((failed == 0)); then
        rm -rf -- "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Free loopback ports, below the kernel's ephemeral range (so that no outgoing connection of
# a concurrent process can hold one), with no socket on them now, and no two the same.
ephemeral_low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
[[ $ephemeral_low =~ ^[0-9]+$ && $ephemeral_low -gt 12000 ]] || ephemeral_low=32768
declare -A taken=()
free_port() { # sets REPLY
    local port i
    for i in $(seq 500); do
        port=$((10000 + RANDOM % (ephemeral_low - 10000)))
        [[ -n ${taken[$port]:-} ]] && continue
        if command -v ss >/dev/null && [[ -n $(ss -Htan "( sport = :$port )" 2>/dev/null) ]]; then
            continue
        fi
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            taken[$port]=1
            REPLY=$port
            return 0
        fi
    done
    return 1
}

alive() { kill -0 "$1" 2>/dev/null; }

wait_for() { # wait_for pid url: until the url answers at all (any status)
    local pid=$1 url=$2 i
    for i in $(seq 100); do
        alive "$pid" || return 1
        if curl -s -o /dev/null --max-time 1 "$url"; then return 0; fi
        sleep 0.1
    done
    return 1
}

start_emulators() { # start_emulators signal_port hcaptcha_port: both answer, or set-up fails
    "$bin" emulate --signal-port "$1" --hcaptcha-port "$2" >"$work/emulate.log" 2>&1 &
    local pid=$!
    pids+=("$pid")
    wait_for "$pid" "http://127.0.0.1:$1/emulator/stats" ||
        setup_failed "signal-server emulator did not start"
    wait_for "$pid" "http://127.0.0.1:$2/emulator/stats" ||
        setup_failed "hCaptcha emulator did not start"
}

wait_until_ready() { # wait_until_ready pid admin_url: the gate's /readyz answers 200
    local pid=$1 url=$2 i
    for i in $(seq 100); do
        alive "$pid" || break
        if curl -sf -o /dev/null --max-time 1 "$url/readyz"; then return 0; fi
        sleep 0.1
    done
    setup_failed "signal-gate serve did not become ready"
}

require_curl_and_binary() {
    command -v curl >/dev/null || setup_failed "curl is required"
    local build="build it first (cargo build --locked) or set SIGNAL_GATE_BIN"
    [[ -x $bin ]] || setup_failed "signal-gate binary not found at $bin; $build"
}
