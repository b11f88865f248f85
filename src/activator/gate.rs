//! The plain proxy port's gate: a connection's first request head is read and routed before
//! hyper serves the connection, and a request for a target at zero is held right here, with no
//! HTTP state allocated. Hyper's per-connection buffers (8 KiB to write, allocated up front;
//! 8 KiB to read; a second 8 KiB read buffer while a request is held, because its keep-alive
//! read reserves a new one while the request's header bytes pin the first) were most of a held
//! request's memory; here a held request keeps its head's bytes, exactly sized.
//!
//! ```text
//! head (exactly its bytes; the serving loop's read-header deadline)
//!  ├ not HTTP/1, malformed, too long, client closed ─────────────→ hyper, bytes replayed
//!  └ route: none, static answer, endpoint ready ──────────────────→ hyper (counted there)
//!     └ count in flight, Proxy::hold ─ client gone ─→ closed, nothing written, abandoned
//!          └ ready, deadline, refused, superseded ─→ hyper, head replayed; the handler
//!                                                   takes the outcome for that request
//! ```
//!
//! Bytes past the head (a body, pipelined requests) are never read here: they wait in the
//! socket for hyper, which also makes the client's close visible while a request is held.

use std::{future::Future, io, sync::Arc, time::Duration};

use http::{Method, Request, Uri, Version, header};
use tokio::{
    io::{AsyncReadExt, Interest},
    net::TcpStream,
};
use tracing::Instrument;

use super::proxy::{self, Client, Proxy, Scheme};
use crate::net::{CloseReason, ConnState, Gated, Handshake, LogThrottle};

/// Longest head the gate reads: hyper's own limit (its default `max_buf_size`), so a head
/// hyper would take is never refused here, and a longer one gets hyper's 431.
pub const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Most header fields in a head: hyper's default (431 beyond).
const MAX_HEADERS: usize = 100;
/// The first look at a connection reads at most this much; it doubles while the head goes on.
const FIRST_READ: usize = 1024;

/// The plain proxy port's handshake (none, plus the client's [`Client`] facts) and its gate.
#[derive(Clone)]
pub struct PlainProxy {
    proxy: Arc<Proxy>,
    refused_log: Arc<LogThrottle>,
}

impl std::fmt::Debug for PlainProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainProxy").finish_non_exhaustive()
    }
}

impl PlainProxy {
    /// The gate of `proxy`; refused heads are logged at most once per `log_window` (with a
    /// count of the others).
    pub fn new(proxy: Arc<Proxy>, log_window: Duration) -> PlainProxy {
        PlainProxy {
            proxy,
            refused_log: LogThrottle::new(log_window, |s| {
                tracing::warn!(count = s.count, last = %s.last, "{} more malformed or oversized request heads in the last {}", s.count, s.window_text());
            }),
        }
    }
}

impl Handshake for PlainProxy {
    type Io = TcpStream;
    type Info = Client;

    async fn handshake(
        &self,
        tcp: TcpStream,
        conn: Arc<ConnState>,
    ) -> Result<(TcpStream, Client), CloseReason> {
        Ok((tcp, Client::new(conn.peer, Scheme::Http)))
    }

    fn gate(
        &self,
        tcp: TcpStream,
        client: &Arc<Client>,
        conn: &Arc<ConnState>,
    ) -> impl Future<Output = Gated<TcpStream>> + Send {
        self.run(tcp, Arc::clone(client), Arc::clone(conn))
    }
}

