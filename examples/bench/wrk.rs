//! wrk runs: the Lua scripts for the two floods, and reading wrk's report.

use std::path::Path;

use super::processes::{pinned, CLIENT_CORE};

/// A register request the gate refuses without a captcha check: valid JSON and a valid
/// number, no captcha. Before the per-address budget is spent it is refused for the missing
/// captcha; after, for the budget.
pub const REGISTER_BODY: &str = r#"{"number":"+447400123456","transport":"sms","client":"bench"}"#;

const ONE_ADDRESS: &str = r#"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '@BODY@'
"#;

/// Every request from a new address: even counters as IPv4 in 127.0.0.0/8 (16 million
/// addresses, 65,536 /24 blocks), odd ones as IPv6 /64s in the documentation prefix. These
/// are header values only; nothing connects to them. `wrk ... -- OFFSET` starts the counter
/// at OFFSET, so that runs after the first bring new addresses too.
const MANY_ADDRESSES: &str = r#"
local counter = 0
function init(args)
    counter = tonumber(args[1] or "0")
end
function request()
    counter = counter + 1
    local forwarded
    if counter % 2 == 0 then
        local n = (counter / 2) % 16777216
        forwarded = string.format("127.%d.%d.%d",
            math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
    else
        local n = math.floor(counter / 2)
        forwarded = string.format("2001:db8:%x:%x::1",
            math.floor(n / 65536) % 65536, n % 65536)
    end
    return wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["X-Forwarded-For"] = forwarded,
    }, '@BODY@')
end
"#;

pub struct Scripts {
    pub one_address: String,
    pub many_addresses: String,
}

pub fn write_scripts(dir: &Path) -> Scripts {
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text.replace("@BODY@", REGISTER_BODY)).expect("a wrk script");
        path.display().to_string()
    };
    Scripts {
        one_address: write("one_address.lua", ONE_ADDRESS),
        many_addresses: write("many_addresses.lua", MANY_ADDRESSES),
    }
}

/// What one wrk run reported.
#[derive(Clone, Copy, Debug, Default)]
pub struct WrkReport {
    pub requests: u64,
    pub per_second: f64,
    /// Responses that were not 2xx or 3xx: the refusals.
    pub refused: u64,
    /// Connection errors, reads, writes and timeouts wrk counted.
    pub socket_errors: u64,
}

/// One wrk run: a thread, `connections` kept-alive connections, `seconds` long.
pub fn run(url: &str, script: &str, seconds: u64, connections: u32, offset: u64) -> WrkReport {
    let output = pinned(CLIENT_CORE, Path::new("wrk"))
        .args(["-t1", &format!("-c{connections}"), &format!("-d{seconds}s")])
        .args(["-s", script, url, "--", &offset.to_string()])
        .output()
        .expect("wrk (scripts/bench.sh installs it)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "wrk failed: {text}");
    parse(&text)
}

fn parse(text: &str) -> WrkReport {
    let mut report = WrkReport::default();
    for line in text.lines().map(str::trim) {
        if let Some(rate) = line.strip_prefix("Requests/sec:") {
            report.per_second = rate.trim().parse().unwrap_or(0.0);
        } else if let Some(count) = line.strip_prefix("Non-2xx or 3xx responses:") {
            report.refused = count.trim().parse().unwrap_or(0);
        } else if line.contains(" requests in ") {
            let count = line.split_whitespace().next().unwrap_or("0");
            report.requests = count.parse().unwrap_or(0);
        } else if let Some(errors) = line.strip_prefix("Socket errors:") {
            report.socket_errors = errors
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        }
    }
    report
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_what_wrk_prints() {
        let report = super::parse(
            "  1000 requests in 5.00s, 1.2MB read\n  Socket errors: connect 0, read 2, write 0, \
             timeout 1\n  Non-2xx or 3xx responses: 990\nRequests/sec:    200.50\n",
        );
        assert_eq!(
            (report.requests, report.refused, report.socket_errors),
            (1000, 990, 3)
        );
        assert!((report.per_second - 200.5).abs() < 1e-9);
    }
}
