//! One canonical form for request paths, so that no spelling of a verification path slips past
//! the gate where signal-server's router would still read it (UPSTREAM.md section 10).
//!
//! The form: query and fragment dropped, an absolute-form target reduced to its path,
//! percent-escapes decoded once (an escape that decodes to another escape is refused as
//! ambiguous), `\` read as `/`, matrix parameters (`;...`) dropped from every segment, empty
//! segments and `.` removed, `..` resolved (refused above the root), and a decoded `?` or `#`
//! escaped again, so that the form reads the same when read a second time. A path that cannot
//! be put in this form is refused rather than guessed at.

/// Why a path has no canonical form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path holds a malformed or double percent-escape")]
    BadEscape,
    #[error("the path holds a control character")]
    ControlCharacter,
    #[error("the path climbs above the root")]
    AboveRoot,
}

/// The canonical form of a request target's path.
///
/// # Errors
/// A [`PathError`] when the path cannot be read one way only.
pub fn canonical_path(target: &str) -> Result<String, PathError> {
    let path = strip_authority(target);
    let path = path.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode_once(path)?;
    if decoded.chars().any(|c| c.is_control()) {
        return Err(PathError::ControlCharacter);
    }
    let mut segments: Vec<&str> = Vec::new();
    for raw in decoded.split(['/', '\\']) {
        let segment = raw.split(';').next().unwrap_or("");
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop().ok_or(PathError::AboveRoot)?;
            }
            _ => segments.push(segment),
        }
    }
    Ok(format!("/{}", escape_delimiters(&segments.join("/"))))
}

/// A `?` or `#` that came out of an escape is part of a segment, not the start of a query or
/// fragment; it stays escaped so the canonical form is its own canonical form.
fn escape_delimiters(path: &str) -> String {
    path.replace('?', "%3F").replace('#', "%23")
}

/// True when the target reaches signal-server's verification-session API, however spelled;
/// a target with no canonical form counts as one, so it is refused rather than passed on.
pub fn is_verification_path(target: &str) -> bool {
    // Read both as a proxy reads a request target and as `java.net.URI` reads a WebSocket
    // frame's path (signal-server builds each frame's request with `URI.create`): `//x/v1/...`
    // is a path to the one and an authority `x` to the other.
    [target, uri_path(target)].into_iter().any(|candidate| {
        let Ok(path) = canonical_path(candidate) else {
            return true;
        };
        let mut segments = path.split('/').skip(1).map(str::to_ascii_lowercase);
        segments.next().as_deref() == Some("v1")
            && segments.next().as_deref() == Some("verification")
    })
}

/// The path of `target` as `java.net.URI` reads it: any scheme (`ws:`, `x:`) and any
/// `//authority` before it are not part of it.
fn uri_path(target: &str) -> &str {
    let after_scheme = match target.split_once(':') {
        Some((scheme, rest)) if is_scheme(scheme) => rest,
        _ => target,
    };
    match after_scheme.strip_prefix("//") {
        Some(authority_and_path) => {
            let end = authority_and_path
                .find(['/', '?', '#'])
                .unwrap_or(authority_and_path.len());
            &authority_and_path[end..]
        }
        None => after_scheme,
    }
}

/// RFC 3986's scheme: a letter, then letters, digits, `+`, `-` or `.`.
fn is_scheme(text: &str) -> bool {
    let mut chars = text.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
}

/// `http://host/path` and `https://host/path` to `/path`.
fn strip_authority(target: &str) -> &str {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let rest = if lower.starts_with("http://") {
        &target[7..]
    } else if lower.starts_with("https://") {
        &target[8..]
    } else {
        return target;
    };
    rest.find('/').map_or("/", |slash| &rest[slash..])
}

