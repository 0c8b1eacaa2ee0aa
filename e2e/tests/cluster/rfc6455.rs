//! RFC 6455 and request-head limits, checked byte for byte against the real binaries. Raw
//! TCP clients send exact opening handshakes to the edge (SPEC §6: HTTP/1.1, one
//! `Sec-WebSocket-Key` of 16 bytes, version 13 else 426, `Connection` with other tokens),
//! hand-built frames that break the protocol after the upgrade (the edge must answer with
//! a close frame carrying 1002 or 1007, never a silent drop), and oversized request heads
//! (SPEC §11: 431 on every HTTP port, and the process keeps serving).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;

use common::http::{MAX_HEAD_BYTES, MAX_HEADERS};
use e2e::{Cluster, DEADLINE, Options};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The sample key of RFC 6455 §1.3 and the `Sec-WebSocket-Accept` it derives.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// The masking key of RFC 6455 §5.7's examples.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

// First-byte bits and opcodes of a frame (RFC 6455 §5.2).
const FIN: u8 = 0x80;
const RSV1: u8 = 0x40;
const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const RESERVED_DATA: u8 = 0x3;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

/// `host:port` of a `ws://` or `http://` base URL.
fn authority(url: &str) -> String {
    url.split_once("://")
        .map_or(url, |(_, rest)| rest)
        .trim_end_matches('/')
        .to_owned()
}

/// Runs `io` within `DEADLINE`; a timeout is an error naming `what`.
async fn within<T>(what: &str, io: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(DEADLINE, io)
        .await
        .map_err(|_| format!("no {what} within {DEADLINE:?}"))
}

/// Appends what `reader` has next to `pending`; `false` at end of stream (or reset).
async fn read_more(reader: &mut (impl AsyncRead + Unpin), pending: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 4096];
    match reader.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            pending.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// A response head as received: the status code and the whole head's text.
#[derive(Debug)]
struct Head {
    status: u16,
    text: String,
}

impl Head {
    fn parse(text: String) -> Result<Head, String> {
        let status = text
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("not an HTTP response head: {text:?}"))?;
        Ok(Head { status, text })
    }

    /// The value of the first header called `name`.
    fn header(&self, name: &str) -> Option<&str> {
        self.text.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// Reads up to the end of a response head; what follows stays in `pending`.
async fn read_head(
    reader: &mut (impl AsyncRead + Unpin),
    pending: &mut Vec<u8>,
) -> Result<Head, String> {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = pending.drain(..end + 4).collect();
            return Head::parse(String::from_utf8_lossy(&head).into_owned());
        }
        if !read_more(reader, pending).await {
            return Err(format!(
                "the connection ended without a response head (got {:?})",
                String::from_utf8_lossy(pending)
            ));
        }
    }
}

/// A frame as the server sent it.
#[derive(Debug)]
struct Frame {
    /// FIN, RSV1-3 and the opcode.
    first: u8,
    masked: bool,
    payload: Vec<u8>,
}

/// A raw client connection; bytes read but not consumed yet wait in `pending`.
struct Raw {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Raw {
    async fn connect(authority: &str) -> Raw {
        let stream = within("connection", TcpStream::connect(authority))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("cannot connect to {authority}: {e}"));
        Raw {
            stream,
            pending: Vec::new(),
        }
    }

    /// Writes `request` while reading the response head, so a server that answers before
    /// reading everything (431) cannot leave the writer blocked.
    async fn exchange(&mut self, request: &[u8]) -> Result<Head, String> {
        let (mut reader, mut writer) = self.stream.split();
        let pending = &mut self.pending;
        let write = async {
            // A server that refuses a head closes before reading all of it.
            let _ = writer.write_all(request).await;
        };
        let exchange = async { tokio::join!(write, read_head(&mut reader, pending)).1 };
        within("response head", exchange).await?
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), String> {
        within("write", self.stream.write_all(bytes))
            .await?
            .map_err(|e| format!("write failed: {e}"))
    }

