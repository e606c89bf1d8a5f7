#!/usr/bin/env bash
# Property-based test of the client API against its OpenAPI document (docs/openapi.yaml), with
# schemathesis, on the real gate in front of the project's emulators, on loopback only.
#
# What it does:
#   - installs schemathesis (pinned below) from PyPI with pip into a Python venv: a new one in
#     the temporary directory, or the one at $SCHEMA_VENV, created there if it is missing and
#     reused when it already holds the pinned version;
#   - starts `signal-gate emulate` (signal-server's verification API and hCaptcha's siteverify,
#     test secret and site key) and `signal-gate serve` configured by SIGNAL_GATE_* variables,
#     with a fresh SQLite file and address, block, prefix and country budgets large enough that
#     the run is not all 429 (the per-number budget, send schedule and wrong-code budgets keep
#     their defaults, so their 429s are exercised too);
#   - runs `schemathesis run` on docs/openapi.yaml with the server replaced by the gate's real
#     address, all phases (examples, coverage, fuzzing, stateful through the register -> verify
#     link), a fixed seed and at most $SCHEMA_MAX_EXAMPLES test cases per operation and phase,
#     with the checks in $checks below: schemathesis' not_a_server_error,
#     status_code_conformance, response_schema_conformance, content_type_conformance and
#     response_headers_conformance, and retry_after_consistency (tests/schema/hooks.py: on a
#     429 the Retry-After header equals the body's retryAfter; no other answer but
#     upstream_rejected has Retry-After);
#   - loads tests/schema/hooks.py into schemathesis: just before a request is sent, about half
#     the register requests get a fresh token from the hCaptcha emulator and most of those a
#     valid phone number, and verify requests get the number (and sometimes the delivered code)
#     of a session the gate created; without that, generated data never gets past the captcha
#     and the 200 answers and signal-server's relayed refusals would go untested. The checks
#     still judge every answer against the document.
#
# It builds nothing: it runs ${SIGNAL_GATE_BIN:-target/debug/signal-gate} (scripts/test.sh runs
# the cargo tests first, which build it; otherwise `cargo build --locked`).
#
# Output: schemathesis' own report (each line prefixed with "# "), the figures of the run
# (test cases, check runs, answers by status and code), then one line per counted check and
# exactly one line "N passed, M failed". The counted checks (tests/schema/summarize.py):
#   - per operation (POST /v1/register, POST /v1/verify) and per schemathesis check in
#     $checks: passed when the check ran on at least one answer of that operation and never
#     failed (requests with another method, which the coverage phase sends to the same path,
#     count towards that operation);
#   - per operation: at least one answer was a 200, so the success schemas were checked;
#   - schemathesis finished its run without errors and its exit status agrees;
#   - after the run, the gate and both emulators still answer.
# A set-up step that fails counts as one failed check and ends the run. The exit status is
# non-zero if any check failed. Every process it started is stopped on exit (trap EXIT); the
# temporary directory is kept (and named) when something failed.
#
# Settings (environment):
#   SIGNAL_GATE_BIN       the signal-gate binary (default target/debug/signal-gate)
#   SCHEMA_OPENAPI        another OpenAPI document to test (default docs/openapi.yaml)
#   SCHEMA_VENV           a venv to reuse or create (default: a new one, removed at the end)
#   SCHEMA_PYTHON         the Python that creates the venv (default python3)
#   SCHEMA_MAX_EXAMPLES   test cases per operation and phase (default 200)
#   SCHEMA_SEED           schemathesis' and the hooks' seed (default 20261204)
#   SCHEMA_TIME_LIMIT     seconds after which schemathesis is stopped and the run fails
#                         (default 300; a run takes well under a minute on 2 cores)
set -uo pipefail

caller_dir=$PWD
cd "$(dirname "$0")/../.." || exit 2
repo=$PWD

SCHEMATHESIS_VERSION=4.32.5

