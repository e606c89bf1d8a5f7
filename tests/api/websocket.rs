//! The WebSocket guard over real connections: verification requests sent as frames never reach
//! signal-server, with or without credentials; everything else flows both ways.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use signal_gate::websocket::frames::WebSocketMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::spawn_app;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str, authorization: Option<&str>) -> Socket {
    let target = format!("{}/v1/websocket/?login=x", url.replace("http://", "ws://"));
    let mut request = target.into_client_request().expect("request");
    if let Some(value) = authorization {
        request
            .headers_mut()
            .insert("authorization", value.parse().expect("header"));
    }
    tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade through the gate")
        .0
}

/// The next binary frame, parsed; pings and pongs are skipped.
async fn next_frame(socket: &mut Socket) -> WebSocketMessage {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("readable");
        if let Message::Binary(bytes) = message {
            return WebSocketMessage::parse(&bytes).expect("a Signal frame");
        }
    }
}

async fn send(socket: &mut Socket, frame: WebSocketMessage) {
    socket
        .send(Message::Binary(frame.to_bytes().into()))
        .await
        .expect("sent");
}

#[tokio::test]
async fn verification_frames_never_reach_signal_server_and_others_flow_both_ways() {
    let app = spawn_app().await;
    for credentials in [None, Some("Basic dXNlcjpwYXNz")] {
        let mut socket = connect(&app.url, credentials).await;

        // signal-server pushes to an account's socket on connect; the push arrives through
        // the gate. It sends nothing unasked on an unauthenticated one.
        if credentials.is_some() {
            let pushed = next_frame(&mut socket).await;
            assert!(pushed.is_request(), "server-pushed request relayed");
        }

        let spellings = [
            "/v1/verification/session",
            "/v1/verification/session/abc/code",
            "/V1/Verification/session",
            "/v1//verification/session",
            "/v1/x/../verification/session",
            "/v1;x=1/verification/session",
            "/v1/%76erification/session",
            "/v1/verification%2Fsession",
            // java.net.URI, which signal-server reads a frame's path with, drops a scheme
            // and an authority.
            "//evil/v1/verification/session",
            "ws://x/v1/verification/session",
            "x:/v1/verification/session",
        ];
        for (i, path) in spellings.iter().enumerate() {
            send(
                &mut socket,
                WebSocketMessage::request(100 + i as u64, "POST", path, None),
            )
            .await;
            let answer = next_frame(&mut socket)
                .await
                .response
                .expect("a response frame");
            assert_eq!(
                (answer.id, answer.status),
                (Some(100 + i as u64), Some(403)),
                "{path}"
            );
        }

        // An ordinary request is relayed and answered by signal-server.
        send(
            &mut socket,
            WebSocketMessage::request(7, "GET", "/v1/keys", None),
        )
        .await;
        let answer = next_frame(&mut socket)
            .await
            .response
            .expect("a response frame");
        assert_eq!((answer.id, answer.status), (Some(7), Some(200)));

        // The client's answer to the server's push is relayed too; ping gets its pong.
        send(
            &mut socket,
            WebSocketMessage::response(1, 200, "OK", Vec::new()),
        )
        .await;
        socket
            .send(Message::Ping(b"hello".to_vec().into()))
            .await
            .expect("ping");
        let pong = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(Ok(Message::Pong(bytes))) = socket.next().await {
                    return bytes;
                }
            }
        })
        .await
        .expect("a pong");
        assert_eq!(&pong[..], b"hello");
        socket.close(None).await.expect("close");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let [verification, other] = app.signal.websocket_frames();
    assert_eq!(
        verification, 0,
        "no verification frame reached signal-server"
    );
    assert_eq!(
        other, 4,
        "two requests and two responses per connection were relayed"
    );
}

#[tokio::test]
async fn a_frame_that_does_not_parse_closes_the_socket_with_1007() {
    let app = spawn_app().await;
    for credentials in [None, Some("Basic dXNlcjpwYXNz")] {
        let mut socket = connect(&app.url, credentials).await;
        if credentials.is_some() {
            let _pushed = next_frame(&mut socket).await;
        }
        socket
            .send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
            .await
            .expect("sent");
        let closed = close_code(&mut socket).await;
        assert_eq!(closed, Some(1007), "credentials: {credentials:?}");
    }
}