impl PlainProxy {
    async fn run(&self, mut tcp: TcpStream, client: Arc<Client>, conn: Arc<ConnState>) -> Gated<TcpStream> {
        let pass = |io, read| Gated::Serve {
            io,
            read,
            request: None,
        };
        let head = match read_head(&mut tcp).await {
            Ok(Head::Complete(head)) => head,
            Ok(Head::Pass(read, why)) => {
                if let Some(problem) = why.problem() {
                    let peer = conn.peer;
                    if self.refused_log.admit(|| format!("from {peer}: {problem}")) {
                        tracing::warn!(%peer, problem, "request head refused");
                    }
                }
                return pass(tcp, read);
            }
            Err(e) => {
                tracing::debug!(peer = %conn.peer, error = %e, "reading the first request head failed");
                return Gated::Close(CloseReason::Error);
            }
        };
        // The parsed request lives only for the lookup: what stays while held is `head`.
        let found = request_of(&head).and_then(|request| {
            let (target, options) = self.proxy.gate_route(&request)?;
            let path = request.uri().path().to_owned();
            let span = proxy::request_span(&target, &request);
            Some((target, options, span, path))
        });
        let Some((target, options, span, path)) = found else {
            return pass(tcp, head);
        };
        let request = conn.begin_request(false);
        let hold = self.proxy.gate_hold(target, options, &path).instrument(span);
        let mut forgot = false;
        let held = tokio::select! {
            held = hold => held,
            // Dropping the hold counts it abandoned and releases its places, as when hyper
            // drops a held request's future.
            () = client_gone(&tcp, &mut forgot) => return Gated::Close(CloseReason::Done),
        };
        client.set_gated(held);
        let tcp = if forgot {
            match registered_anew(tcp) {
                Ok(tcp) => tcp,
                Err(e) => {
                    tracing::debug!(peer = %conn.peer, error = %e, "registering the connection again failed");
                    return Gated::Close(CloseReason::Error);
                }
            }
        } else {
            tcp
        };
        Gated::Serve {
            io: tcp,
            read: head,
            request: Some(request),
        }
    }
}

/// Resolves when the client closed the connection (or reset it). Bytes it sends meanwhile (a
/// body, the next requests) stay in the socket: the reactor's note that they are there is
/// dropped (`forgot` set), and the wait is for the next event, so a waiting body never spins
/// this loop.
async fn client_gone(tcp: &TcpStream, forgot: &mut bool) {
    loop {
        match tcp.ready(Interest::READABLE).await {
            Ok(ready) if !ready.is_read_closed() => {
                *forgot = true;
                let _ = tcp.try_io(Interest::READABLE, || {
                    Err::<(), _>(io::ErrorKind::WouldBlock.into())
                });
            }
            _ => return,
        }
    }
}

/// `tcp` registered with the reactor anew. After [`client_gone`] dropped the readiness of
/// bytes still waiting, the reactor (edge-triggered) would not report them again until more
/// arrive; a new registration reports what is there at once, so hyper reads them.
fn registered_anew(tcp: TcpStream) -> io::Result<TcpStream> {
    TcpStream::from_std(tcp.into_std()?)
}

/// What the head reader got.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// A complete request head: exactly its bytes (nothing after it was read).
    Complete(Vec<u8>),
    /// Not a head to gate: the bytes read so far (all of them head bytes), for hyper to read
    /// first, and why.
    Pass(Vec<u8>, Pass),
}

/// Why the gate leaves a connection to hyper before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// The client closed before a complete head.
    Closed,
    /// Not an HTTP/1 request head (hyper answers 400, or speaks HTTP/2 on its preface).
    Malformed(httparse::Error),
    /// Longer than [`MAX_HEAD`] (hyper answers 431).
    TooLong,
}

impl Pass {
    /// What to log about the client, if anything.
    fn problem(self) -> Option<&'static str> {
        match self {
            Pass::Closed => None,
            // HTTP/2 with prior knowledge: its preface is no HTTP/1 head and no problem.
            Pass::Malformed(httparse::Error::Version) => None,
            Pass::Malformed(httparse::Error::TooManyHeaders) => Some("more than 100 header fields"),
            Pass::Malformed(_) => Some("malformed request head"),
            Pass::TooLong => Some("request head longer than 408 KiB"),
        }
    }
}