fn percent_decode_once(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
            let text = std::str::from_utf8(hex).map_err(|_| PathError::BadEscape)?;
            let value = u8::from_str_radix(text, 16).map_err(|_| PathError::BadEscape)?;
            // A decoded `%` followed by hex would decode again somewhere else: ambiguous.
            if value == b'%' {
                return Err(PathError::BadEscape);
            }
            out.push(value);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::BadEscape)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_spelling_of_the_verification_api_is_recognised() {
        let spellings = [
            "/v1/verification/session",
            "/v1/verification",
            "/v1/verification/session/",
            "/v1/verification/session/abc/code",
            "/v1/verification/session?x=1",
            "/V1/Verification/session",
            "/v1/VERIFICATION/SESSION",
            "/v1//verification/session",
            "//v1/verification/session",
            "/v1/./verification/session",
            "/./v1/verification/session",
            "/v1/x/../verification/session",
            "/v1/websocket/../verification/session",
            "/v1/verification;a=b/session",
            "/v1;/verification/session",
            "/v1;x=1/verification/session",
            "/v1/verification/session;jsessionid=1",
            "/v1/verification%2Fsession",
            "/v1%2Fverification%2Fsession",
            "/%761/verification/session",
            "/v1/%76erification/session",
            "/v1/%56ERIFICATION/session",
            "/v1/%2e/verification/session",
            "/v1/x/%2E%2E/verification/session",
            "/v1\\verification\\session",
            "http://gate.example.org/v1/verification/session",
            "HTTPS://gate.example.org/v1/%76erification/session",
            "/v1/verification/session#x",
            // How java.net.URI reads a WebSocket frame's path: scheme and authority dropped.
            "//evil/v1/verification/session",
            "//user@evil.example:80/v1/verification/session?x=1",
            "ws://example.org/v1/verification/session",
            "wss://x/v1/verification/session/abc/code",
            "x:/v1/verification/session",
            "http:/v1/verification/session",
            "file:///v1/verification/session",
            "a+b.c-d://h/v1/verification/session",
            "urn:/v1/verification/session",
        ];
        for spelling in spellings {
            assert!(is_verification_path(spelling), "{spelling} slipped through");
        }
    }

    #[test]
    fn ambiguous_paths_are_refused_and_count_as_verification() {
        for path in [
            "/v1/%2576erification/session",
            "/v1/%zz",
            "/v1/%7",
            "/../v1",
            "/v1/a%00b",
        ] {
            assert!(canonical_path(path).is_err(), "{path}");
            assert!(is_verification_path(path), "{path}");
        }
    }

    #[test]
    fn other_paths_keep_their_meaning() {
        let cases = [
            ("/v1/websocket/", "/v1/websocket"),
            ("/v1/register", "/v1/register"),
            ("/v2/keys/?x=1", "/v2/keys"),
            ("/v1/accounts;x/../messages", "/v1/messages"),
            ("%23", "/%23"),
            (
                "/v1/verification%3Fx/session",
                "/v1/verification%3Fx/session",
            ),
            (
                "/v1/verification%23/session#x",
                "/v1/verification%23/session",
            ),
        ];
        for (path, canonical) in cases {
            assert_eq!(canonical_path(path).as_deref(), Ok(canonical), "{path}");
            assert!(!is_verification_path(path), "{path}");
        }
    }

    proptest! {
        #[test]
        fn canonical_paths_are_fixed_points(path in "[/a-zA-Z0-9.;%?#\\\\]{0,40}") {
            if let Ok(canonical) = canonical_path(&path) {
                prop_assert_eq!(canonical_path(&canonical), Ok(canonical.clone()));
            }
        }

        #[test]
        fn paths_built_of_escapes_and_dots_are_fixed_points(
            parts in prop::collection::vec(prop::sample::select(vec![
                "/", "\\", "v1", "verification", ".", "..", ";x", "?", "#", "%23", "%3F",
                "%3f", "%2F", "%2e", "%2E%2E", "%5C", "%3B", "%20", "%C3%A9",
            ]), 0..12),
        ) {
            let path = parts.concat();
            if let Ok(canonical) = canonical_path(&path) {
                prop_assert_eq!(canonical_path(&canonical), Ok(canonical.clone()), "{}", path);
            }
        }

        #[test]
        fn no_escape_hides_a_verification_path(
            prefix in prop::sample::select(vec!["", "/.", "//", "/./.", "/x/..", "/x;y/.."]),
            escape in 0usize..13,
        ) {
            let mut path = format!("{prefix}/v1/verification/session");
            // Escape one letter of "verification" (or leave it when out of range).
            let at = prefix.len() + 4 + escape;
            if escape < 12 {
                let c = path.as_bytes()[at];
                path.replace_range(at..=at, &format!("%{c:02X}"));
            }
            prop_assert!(is_verification_path(&path), "{}", path);
        }
    }
}