    /// The first `n` pending bytes, reading until there are that many.
    async fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.pending.len() < n {
            let more = within(
                "frame bytes",
                read_more(&mut self.stream, &mut self.pending),
            );
            if !more.await? {
                return Err(format!(
                    "the connection ended inside a frame (got {:02x?})",
                    self.pending
                ));
            }
        }
        Ok(self.pending.drain(..n).collect())
    }

    /// The server's next frame.
    async fn frame(&mut self) -> Result<Frame, String> {
        let start = self.take(2).await?;
        let masked = start[1] & 0x80 != 0;
        let len = match start[1] & 0x7f {
            126 => u16::from_be_bytes(self.take(2).await?.try_into().unwrap()) as usize,
            127 => u64::from_be_bytes(self.take(8).await?.try_into().unwrap()) as usize,
            len => len as usize,
        };
        if masked {
            self.take(4).await?;
        }
        let payload = self.take(len).await?;
        Ok(Frame {
            first: start[0],
            masked,
            payload,
        })
    }

    /// The code of the close frame the server sends next (a well-formed one: final,
    /// unmasked, a 2-byte code and a UTF-8 reason).
    async fn close_code(&mut self) -> Result<u16, String> {
        let frame = self
            .frame()
            .await
            .map_err(|e| format!("no close frame: {e}"))?;
        let code = match frame.payload.as_slice() {
            [high, low, reason @ ..] if std::str::from_utf8(reason).is_ok() => {
                u16::from_be_bytes([*high, *low])
            }
            _ => return Err(format!("a close frame without a valid code: {frame:?}")),
        };
        if frame.first != FIN | CLOSE || frame.masked {
            return Err(format!("expected a final, unmasked close frame: {frame:?}"));
        }
        Ok(code)
    }

    /// Reads until the server ends the connection (end of stream or reset); an error if it
    /// keeps it open.
    async fn ends(&mut self) -> Result<(), String> {
        within("end of the connection", async {
            while read_more(&mut self.stream, &mut self.pending).await {}
        })
        .await
    }
}

/// A request head: `request_line`, then `headers`, each as written.
fn request(request_line: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut head = format!("{request_line}\r\nHost: 127.0.0.1\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// A valid opening handshake with `request_line`, with `changes` applied: each replaces the
/// header of the same name.
fn handshake(request_line: &str, changes: &[(&str, &str)]) -> Vec<u8> {
    let mut headers = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", KEY),
    ];
    for (name, value) in changes {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        headers.push((*name, *value));
    }
    request(request_line, &headers)
}

/// The Mozilla endpoint without a token: it upgrades, then waits for a `token: T` frame, so
/// the handshake needs no credentials.
const SOCKET: &str = "GET /socket HTTP/1.1";

/// A client frame with `first` as its first byte, masked with `MASK` (or not), using the
/// 7-bit or the 16-bit length form.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask_bit = if masked { 0x80 } else { 0 };
    let mut bytes = vec![first];
    match payload.len() {
        len @ 0..=125 => bytes.push(mask_bit | len as u8),
        len => {
            bytes.push(mask_bit | 126);
            bytes.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
        }
    }
    if masked {
        bytes.extend_from_slice(&MASK);
        bytes.extend(payload.iter().zip(MASK.iter().cycle()).map(|(b, m)| b ^ m));
    } else {
        bytes.extend_from_slice(payload);
    }
    bytes
}

/// A masked client frame, as a client must send it.
fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
    frame(first, payload, true)
}