/// Reads a connection's first request head and nothing past it: each look peeks at what has
/// arrived, and only the head's bytes are taken from the socket.
async fn read_head(tcp: &mut TcpStream) -> io::Result<Head> {
    let mut buf: Vec<u8> = Vec::new();
    let mut room = FIRST_READ;
    loop {
        let have = buf.len();
        buf.resize(room, 0);
        let n = tcp.peek(&mut buf[have..]).await?;
        if n == 0 {
            buf.truncate(have);
            return Ok(Head::Pass(buf, Pass::Closed));
        }
        let seen = have + n;
        match head_len(&buf[..seen]) {
            Ok(Some(len)) => {
                tcp.read_exact(&mut buf[have..len]).await?;
                buf.truncate(len);
                buf.shrink_to_fit();
                return Ok(Head::Complete(buf));
            }
            Ok(None) => {
                // All head bytes: take them, so the next look waits for more.
                tcp.read_exact(&mut buf[have..seen]).await?;
                buf.truncate(seen);
                if seen >= MAX_HEAD {
                    return Ok(Head::Pass(buf, Pass::TooLong));
                }
                if seen == room {
                    room = (room * 2).min(MAX_HEAD);
                }
            }
            Err(e) => {
                buf.truncate(have);
                buf.shrink_to_fit();
                return Ok(Head::Pass(buf, Pass::Malformed(e)));
            }
        }
    }
}

/// The length of the request head at the start of `bytes` (`None`: not complete yet).
fn head_len(bytes: &[u8]) -> Result<Option<usize>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    Ok(match request.parse(bytes)? {
        httparse::Status::Complete(len) => Some(len),
        httparse::Status::Partial => None,
    })
}

