//! nginx `limit_req` configured for the gate's register rule, the reference the gate's refusal
//! rate is measured against. One worker, like the gate; access and error logs written as a
//! default installation writes them, since the gate writes its decision line too.

use std::path::Path;

/// The per-address register budget both sides enforce: the gate's `10/1h`. nginx counts in
/// requests per minute at the slowest, so its rule is a burst of 10 and then one a minute;
/// under a flood both refuse everything after the tenth request.
pub const GATE_RULE: &str = "10/1h";

/// Writes `nginx.conf` under `dir`: `one_address_port` limits by the socket peer,
/// `many_address_port` by the right-most `X-Forwarded-For` entry of a trusted 127.0.0.1
/// (the gate's own rule); requests that pass go to `backend_port`.
pub fn write_config(dir: &Path, one_address_port: u16, many_address_port: u16, backend: u16) {
    let prefix = dir.display();
    let config = format!(
        r#"
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    keepalive_requests 1000000;

    limit_req_zone $binary_remote_addr zone=register:64m rate=1r/m;
    limit_req_status 429;

    upstream backend {{
        server 127.0.0.1:{backend};
        keepalive 16;
    }}

    server {{
        listen 127.0.0.1:{one_address_port};
        {location}
    }}

    server {{
        listen 127.0.0.1:{many_address_port};
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Forwarded-For;
        {location}
    }}
}}
"#,
        location = LOCATION
    );
    std::fs::create_dir_all(dir.join("tmp")).expect("nginx temp directory");
    std::fs::write(dir.join("nginx.conf"), config).expect("nginx.conf");
}

/// The register location: limit_req, then the back end for what passes; refusals get the same
/// JSON body and Retry-After as the gate's.
const LOCATION: &str = r#"
        location = /v1/register {
            limit_req zone=register burst=9 nodelay;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://backend;
            error_page 429 = @limited;
        }
        location @limited {
            default_type application/json;
            add_header Retry-After 3600 always;
            return 429 '{"code":"rate_limited","message":"Too many requests.","retryAfter":3600}';
        }
"#;
