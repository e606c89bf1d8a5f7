#!/usr/bin/env bash
# End-to-end test of the example nginx site (deploy/nginx/signal-gate.conf) in front of the
# real gate and the project's emulators, on loopback only.
#
# What it checks:
#   - a register sent through nginx from 127.0.0.5 with forged X-Forwarded-For and X-Real-IP
#     reaches signal-server (emulator) and hCaptcha (emulator) with the address 127.0.0.5;
#   - nginx replaces X-Forwarded-For, removes X-Real-IP, Forwarded and X-Forwarded-Host, and
#     passes Upgrade only as "websocket" and only on /v1/websocket/ (a second nginx, same
#     routing, in front of a header echo);
#   - a table of spellings of signal-server's /v1/verification API, sent with POST, PATCH
#     and PUT, is refused: by nginx itself when it cannot be read one way (400, no upstream
#     in nginx's access log), otherwise by the gate (403 `use_http_endpoints`, or 404 when
#     the gate's canonical form of the path is not the verification API); none reaches
#     signal-server or moves the emulator's verification counters, and the gate counts the
#     refusals under reason `verification_path`;
#   - sign-up and the WebSocket reach the gate, other paths reach signal-server.
#
# It builds nothing: it runs ${SIGNAL_GATE_BIN:-target/debug/signal-gate} (scripts/test.sh
# runs the cargo tests first, which build it). If nginx is missing it installs Debian's
# nginx-light (or nginx) with apt-get; that needs root. It runs its own nginx processes with
# their own prefix, configuration, pid file, logs and temp directories under a temporary
# directory, and never reads or changes the system's nginx configuration. On a host with a
# service manager, installing the Debian package also enables the system's own nginx
# service; this test does not use it.
#
# Output: one line per check, then exactly one line "N passed, M failed". Exit status is
# non-zero if any check failed or the set-up did not work. Every process it started is
# stopped on exit. The temporary directory is kept (and named) when something failed.
set -uo pipefail

caller_dir=$PWD
cd "$(dirname "$0")/../.." || exit 2
repo=$PWD