/// The request a complete head describes, for routing; `None` for what the gate leaves to
/// hyper to judge (anything it may refuse: an invalid method, target or field, ambiguous
/// framing), and for CONNECT.
fn request_of(head: &[u8]) -> Option<Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let method = Method::from_bytes(parsed.method?.as_bytes()).ok()?;
    if method == Method::CONNECT {
        return None;
    }
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut builder = Request::builder()
        .method(method)
        .uri(Uri::try_from(parsed.path?).ok()?)
        .version(version);
    for h in parsed.headers.iter() {
        builder = builder.header(
            header::HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            header::HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    let request = builder.body(()).ok()?;
    plain_framing(&request).then_some(request)
}

/// True when the body's framing is one hyper takes without question: no length, one length,
/// or chunked alone on HTTP/1.1.
fn plain_framing(request: &Request<()>) -> bool {
    let headers = request.headers();
    let lengths: Vec<_> = headers.get_all(header::CONTENT_LENGTH).iter().collect();
    let chunked = headers.contains_key(header::TRANSFER_ENCODING);
    if chunked {
        let last_is_chunked = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .next_back()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("chunked"));
        return lengths.is_empty() && request.version() == Version::HTTP_11 && last_is_chunked;
    }
    match lengths.as_slice() {
        [] => true,
        [one] => one
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A connected pair: (the client's end, the server's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    async fn rest(mut server: TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        server.read_to_end(&mut out).await.expect("read");
        out
    }

    #[tokio::test]
    async fn reads_exactly_the_head_and_leaves_the_body_in_the_socket() {
        let (mut client, mut server) = pair().await;
        let head = b"POST /up HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3000\r\n\r\n";
        let body = vec![b'x'; 3000];
        client
            .write_all(&[&head[..], &body[..]].concat())
            .await
            .expect("write");
        let got = read_head(&mut server).await.expect("head");
        assert_eq!(got, Head::Complete(head.to_vec()));
        if let Head::Complete(bytes) = &got {
            assert_eq!(bytes.capacity(), head.len(), "exactly sized");
        }
        drop(client);
        assert_eq!(rest(server).await, body);
    }

    #[tokio::test]
    async fn a_head_in_pieces_longer_than_the_first_read_is_assembled() {
        let (mut client, mut server) = pair().await;
        let cookie = "c".repeat(3 * FIRST_READ);
        let head = format!("GET / HTTP/1.1\r\nHost: a.test\r\nCookie: {cookie}\r\n\r\n");
        let reader = tokio::spawn(async move {
            let got = read_head(&mut server).await.expect("head");
            (got, server)
        });
        for piece in head.as_bytes().chunks(700) {
            client.write_all(piece).await.expect("write");
            tokio::task::yield_now().await;
        }
        client
            .write_all(b"GET /next HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let (got, server) = reader.await.expect("join");
        assert_eq!(got, Head::Complete(head.into_bytes()));
        drop(client);
        assert_eq!(rest(server).await, b"GET /next HTTP/1.1\r\n\r\n");
    }

    #[tokio::test]
    async fn malformed_heads_and_http2_go_to_hyper_with_nothing_lost() {
        for (sent, why) in [
            (
                &b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"[..],
                Pass::Malformed(httparse::Error::HeaderName),
            ),
            (
                &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
                Pass::Malformed(httparse::Error::Version),
            ),
        ] {
            let (mut client, mut server) = pair().await;
            client.write_all(sent).await.expect("write");
            let got = read_head(&mut server).await.expect("head");
            let Head::Pass(read, got_why) = got else {
                panic!("gated {sent:?}");
            };
            assert_eq!(got_why, why);
            drop(client);
            assert_eq!(
                [read, rest(server).await].concat(),
                sent,
                "every byte reaches hyper"
            );
        }
        assert_eq!(Pass::Malformed(httparse::Error::Version).problem(), None);
        assert!(Pass::Malformed(httparse::Error::HeaderName).problem().is_some());
    }

    #[tokio::test]
    async fn a_head_past_hyper_limit_is_handed_on_and_a_close_is_seen() {
        let (mut client, mut server) = pair().await;
        let long = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n", "l".repeat(MAX_HEAD));
        let writer = tokio::spawn(async move {
            let _ = client.write_all(long.as_bytes()).await;
            client
        });
        let got = read_head(&mut server).await.expect("head");
        let Head::Pass(read, Pass::TooLong) = got else {
            panic!("not refused as too long");
        };
        assert_eq!(read.len(), MAX_HEAD);
        drop(writer.await.expect("join"));

        let (mut client, mut server) = pair().await;
        client.write_all(b"GET / HT").await.expect("write");
        drop(client);
        assert_eq!(
            read_head(&mut server).await.expect("head"),
            Head::Pass(b"GET / HT".to_vec(), Pass::Closed)
        );
    }

    #[tokio::test]
    async fn bytes_past_the_head_neither_end_the_watch_nor_spin_it_and_a_close_ends_it() {
        let (mut client, mut server) = pair().await;
        client
            .write_all(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nhello")
            .await
            .expect("write");
        assert!(matches!(read_head(&mut server).await, Ok(Head::Complete(_))));
        let mut forgot = false;
        let watch = async {
            client_gone(&server, &mut forgot).await;
            "gone"
        };
        let waited = async {
            // More body while watched: an event, and still no close.
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(b"wor").await.expect("write");
            tokio::time::sleep(Duration::from_millis(50)).await;
            "waited"
        };
        // On this one-thread runtime a spinning watch would starve the timer.
        assert_eq!(tokio::select! { w = watch => w, w = waited => w }, "waited");
        assert!(forgot);
        // Registered anew, the waiting bytes are reported again: hyper reads them at once.
        let mut server = registered_anew(server).expect("registered");
        let mut rest = [0u8; 8];
        tokio::time::timeout(Duration::from_secs(10), server.read_exact(&mut rest))
            .await
            .expect("the waiting bytes are read")
            .expect("read");
        assert_eq!(&rest, b"hellowor", "nothing taken from the socket");
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), client_gone(&server, &mut forgot))
            .await
            .expect("the close is seen");
    }

    #[test]
    fn only_plainly_framed_requests_are_routed_by_the_gate() {
        let routed = |head: &str| request_of(head.as_bytes()).is_some();
        assert!(routed("GET /a?b=1 HTTP/1.1\r\nHost: a.test\r\n\r\n"));
        assert!(routed("POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\n"));
        assert!(routed("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
        assert!(!routed(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        ));
        assert!(!routed("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"));
        assert!(!routed("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"));
        assert!(!routed(
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
        ));
        assert!(!routed("POST / HTTP/1.1\r\nContent-Length: five\r\n\r\n"));
        assert!(!routed("CONNECT a.test:443 HTTP/1.1\r\nHost: a.test:443\r\n\r\n"));
        let request =
            request_of(b"GET /p HTTP/1.1\r\nHost: a.test\r\nX-A: 1\r\nX-A: 2\r\n\r\n").expect("routed");
        assert_eq!(request.uri().path(), "/p");
        assert_eq!(request.headers().get_all("x-a").iter().count(), 2);
    }
}