#[tokio::test]
async fn an_unauthenticated_socket_reaches_signal_server_only_for_a_frame_it_must_relay() {
    let app = spawn_app().await;
    let mut socket = connect(&app.url, None).await;
    send(
        &mut socket,
        WebSocketMessage::request(3, "PUT", "/v1/verification/session", None),
    )
    .await;
    let refused = next_frame(&mut socket).await.response.expect("a response");
    assert_eq!(refused.status, Some(403));
    socket
        .send(Message::Ping(b"still there".to_vec().into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(Duration::from_secs(5), socket.next())
        .await
        .expect("a pong in time");
    assert!(matches!(pong, Some(Ok(Message::Pong(_)))), "{pong:?}");
    assert_eq!(
        app.signal.websocket_connections(),
        0,
        "verification attempts and pings cost signal-server nothing"
    );

    send(
        &mut socket,
        WebSocketMessage::request(4, "GET", "/v1/keys", None),
    )
    .await;
    let answer = next_frame(&mut socket).await.response.expect("a response");
    assert_eq!((answer.id, answer.status), (Some(4), Some(200)));
    assert_eq!(app.signal.websocket_connections(), 1);
    let seen = app.signal.forwarded_for();
    assert_eq!(seen.last().map(String::as_str), Some("127.0.0.1"));

    // Headers pass as a proxy would pass them, but not the client's claims about its address.
    let target = format!("{}/v1/websocket/", app.url.replace("http://", "ws://"));
    let mut request = target.into_client_request().expect("request");
    for (name, value) in [
        ("x-signal-receive-stories", "true"),
        ("x-forwarded-for", "6.6.6.6"),
        ("x-real-ip", "6.6.6.6"),
        ("x-proxied-https", "on"),
    ] {
        request
            .headers_mut()
            .insert(name, value.parse().expect("value"));
    }
    let (mut with_headers, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade");
    send(
        &mut with_headers,
        WebSocketMessage::request(5, "GET", "/v1/keys", None),
    )
    .await;
    let _answer = next_frame(&mut with_headers).await;
    let passed = app.signal.upgrade_headers();
    assert!(
        passed.contains(&"x-signal-receive-stories".to_owned()),
        "{passed:?}"
    );
    assert!(!passed.contains(&"x-real-ip".to_owned()), "{passed:?}");
    assert!(
        !passed.contains(&"x-proxied-https".to_owned()),
        "{passed:?}"
    );
    // The tests' loopback peer is a trusted proxy, so the client is the address it names;
    // signal-server gets that one address, the gate's reading, and nothing the client wrote.
    let seen = app.signal.forwarded_for();
    assert_eq!(seen.last().map(String::as_str), Some("6.6.6.6"));

    // Credentials in the query, as signal-server also reads them, connect at once.
    let target = format!(
        "{}/v1/websocket/?login=a&password=b",
        app.url.replace("http://", "ws://")
    );
    let (mut with_query, _) = tokio_tungstenite::connect_async(target)
        .await
        .expect("upgrade");
    let pushed = next_frame(&mut with_query).await;
    assert!(pushed.is_request(), "pushed on an account's socket");
    assert_eq!(app.signal.websocket_connections(), 3);
}

/// Reads until the socket closes and returns the close code, if any.
async fn close_code(socket: &mut Socket) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("closed in time")
}

#[tokio::test]
async fn frame_rate_and_size_are_bounded_per_connection() {
    let app = spawn_app().await;
    let mut flooding = connect(&app.url, None).await;
    for id in 0..300 {
        let frame = WebSocketMessage::request(id, "GET", "/v1/keys", None);
        if flooding
            .send(Message::Binary(frame.to_bytes().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(
        close_code(&mut flooding).await,
        Some(1008),
        "policy violation"
    );

    // Text frames and pings count too: a flood of them is a flood all the same.
    let floods: [fn(u64) -> Message; 2] = [
        |id| Message::Text(format!("frame {id}").into()),
        |id| Message::Ping(id.to_be_bytes().to_vec().into()),
    ];
    for (kind, flood) in floods.into_iter().enumerate() {
        let mut socket = connect(&app.url, Some("Basic dXNlcjpwYXNz")).await;
        let _pushed = next_frame(&mut socket).await;
        for id in 0..300 {
            if socket.send(flood(id)).await.is_err() {
                break;
            }
        }
        assert_eq!(close_code(&mut socket).await, Some(1008), "flood {kind}");
    }

    // Fragments count too: empty continuation frames once went uncounted without end.
    {
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        let mut socket = connect(&app.url, Some("Basic dXNlcjpwYXNz")).await;
        let _pushed = next_frame(&mut socket).await;
        let first = Frame::message(Vec::new(), OpCode::Data(Data::Binary), false);
        let _ = socket.send(Message::Frame(first)).await;
        for _ in 0..300 {
            let more = Frame::message(Vec::new(), OpCode::Data(Data::Continue), false);
            if socket.send(Message::Frame(more)).await.is_err() {
                break;
            }
        }
        assert_eq!(
            close_code(&mut socket).await,
            Some(1008),
            "continuation flood"
        );
    }

    let mut oversized = connect(&app.url, None).await;
    let huge = WebSocketMessage::request(1, "PUT", "/v1/keys", Some(vec![b'x'; 512 * 1024]));
    let _ = oversized
        .send(Message::Binary(huge.to_bytes().into()))
        .await;
    assert!(
        close_code(&mut oversized).await.is_some(),
        "an oversized frame closes the socket"
    );
    assert_eq!(app.signal.websocket_frames()[0], 0);
}

/// Sends one raw HTTP/1.1 request with `target` as written; the status and body.
async fn raw_request(url: &str, method: &str, target: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let body = r#"{"number":"+447400123456"}"#;
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: gate.test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn verification_paths_over_http_are_refused_by_the_gate_and_counted() {
    let app = spawn_app().await;
    let spellings = [
        ("POST", "/v1/verification/session"),
        ("PATCH", "/v1/verification/session/abc"),
        ("PUT", "/v1/Verification/session/abc/code"),
        ("POST", "/v1;x=1/verification/session"),
        ("POST", "/v1/%76erification/session"),
        ("POST", "/v1/x/../verification/session"),
        ("POST", "//v1//verification/session?x=1"),
        ("POST", "/v1/verification%2Fsession"),
        ("POST", "http://gate.test/v1/verification/session"),
        // Under the WebSocket's route, but not the WebSocket: never opened upstream.
        ("GET", "/v1/websocket/../verification/session/abc"),
        ("GET", "/v1/websocket/%2e%2e/verification/session/abc"),
        ("GET", "/v1/websocket/x/../../verification/session/abc/code"),
    ];
    for (method, target) in spellings {
        let (status, body) = raw_request(&app.url, method, target).await;
        assert_eq!(status, 403, "{method} {target}: {body}");
        assert!(body.contains("use_http_endpoints"), "{target}: {body}");
        assert!(
            body.contains("/v1/register"),
            "the answer names the gate's endpoint"
        );
    }
    assert_eq!(app.signal.calls(), [0; 4], "nothing reached signal-server");
    assert_eq!(app.signal.websocket_connections(), 0);
    let (status, body) = raw_request(&app.url, "GET", "/v1/elsewhere").await;
    assert_eq!((status, body.contains("not_found")), (404, true), "{body}");

    let metrics = app.metrics().await;
    let counted = metrics
        .lines()
        .find(|line| {
            line.contains("endpoint=\"verification_api\"")
                && line.contains("reason=\"verification_path\"")
        })
        .and_then(|line| line.split_whitespace().last())
        .and_then(|n| n.parse::<f64>().ok());
    assert_eq!(counted, Some(spellings.len() as f64), "{metrics}");
}

#[tokio::test]
async fn with_signal_server_down_a_waiting_socket_closes_with_1011_on_its_first_relayed_frame() {
    let app = spawn_app().await;
    app.signal.stop().await;
    let mut socket = connect(&app.url, None).await;
    send(
        &mut socket,
        WebSocketMessage::request(1, "POST", "/v1/verification/session", None),
    )
    .await;
    let refused = next_frame(&mut socket).await.response.expect("a response");
    assert_eq!(refused.status, Some(403), "refused without signal-server");
    send(
        &mut socket,
        WebSocketMessage::request(2, "GET", "/v1/keys", None),
    )
    .await;
    assert_eq!(close_code(&mut socket).await, Some(1011));
}

#[tokio::test]
async fn a_websocket_quiet_for_longer_than_the_head_limit_stays_open() {
    let app = spawn_app().await;
    let mut socket = connect(&app.url, Some("Basic dXNlcjpwYXNz")).await;
    let _pushed = next_frame(&mut socket).await;
    // Longer than the five seconds a request head may take: frames are not heads.
    tokio::time::sleep(Duration::from_secs(6)).await;
    send(
        &mut socket,
        WebSocketMessage::request(3, "GET", "/v1/keys", None),
    )
    .await;
    let answer = next_frame(&mut socket).await.response.expect("a response");
    assert_eq!((answer.id, answer.status), (Some(3), Some(200)));
}