# Counting checks, stopping processes on exit, ports, emulators: shared with the schema test.
# shellcheck source=tests/lib/harness.sh
source "$repo/tests/lib/harness.sh"
venv=${SCHEMA_VENV:-}
if [[ -n $venv && $venv != /* ]]; then venv=$caller_dir/$venv; fi
python=${SCHEMA_PYTHON:-python3}
max_examples=${SCHEMA_MAX_EXAMPLES:-200}
seed=${SCHEMA_SEED:-20261204}
time_limit=${SCHEMA_TIME_LIMIT:-300}

schema=${SCHEMA_OPENAPI:-$repo/docs/openapi.yaml}
[[ $schema == /* ]] || schema=$caller_dir/$schema
hooks=$repo/tests/schema/hooks.py
summarize=$repo/tests/schema/summarize.py
checks=not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance,response_headers_conformance,retry_after_consistency

GENEROUS=100000/1h

# ---------------------------------------------------------------------------------- set-up

require_curl_and_binary
for file in "$schema" "$hooks" "$summarize"; do
    [[ -f $file ]] || setup_failed "missing $file"
done
[[ $max_examples =~ ^[1-9][0-9]*$ ]] || setup_failed "SCHEMA_MAX_EXAMPLES must be a positive integer"
[[ $seed =~ ^[0-9]+$ ]] || setup_failed "SCHEMA_SEED must be a non-negative integer"
[[ $time_limit =~ ^[1-9][0-9]*$ ]] || setup_failed "SCHEMA_TIME_LIMIT must be a positive integer"

work=$(mktemp -d "${TMPDIR:-/tmp}/signal-gate-schema.XXXXXX") || setup_failed "mktemp"
started=$SECONDS

# schemathesis in a venv, from PyPI.
[[ -n $venv ]] || venv=$work/venv
installed=
if [[ -x $venv/bin/schemathesis ]]; then
    installed=$("$venv/bin/python" -m pip show schemathesis 2>/dev/null)
fi
if grep -qx "Version: $SCHEMATHESIS_VERSION" <<<"$installed"; then
    echo "# reusing schemathesis $SCHEMATHESIS_VERSION in $venv"
else
    command -v "$python" >/dev/null || setup_failed "$python not found (set SCHEMA_PYTHON)"
    echo "# installing schemathesis $SCHEMATHESIS_VERSION from PyPI into $venv"
    if [[ ! -x $venv/bin/python ]]; then
        "$python" -m venv "$venv" >"$work/venv.log" 2>&1 ||
            setup_failed "$python -m venv $venv failed (Debian: apt-get install python3-venv)"
    fi
    "$venv/bin/python" -m pip install --disable-pip-version-check -q \
        "schemathesis==$SCHEMATHESIS_VERSION" >"$work/pip.log" 2>&1 ||
        setup_failed "pip install schemathesis==$SCHEMATHESIS_VERSION failed"
fi
st_version=$("$venv/bin/schemathesis" --version 2>/dev/null) ||
    setup_failed "schemathesis in $venv does not run"
echo "# $st_version, signal-gate at $bin"

free_port || setup_failed "no free port"; signal_port=$REPLY
free_port || setup_failed "no free port"; hcaptcha_port=$REPLY
free_port || setup_failed "no free port"; gate_port=$REPLY
free_port || setup_failed "no free port"; admin_port=$REPLY

signal_url=http://127.0.0.1:$signal_port
hcaptcha_url=http://127.0.0.1:$hcaptcha_port
gate_url=http://127.0.0.1:$gate_port
admin_url=http://127.0.0.1:$admin_port

# The emulators.
start_emulators "$signal_port" "$hcaptcha_port"

# The gate, configured only by its environment.
mkdir -m 0700 "$work/db"
env -i PATH="$PATH" HOME="$work" \
    SIGNAL_GATE_LISTEN="127.0.0.1:$gate_port" \
    SIGNAL_GATE_ADMIN__LISTEN="127.0.0.1:$admin_port" \
    SIGNAL_GATE_UPSTREAM__URL="$signal_url" \
    SIGNAL_GATE_HCAPTCHA__SECRET="$SECRET" \
    SIGNAL_GATE_HCAPTCHA__SITEKEY="$SITEKEY" \
    SIGNAL_GATE_HCAPTCHA__VERIFY_URL="$hcaptcha_url/siteverify" \
    SIGNAL_GATE_NUMBER_KEY="schema-test-number-key-0123456789abcdef" \
    SIGNAL_GATE_DATABASE__URL="sqlite://$work/db/gate.db" \
    SIGNAL_GATE_LIMITS__REGISTER_PER_IP="$GENEROUS" \
    SIGNAL_GATE_LIMITS__VERIFY_PER_IP="$GENEROUS" \
    SIGNAL_GATE_LIMITS__REGISTER_PER_BLOCK="$GENEROUS" \
    SIGNAL_GATE_LIMITS__REGISTER_PER_PREFIX="$GENEROUS" \
    SIGNAL_GATE_LIMITS__REGISTER_PER_COUNTRY="$GENEROUS" \
    "$bin" serve >"$work/gate.log" 2>&1 &
gate_pid=$!
pids+=("$gate_pid")
wait_until_ready "$gate_pid" "$admin_url"

echo "# emulators $signal_url and $hcaptcha_url, gate $gate_url (admin $admin_url), work $work"

# ------------------------------------------------------------------------------ the run

echo "# schemathesis run ${schema#"$repo"/} --url $gate_url --max-examples $max_examples --seed $seed"
report=$work/report.ndjson
run_started=$SECONDS
# From the work directory, so that nothing schemathesis or Hypothesis writes lands in the repo.
(
    cd "$work" &&
        SCHEMATHESIS_HOOKS=$hooks \
        SG_SCHEMA_HCAPTCHA_URL=$hcaptcha_url \
        SG_SCHEMA_SIGNAL_URL=$signal_url \
        SG_SCHEMA_SITEKEY=$SITEKEY \
        SG_SCHEMA_SEED=$seed \
        SG_SCHEMA_HOOK_STATS=$work/hooks.json \
        timeout --kill-after=10 "$time_limit" \
        "$venv/bin/schemathesis" run "$schema" \
        --url "$gate_url" \
        --checks "$checks" \
        --max-examples "$max_examples" \
        --seed "$seed" \
        --workers 1 \
        --request-timeout 30 \
        --generation-database none \
        --no-color \
        --report ndjson --report-ndjson-path "$report"
) >"$work/schemathesis.log" 2>&1
st_status=$?
run_seconds=$((SECONDS - run_started))
sed 's/^/# /' "$work/schemathesis.log"
echo "# schemathesis exited $st_status after ${run_seconds}s"

if ((st_status == 124 || st_status == 137)); then
    not_ok "schemathesis finished within SCHEMA_TIME_LIMIT=${time_limit}s"
fi
if [[ -s $report ]]; then
    verdicts=$("$venv/bin/python" "$summarize" "$report" "$checks" "$st_status" "$work/hooks.json")
    summarize_status=$?
    grep -v -e '^ok   - ' -e '^FAIL - ' <<<"$verdicts"
    while IFS= read -r line; do
        case $line in
        'ok   - '*) ok "${line#ok   - }" ;;
        'FAIL - '*) not_ok "${line#FAIL - }" ;;
        esac
    done <<<"$verdicts"
    ((summarize_status == 0)) || not_ok "tests/schema/summarize.py exited $summarize_status"
else
    not_ok "schemathesis wrote its report ($report)"
fi

# ------------------------------------------------------------------------ after the run

if alive "$gate_pid" && curl -sf -o /dev/null --max-time 5 "$admin_url/readyz"; then
    ok "the gate is still ready after the run"
else
    not_ok "the gate is still ready after the run"
fi
if curl -sf -o /dev/null --max-time 5 "$signal_url/emulator/stats" &&
    curl -sf -o /dev/null --max-time 5 "$hcaptcha_url/emulator/stats"; then
    ok "both emulators still answer after the run"
else
    not_ok "both emulators still answer after the run"
fi
errors=$(grep -c '"level":"ERROR"' "$work/gate.log")
echo "# gate log: $errors ERROR lines; whole test ${SECONDS}s (set-up $((run_started - started))s)"
grep '"level":"ERROR"' "$work/gate.log" | head -n 5 | sed 's/^/#   /'

summary_and_exit