# SIGNAL_GATE_NGINX_SITE: another site file to test (for example a changed copy).
site_conf=${SIGNAL_GATE_NGINX_SITE:-$repo/deploy/nginx/signal-gate.conf}
[[ $site_conf == /* ]] || site_conf=$caller_dir/$site_conf
template=$repo/deploy/nginx/test-site.conf.template

# Counting checks, stopping processes on exit, ports, emulators: shared with the schema test.
# shellcheck source=tests/lib/harness.sh
source "$repo/tests/lib/harness.sh"

NUMBER=+447400123456
NUMBER_URL=%2B447400123456
CLIENT_IP=127.0.0.5

# ---------------------------------------------------------------------------------- set-up

require_curl_and_binary

find_nginx() {
    local candidate
    candidate=$(command -v nginx 2>/dev/null) && { echo "$candidate"; return 0; }
    for candidate in /usr/sbin/nginx /usr/local/sbin/nginx; do
        [[ -x $candidate ]] && { echo "$candidate"; return 0; }
    done
    return 1
}

if ! nginx_bin=$(find_nginx); then
    if [[ $EUID -ne 0 ]]; then
        setup_failed "nginx is not installed and installing it needs root (apt-get install nginx-light)"
    fi
    command -v apt-get >/dev/null || setup_failed "nginx is not installed and apt-get is not available"
    echo "# nginx not found: installing it from Debian (apt-get update, then nginx-light or nginx)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || setup_failed "apt-get update failed"
    if ! apt-get install -y -q nginx-light >/dev/null; then
        apt-get install -y -q nginx >/dev/null || setup_failed "apt-get install nginx failed"
    fi
    nginx_bin=$(find_nginx) || setup_failed "nginx still missing after apt-get install"
fi
echo "# using $("$nginx_bin" -v 2>&1) at $nginx_bin, signal-gate at $bin"

for file in "$site_conf" "$template"; do
    [[ -f $file ]] || setup_failed "missing $file"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/signal-gate-nginx.XXXXXX") || setup_failed "mktemp"
# nginx's worker processes drop root privileges; they must be able to reach their temp
# directories under here.
chmod 0755 "$work"

free_port || setup_failed "no free port"; signal_port=$REPLY
free_port || setup_failed "no free port"; hcaptcha_port=$REPLY
free_port || setup_failed "no free port"; gate_port=$REPLY
free_port || setup_failed "no free port"; admin_port=$REPLY
free_port || setup_failed "no free port"; nginx_port=$REPLY
free_port || setup_failed "no free port"; echo_nginx_port=$REPLY
free_port || setup_failed "no free port"; echo_port=$REPLY

signal_addr=127.0.0.1:$signal_port
gate_addr=127.0.0.1:$gate_port
echo_addr=127.0.0.1:$echo_port
front=http://127.0.0.1:$nginx_port
echo_front=http://127.0.0.1:$echo_nginx_port
signal_url=http://$signal_addr
hcaptcha_url=http://127.0.0.1:$hcaptcha_port

# The emulators.
start_emulators "$signal_port" "$hcaptcha_port"

# The gate, configured only by its environment; nginx reaches it from 127.0.0.1.
mkdir -m 0700 "$work/db"
env -i PATH="$PATH" HOME="$work" \
    SIGNAL_GATE_LISTEN="$gate_addr" \
    SIGNAL_GATE_ADMIN__LISTEN="127.0.0.1:$admin_port" \
    SIGNAL_GATE_UPSTREAM__URL="$signal_url" \
    SIGNAL_GATE_HCAPTCHA__SECRET="$SECRET" \
    SIGNAL_GATE_HCAPTCHA__SITEKEY="$SITEKEY" \
    SIGNAL_GATE_HCAPTCHA__VERIFY_URL="$hcaptcha_url/siteverify" \
    SIGNAL_GATE_NUMBER_KEY="nginx-test-number-key-0123456789abcdef" \
    SIGNAL_GATE_DATABASE__URL="sqlite://$work/db/signal-gate.db" \
    SIGNAL_GATE_TRUSTED_PROXIES="127.0.0.1/32" \
    "$bin" serve >"$work/gate.log" 2>&1 &
gate_pid=$!
pids+=("$gate_pid")
wait_until_ready "$gate_pid" "http://127.0.0.1:$admin_port"

# Blocks of the production site, unchanged.
extract_block() { # extract_block name: the lines between "# ---- name: begin ----" and "end"
    awk -v begin="# ---- $1: begin ----" -v end="# ---- $1: end ----" '
        index($0, end) { inside = 0 }
        inside { print }
        index($0, begin) { inside = 1 }
    ' "$site_conf"
}
http_rules=$(extract_block http)
routing=$(extract_block routing)
[[ -n $http_rules ]] || setup_failed "no 'http: begin/end' block in $site_conf"
[[ -n $routing ]] || setup_failed "no 'routing: begin/end' block in $site_conf"
grep -q 'proxy_add_x_forwarded_for' "$site_conf" &&
    grep -v '^[[:space:]]*#' "$site_conf" | grep -q 'proxy_add_x_forwarded_for' &&
    setup_failed "$site_conf uses \$proxy_add_x_forwarded_for"

# write_nginx_conf dir listen gate_addr signal_addr extra_servers_file
write_nginx_conf() {
    local dir=$1 listen=$2 gate=$3 signal=$4 extra=$5
    mkdir -p "$dir/tmp"
    printf '%s\n' "$http_rules" >"$dir/http_rules.part"
    printf '%s\n' "$routing" >"$dir/routing.part"
    awk -v prefix="$dir" -v listen="$listen" -v gate="$gate" -v signal="$signal" \
        -v http_file="$dir/http_rules.part" -v routing_file="$dir/routing.part" \
        -v extra_file="$extra" '
        function emit(file,   line) {
            if (file == "") return
            while ((getline line < file) > 0) print line
            close(file)
        }
        /^[[:space:]]*@HTTP_RULES@[[:space:]]*$/ { emit(http_file); next }
        /^[[:space:]]*@ROUTING@[[:space:]]*$/ { emit(routing_file); next }
        /^[[:space:]]*@EXTRA_SERVERS@[[:space:]]*$/ { emit(extra_file); next }
        /^#/ { next }
        {
            gsub(/@PREFIX@/, prefix); gsub(/@LISTEN@/, listen)
            gsub(/@GATE_ADDR@/, gate); gsub(/@SIGNAL_ADDR@/, signal)
            print
        }
    ' "$template" >"$dir/nginx.conf"
}

nginx_error_flag=()
if "$nginx_bin" -h 2>&1 | grep -q -- '-e filename'; then nginx_error_flag=(-e); fi

start_nginx() { # start_nginx dir: test the configuration, then run it in the foreground
    local dir=$1
    local -a args=(-p "$dir/" -c "$dir/nginx.conf")
    ((${#nginx_error_flag[@]})) && args+=(-e "$dir/error.log")
    if ! "$nginx_bin" "${args[@]}" -t >"$dir/nginx-t.log" 2>&1; then
        sed 's/^/# /' "$dir/nginx-t.log"
        return 1
    fi
    "$nginx_bin" "${args[@]}" -g 'daemon off;' >"$dir/stdout.log" 2>&1 &
    REPLY=$!
    pids+=("$REPLY")
}

# The production site as written (TLS, ports 80/443) must pass `nginx -t`: a throwaway
# self-signed certificate stands in for the placeholder paths. `nginx -t` binds no socket.
if command -v openssl >/dev/null; then
    tls_dir=$work/nginx-tls
    mkdir -p "$tls_dir/tmp"
    if openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj '/CN=gate.example.org' \
        -keyout "$tls_dir/privkey.pem" -out "$tls_dir/fullchain.pem" >/dev/null 2>&1; then
        sed -e "s#/etc/ssl/gate.example.org/#$tls_dir/#g" "$site_conf" >"$tls_dir/site.conf"
        cat >"$tls_dir/nginx.conf" <<EOF
pid $tls_dir/nginx.pid;
error_log $tls_dir/error.log;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $tls_dir/tmp/body;
    proxy_temp_path $tls_dir/tmp/proxy;
    fastcgi_temp_path $tls_dir/tmp/fastcgi;
    uwsgi_temp_path $tls_dir/tmp/uwsgi;
    scgi_temp_path $tls_dir/tmp/scgi;
    include $tls_dir/site.conf;
}
EOF
        tls_args=(-p "$tls_dir/" -c "$tls_dir/nginx.conf")
        ((${#nginx_error_flag[@]})) && tls_args+=(-e "$tls_dir/error.log")
        if "$nginx_bin" "${tls_args[@]}" -t >"$tls_dir/nginx-t.log" 2>&1; then
            ok "deploy/nginx/signal-gate.conf as shipped (TLS) passes nginx -t"
        else
            not_ok "deploy/nginx/signal-gate.conf as shipped (TLS) passes nginx -t"
            sed 's/^/# /' "$tls_dir/nginx-t.log"
        fi
    else
        echo "# skipped: nginx -t of the TLS site (openssl could not make a certificate)"
    fi
else
    echo "# skipped: nginx -t of the TLS site (no openssl)"
fi

# Front 1: the site in front of the gate and the signal-server emulator.
write_nginx_conf "$work/nginx-front" "127.0.0.1:$nginx_port" "$gate_addr" "$signal_addr" ""
start_nginx "$work/nginx-front" || setup_failed "nginx -t refused the test site (front)"
front_pid=$REPLY
wait_for "$front_pid" "$front/" || setup_failed "nginx (front) did not start"

# Front 2: the same site in front of a header echo (gate and signal-server both point at it).
cat >"$work/echo-server.part" <<EOF
    server {
        listen $echo_addr;
        default_type text/plain;
        return 200 "xff=[\$http_x_forwarded_for] xrealip=[\$http_x_real_ip] forwarded=[\$http_forwarded] xfhost=[\$http_x_forwarded_host] upgrade=[\$http_upgrade] connection=[\$http_connection]\n";
    }
EOF
write_nginx_conf "$work/nginx-echo" "127.0.0.1:$echo_nginx_port" "$echo_addr" "$echo_addr" \
    "$work/echo-server.part"
start_nginx "$work/nginx-echo" || setup_failed "nginx -t refused the test site (echo)"
echo_pid=$REPLY
wait_for "$echo_pid" "$echo_front/" || setup_failed "nginx (echo) did not start"

echo "# emulators $signal_addr and 127.0.0.1:$hcaptcha_port, gate $gate_addr, nginx $front (echo front $echo_front)"

# --------------------------------------------------------------------------------- helpers

access_log=$work/nginx-front/access.log
request_id=0

json_number() { # json_number key json
    sed -n "s/.*\"$1\":\([0-9][0-9]*\).*/\1/p" <<<"$2"
}

json_string() { # json_string key json
    sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" <<<"$2"
}

forwarded_for_list() { # the emulator's forwardedFor entries, one a line
    sed -n 's/.*"forwardedFor":\[\([^]]*\)\].*/\1/p' <<<"$1" |
        sed 's/^"//; s/"$//; s/","/\n/g' | sed '/^$/d'
}

signal_stats() { curl -s --max-time 5 "$signal_url/emulator/stats"; }

verification_counters() { # "createSession,updateSession,requestCode,submitCode"
    local stats
    stats=$(signal_stats)
    printf '%s,%s,%s,%s' "$(json_number createSession "$stats")" \
        "$(json_number updateSession "$stats")" "$(json_number requestCode "$stats")" \
        "$(json_number submitCode "$stats")"
}

upstream_of() { # upstream_of id: nginx's $upstream_addr for the request with X-Test-Id id
    local i line
    for i in $(seq 20); do
        line=$(grep -F " id=$1 " "$access_log" | tail -n 1)
        if [[ -n $line ]]; then
            sed -n 's/.* upstream=\([^ ]*\) .*/\1/p' <<<"$line"
            return 0
        fi
        sleep 0.05
    done
    echo "(no log line)"
}

# send METHOD TARGET [curl args...]: through front 1 from CLIENT_IP; sets status, body, upstream.
# TARGET is a path (sent as is, --path-as-is) or "RT:" + a raw request target.
send() {
    local method=$1 target=$2
    shift 2
    request_id=$((request_id + 1))
    local -a args=(-s --max-time 10 --interface "$CLIENT_IP" -X "$method"
        -H "X-Test-Id: $request_id" -o "$work/body" -w '%{http_code}')
    if [[ $target == RT:* ]]; then
        args+=(--request-target "${target#RT:}" "$front/")
    else
        args+=(--path-as-is "$front$target")
    fi
    status=$(curl "${args[@]}" "$@") || status="curl-error"
    body=$(cat "$work/body" 2>/dev/null)
    upstream=$(upstream_of "$request_id")
}

# ------------------------------------------------------- 1. the client address, end to end

echo "# 1. client address: register and verify through nginx from $CLIENT_IP with forged headers"

token_json=$(curl -s --max-time 5 -X POST -H 'Content-Type: application/json' \
    -d "{\"sitekey\":\"$SITEKEY\",\"hostname\":\"localhost\"}" "$hcaptcha_url/emulator/issue")
token=$(json_string token "$token_json")
check "the hCaptcha emulator issued a token" test -n "$token"

before=$(signal_stats)
entries_before=$(forwarded_for_list "$before" | wc -l)

send POST /v1/register -H 'Content-Type: application/json' \
    -H 'X-Forwarded-For: 6.6.6.6' -H 'X-Real-IP: 7.7.7.7' \
    -d "{\"number\":\"$NUMBER\",\"captcha\":\"$token\"}"
session_id=$(json_string sessionId "$body")
check "POST /v1/register through nginx -> 200 with a sessionId (got $status)" \
    test "$status" = 200 -a -n "$session_id"
check "POST /v1/register went to the gate (nginx upstream $upstream)" test "$upstream" = "$gate_addr"

after=$(signal_stats)
new_entries=$(forwarded_for_list "$after" | tail -n +$((entries_before + 1)))
last_forwarded=$(forwarded_for_list "$after" | tail -n 1)
check "signal emulator's last forwardedFor is exactly $CLIENT_IP (got '$last_forwarded')" \
    test "$last_forwarded" = "$CLIENT_IP"
bad_entries=$(grep -vxF "$CLIENT_IP" <<<"$new_entries" | tr '\n' ' ')
check "every upstream call of this register carried X-Forwarded-For $CLIENT_IP only ($(wc -l <<<"$new_entries") calls${bad_entries:+; other: $bad_entries})" \
    test -n "$new_entries" -a -z "$bad_entries"

hcaptcha_stats=$(curl -s --max-time 5 "$hcaptcha_url/emulator/stats")
last_remoteip=$(json_string lastRemoteip "$hcaptcha_stats")
check "hCaptcha emulator's lastRemoteip is $CLIENT_IP (got '$last_remoteip')" \
    test "$last_remoteip" = "$CLIENT_IP"

code=$(curl -s --max-time 5 "$signal_url/emulator/inbox/$NUMBER_URL" |
    sed -n 's/.*"codes":\[\([^]]*\)\].*/\1/p' | tr ',' '\n' | tail -n 1 | tr -d '"')
check "the signal emulator delivered a code to the inbox" test -n "$code"
send POST /v1/verify -H 'Content-Type: application/json' \
    -H 'X-Forwarded-For: 6.6.6.6' -H 'X-Real-IP: 7.7.7.7' \
    -d "{\"sessionId\":\"$session_id\",\"number\":\"$NUMBER\",\"code\":\"$code\"}"
check "POST /v1/verify through nginx -> 200 verified (got $status)" \
    eval '[[ $status == 200 && $body == *"\"verified\":true"* ]]'
check "POST /v1/verify went to the gate (nginx upstream $upstream)" test "$upstream" = "$gate_addr"
last_forwarded=$(forwarded_for_list "$(signal_stats)" | tail -n 1)
check "submit code upstream carried X-Forwarded-For $CLIENT_IP (got '$last_forwarded')" \
    test "$last_forwarded" = "$CLIENT_IP"

# ---------------------------------------------------------- 2. headers nginx passes on

echo "# 2. headers: the same routing in front of a header echo"

echo_send() { # echo_send path [curl args...]: sets echoed
    echoed=$(curl -s --max-time 5 --interface "$CLIENT_IP" --path-as-is "$echo_front$1" "${@:2}")
}
forged=(-H 'X-Forwarded-For: 6.6.6.6' -H 'X-Forwarded-For: 1.2.3.4, 127.0.0.1'
    -H 'X-Real-IP: 7.7.7.7' -H 'Forwarded: for=8.8.8.8;proto=https'
    -H 'X-Forwarded-Host: evil.example')
clean="xff=[$CLIENT_IP] xrealip=[] forwarded=[] xfhost=[]"

for path in /v1/register /v1/verify /v1/accounts/whoami /v1/websocket/; do
    echo_send "$path" -X POST "${forged[@]}"
    check "$path: X-Forwarded-For replaced by $CLIENT_IP; X-Real-IP, Forwarded, X-Forwarded-Host removed" \
        eval '[[ $echoed == "$clean "* ]]'
done

echo_send /v1/websocket/ -H 'Upgrade: websocket' -H 'Connection: Upgrade'
check "/v1/websocket/: Upgrade: websocket is passed on" \
    eval '[[ $echoed == *"upgrade=[websocket] connection=[upgrade]"* ]]'
echo_send /v1/websocket/ -H 'Upgrade: h2c' -H 'Connection: Upgrade, HTTP2-Settings'
check "/v1/websocket/: Upgrade: h2c is not passed on" \
    eval '[[ $echoed == *"upgrade=[] connection=[]"* ]]'
echo_send /v1/accounts/whoami -H 'Upgrade: websocket' -H 'Connection: Upgrade'
check "other paths: no Upgrade is passed on" \
    eval '[[ $echoed == *"upgrade=[] connection=[]"* ]]'

# ------------------------------------------------------------------------- 3. routing

echo "# 3. routing of everything that is not the verification API"

send POST /v1/register -H 'Content-Type: text/plain' -d '{}'
check "POST /v1/register (text/plain) -> the gate's 415 (got $status, upstream $upstream)" \
    eval '[[ $status == 415 && $upstream == "$gate_addr" && $body == *unsupported_media_type* ]]'
send GET /v1/accounts/whoami
check "GET /v1/accounts/whoami -> signal-server (upstream $upstream)" test "$upstream" = "$signal_addr"
send GET /emulator/stats
check "GET /emulator/stats -> the signal emulator answers through nginx (status $status)" \
    eval '[[ $status == 200 && $body == *createSession* ]]'
send GET /v1/websocket/ -H 'Upgrade: websocket' -H 'Connection: Upgrade' \
    -H 'Sec-WebSocket-Version: 13' -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='
check "GET /v1/websocket/ -> the gate's WebSocket guard (upstream $upstream)" \
    test "$upstream" = "$gate_addr"

# Control: a verification call that does reach the emulator moves its counters, so the
# table below would see a leak.
counters_before=$(verification_counters)
curl -s -o /dev/null --max-time 5 -X POST -H 'Content-Type: application/json' \
    -d '{"number":"+447400123999"}' "$signal_url/v1/verification/session"
counters_after=$(verification_counters)
check "control: POST /v1/verification/session sent straight to the emulator moves createSession ($counters_before -> $counters_after)" \
    test "$counters_before" != "$counters_after"

# ------------------------------------------------- 4. spellings of the verification API

echo "# 4. spellings of /v1/verification/*: POST, PATCH and PUT through nginx"

# Each spelling would mean signal-server's verification API to some reading of the path
# (Jersey, Jetty, or a back end that decodes or normalises differently from nginx).
# "RT:" sends the rest verbatim as the request target (absolute form, a fragment).
spellings=(
    '/v1/verification/session'
    '/v1/verification'
    '/v1/verification/session/'
    '/v1/verification/session/abc'
    '/v1/verification/session/abc/code'
    '/v1/verification/session/abc/code/'
    '/v1/verification/session/AAAAAAAAAAAAAAAAAAAAAA==/code'
    '/v1/verification/session?x=1'
    '/V1/Verification/session'
    '/v1/VERIFICATION/SESSION'
    '/v1/Verification/Session/abc/Code'
    '/v1//verification/session'
    '//v1/verification/session'
    '/v1/verification//session'
    '/v1/./verification/session'
    '/./v1/verification/session'
    '/v1/verification/./session'
    '/v1/x/../verification/session'
    '/v1/websocket/../verification/session'
    '/v1/verification/../verification/session'
    '/v1/verification/session/x/../../../x'
    '/v1/verification;a=b/session'
    '/v1;/verification/session'
    '/v1;x=1/verification/session'
    '/v1/verification/session;jsessionid=1'
    '/v1/verification/session/abc;x=1/code'
    '/v1/verification/session%3Bx'
    '/v1/verification%3Bx=1/session'
    '/v1/verification%2Fsession'
    '/v1/verification%2fsession'
    '/v1%2Fverification%2Fsession'
    '/%761/verification/session'
    '/v1/%76erification/session'
    '/v1/%56ERIFICATION/session'
    '/v1/verif%69cation/session'
    '/%76%31/%76%65%72%69%66%69%63%61%74%69%6f%6e/%73%65%73%73%69%6f%6e'
    '/v1/verification/session%20'
    '/v1/%2e/verification/session'
    '/v1/x/%2E%2E/verification/session'
    '/v1/%2576erification/session'
    '/v1/verification\session'
    'RT:http://gate.example.org/v1/verification/session'
    'RT:http://gate.example.org/v1/%76erification/session'
    'RT:/v1/verification/session#x'
)

body_for_all='{"number":"+447400123458","captcha":"signal-hcaptcha.noop.registration.x","transport":"sms","client":"android","code":"000000"}'
table=()
for spelling in "${spellings[@]}"; do
    row=$(printf '%-72s' "${spelling#RT:}")
    for method in POST PATCH PUT; do
        counters_before=$(verification_counters)
        send "$method" "$spelling" -H 'Content-Type: application/json' -d "$body_for_all"
        counters_after=$(verification_counters)
        refused=no
        case "$status $upstream" in
            "400 -") refused=yes ;; # nginx: a path it cannot read one way
            "403 $gate_addr") [[ $body == *'"use_http_endpoints"'* ]] && refused=yes ;;
            "404 $gate_addr") [[ $body == *'"not_found"'* ]] && refused=yes ;;
        esac
        check "$method ${spelling#RT:} -> $status, upstream $upstream, counters $counters_after" \
            test "$refused" = yes -a "$counters_before" = "$counters_after"
        if [[ $refused == yes && $counters_before == "$counters_after" ]]; then
            row+=" $status"
        else
            row+=" LEAK($status,$upstream)"
        fi
    done
    table+=("$row")
done

echo "# spelling (request target)$(printf '%*s' 46 '') POST PATCH PUT"
for row in "${table[@]}"; do echo "# $row"; done

side_door=$(curl -s --max-time 5 "http://127.0.0.1:$admin_port/metrics" |
    grep 'decisions_total{' | grep 'endpoint="verification_api"' |
    grep 'reason="verification_path"' | awk '{ sum += $NF } END { print sum + 0 }')
check "the gate counted the spellings it refused (verification_path: $side_door)" \
    test "${side_door%.*}" -gt 0

summary_and_exit