/// Reports every failed case at once.
fn assert_all(failures: &[String]) {
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn opening_handshakes_follow_rfc6455() {
    let cluster = Cluster::start(Options::default()).await;
    let edge = authority(&cluster.edge_url(0));
    let cases: [(&str, Vec<u8>, u16); 7] = [
        (
            "a second Sec-WebSocket-Key",
            insert_lines(
                handshake(SOCKET, &[]),
                &format!("Sec-WebSocket-Key: {KEY}\r\n"),
            ),
            400,
        ),
        (
            "a 1-character key",
            handshake(SOCKET, &[("Sec-WebSocket-Key", "x")]),
            400,
        ),
        (
            "a key that is base64 of 8 bytes",
            handshake(SOCKET, &[("Sec-WebSocket-Key", "AAAAAAAAAAA=")]),
            400,
        ),
        (
            "Sec-WebSocket-Version: 8",
            handshake(SOCKET, &[("Sec-WebSocket-Version", "8")]),
            426,
        ),
        (
            "Connection: keep-alive, Upgrade",
            handshake(SOCKET, &[("Connection", "keep-alive, Upgrade")]),
            101,
        ),
        // RFC 6455 §4.1: "the HTTP version MUST be at least 1.1" — refused, not upgraded.
        (
            "an HTTP/1.0 request line",
            handshake("GET /socket HTTP/1.0", &[]),
            400,
        ),
        ("a plain valid handshake", handshake(SOCKET, &[]), 101),
    ];
    let mut failures = Vec::new();
    for (case, bytes, expected) in cases {
        let head = match Raw::connect(&edge).await.exchange(&bytes).await {
            Ok(head) => head,
            Err(e) => {
                failures.push(format!("{case}: {e}"));
                continue;
            }
        };
        if head.status != expected {
            failures.push(format!("{case}: expected {expected}, got {head:?}"));
            continue;
        }
        if expected == 426 && head.header("Sec-WebSocket-Version") != Some("13") {
            failures.push(format!(
                "{case}: 426 without Sec-WebSocket-Version: 13: {head:?}"
            ));
        }
        if expected == 101 && head.header("Sec-WebSocket-Accept") != Some(ACCEPT) {
            failures.push(format!(
                "{case}: 101 with a wrong Sec-WebSocket-Accept: {head:?}"
            ));
        }
    }

    assert_all(&failures);
}

#[tokio::test]
async fn protocol_violations_get_a_close_frame_with_1002_or_1007() {
    let cluster = Cluster::start(Options::default()).await;
    let edge = authority(&cluster.edge_url(0));
    let cases: [(&str, Vec<u8>, u16); 7] = [
        (
            "a text frame with invalid UTF-8",
            masked(FIN | TEXT, &[0xc3, 0x28]),
            1007,
        ),
        (
            "an unmasked client frame",
            frame(FIN | TEXT, b"token: x", false),
            1002,
        ),
        (
            "RSV1 set without an extension",
            masked(FIN | RSV1 | TEXT, b"token: x"),
            1002,
        ),
        (
            "the reserved opcode 0x3",
            masked(FIN | RESERVED_DATA, b"x"),
            1002,
        ),
        (
            "a ping of 126 bytes",
            masked(FIN | PING, &[b'p'; 126]),
            1002,
        ),
        (
            "a continuation with no message started",
            masked(FIN | CONTINUATION, b"x"),
            1002,
        ),
        (
            "a close frame with a 1-byte payload",
            masked(FIN | CLOSE, &[0x03]),
            1002,
        ),
    ];
    // Without a token the edge reads the frame as the legacy `token: T` first frame; with
    // one in the query the socket is open and the frame reaches the running socket's loop.
    let (token, _) = cluster.moz().token().await;
    let with_token = format!("GET /socket?token={token} HTTP/1.1");
    let mut failures = Vec::new();
    for request_line in [SOCKET, with_token.as_str()] {
        for (case, bytes, expected) in &cases {
            if let Err(e) = violation_is_closed(&edge, request_line, bytes, *expected).await {
                let start = &bytes[..bytes.len().min(12)];
                failures.push(format!("{request_line}: {case} ({start:02x?}…): {e}"));
            }
        }
    }
    assert_all(&failures);
}

/// Opens a socket with `request_line`, sends `bytes` as its first frame and checks that
/// the edge answers with a close frame carrying `expected`, then ends the connection.
async fn violation_is_closed(
    edge: &str,
    request_line: &str,
    bytes: &[u8],
    expected: u16,
) -> Result<(), String> {
    let mut raw = Raw::connect(edge).await;
    let head = raw.exchange(&handshake(request_line, &[])).await?;
    if head.status != 101 {
        return Err(format!("the handshake was refused: {head:?}"));
    }
    raw.send(bytes).await?;
    let code = raw.close_code().await?;
    if code != expected {
        return Err(format!("expected close {expected}, got {code}"));
    }
    raw.ends().await
}

/// `request` with `lines` (each ending in CRLF) added after its other header lines.
fn insert_lines(mut request: Vec<u8>, lines: &str) -> Vec<u8> {
    let end = request.len() - 2;
    request.splice(end..end, lines.bytes());
    request
}

/// `request` padded with one `X-Pad` header to exactly `len` bytes.
fn padded_to(request: Vec<u8>, len: usize) -> Vec<u8> {
    let bare = request.len() + "X-Pad: \r\n".len();
    let padded = insert_lines(request, &format!("X-Pad: {}\r\n", "a".repeat(len - bare)));
    assert_eq!(padded.len(), len);
    padded
}

/// `request` with small `X-Header-<i>` headers added up to `count` header fields in all.
fn with_headers(request: Vec<u8>, count: usize) -> Vec<u8> {
    let lines = String::from_utf8_lossy(&request).matches("\r\n").count();
    let present = lines - 2; // the request line and the blank line
    let filler: String = (present..count)
        .map(|i| format!("X-Header-{i}: v\r\n"))
        .collect();
    insert_lines(request, &filler)
}

#[tokio::test]
async fn oversized_request_heads_get_431_on_every_port() {
    let cluster = Cluster::start(Options {
        monitor: true,
        ..Options::default()
    })
    .await;
    let edge = authority(&cluster.edge_url(0));
    let api = authority(&cluster.api_url());
    let router = format!("127.0.0.1:{}", cluster.ports.router_http);
    let monitor = format!("127.0.0.1:{}", cluster.ports.monitor);
    let version = || request("GET /version HTTP/1.1", &[]);
    let health = || request("GET /health HTTP/1.1", &[]);
    let big = format!("X-Big: {}\r\n", "a".repeat(450 * 1024));
    let cases: Vec<(&str, &str, Vec<u8>, u16)> = vec![
        (
            "api /version: one 450 KiB header",
            &api,
            insert_lines(version(), &big),
            431,
        ),
        (
            "edge /socket: an upgrade with one 450 KiB header",
            &edge,
            insert_lines(handshake(SOCKET, &[]), &big),
            431,
        ),
        (
            "edge /health: one 450 KiB header",
            &edge,
            insert_lines(health(), &big),
            431,
        ),
        (
            "router /health: one 450 KiB header",
            &router,
            insert_lines(health(), &big),
            431,
        ),
        (
            "monitor /health: one 450 KiB header",
            &monitor,
            insert_lines(health(), &big),
            431,
        ),
        (
            "api /version: 150 small headers",
            &api,
            with_headers(version(), 150),
            431,
        ),
        (
            "edge /socket: an upgrade with 150 small headers",
            &edge,
            with_headers(handshake(SOCKET, &[]), 150),
            431,
        ),
        (
            "edge /health: 150 small headers",
            &edge,
            with_headers(health(), 150),
            431,
        ),
        // The limits themselves: one byte or one header more is refused, the limit is not.
        (
            "api /version: a head one byte over the limit",
            &api,
            padded_to(version(), MAX_HEAD_BYTES + 1),
            431,
        ),
        (
            "api /version: one header over the limit",
            &api,
            with_headers(version(), MAX_HEADERS + 1),
            431,
        ),
        (
            "api /version: a head of exactly the limit",
            &api,
            padded_to(version(), MAX_HEAD_BYTES),
            200,
        ),
        (
            "api /version: exactly as many headers as the limit",
            &api,
            with_headers(version(), MAX_HEADERS),
            200,
        ),
        (
            "edge /socket: an upgrade of exactly the limit",
            &edge,
            padded_to(handshake(SOCKET, &[]), MAX_HEAD_BYTES),
            101,
        ),
        // After all of that, every process still serves on a new connection.
        ("api /version: a normal request", &api, version(), 200),
        (
            "edge /socket: a normal upgrade",
            &edge,
            handshake(SOCKET, &[]),
            101,
        ),
        ("edge /health: a normal request", &edge, health(), 200),
        ("router /health: a normal request", &router, health(), 200),
        ("monitor /health: a normal request", &monitor, health(), 200),
    ];
    let mut failures = Vec::new();
    for (case, authority, bytes, expected) in cases {
        match Raw::connect(authority).await.exchange(&bytes).await {
            Ok(head) if head.status == expected => {}
            Ok(head) => failures.push(format!("{case}: expected {expected}, got {head:?}")),
            Err(e) => failures.push(format!("{case}: expected {expected}, {e}")),
        }
    }
    assert_all(&failures);
}
