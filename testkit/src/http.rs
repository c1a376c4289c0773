//! The bit of HTTP/1.1 the doubles speak: binary-safe requests (`Content-Length` or chunked
//! bodies) read from a keep-alive connection, and responses written in one `write`.

use std::io::{self, BufRead, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// Largest request body accepted (1 GiB); a larger one is a bad request.
const MAX_BODY: usize = 1 << 30;

/// One request as received.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The request target: path and query, as sent (still percent-encoded).
    pub target: String,
    /// Headers, names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The target's path, without the query.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The target's query (after `?`), empty when none.
    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, q)| q)
    }

    /// Whether the client asked to close the connection after this request.
    pub fn wants_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

/// What reading a request gave.
pub(crate) enum Incoming {
    /// A complete request.
    Request(Request),
    /// The peer closed the connection (or it failed) between requests.
    Closed,
    /// Not HTTP we understand: answer 400 and close.
    Malformed(String),
}

fn read_line(reader: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line)? == 0 {
        return Ok(None);
    }
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

/// Reads one request from a keep-alive connection.
pub(crate) fn read_request(reader: &mut impl BufRead) -> Incoming {
    match try_read_request(reader) {
        Ok(Some(Ok(request))) => Incoming::Request(request),
        Ok(Some(Err(why))) => Incoming::Malformed(why),
        Ok(None) | Err(_) => Incoming::Closed,
    }
}

type Parsed = Option<Result<Request, String>>;

fn try_read_request(reader: &mut impl BufRead) -> io::Result<Parsed> {
    let Some(line) = read_line(reader)? else {
        return Ok(None);
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(Some(Err(format!("bad request line {line:?}"))));
    };
    if !version.starts_with("HTTP/1.") {
        return Ok(Some(Err(format!("unsupported version {version:?}"))));
    }
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut headers = Vec::new();
    loop {
        let Some(header) = read_line(reader)? else {
            return Ok(None);
        };
        if header.is_empty() {
            break;
        }
        let Some((name, value)) = header.split_once(':') else {
            return Ok(Some(Err(format!("bad header line {header:?}"))));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    let mut request = Request {
        method,
        target,
        headers,
        body: Vec::new(),
    };
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        match read_chunked(reader)? {
            Ok(body) => request.body = body,
            Err(why) => return Ok(Some(Err(why))),
        }
    } else if let Some(length) = request.header("content-length") {
        let Ok(length) = length.parse::<usize>() else {
            return Ok(Some(Err(format!("bad content-length {length:?}"))));
        };
        if length > MAX_BODY {
            return Ok(Some(Err(format!("body of {length} bytes is too large"))));
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        request.body = body;
    }
    Ok(Some(Ok(request)))
}

/// A chunked body: `size-hex[;ext]\r\n data \r\n` ... `0\r\n` trailers `\r\n`.
fn read_chunked(reader: &mut impl BufRead) -> io::Result<Result<Vec<u8>, String>> {
    let mut body = Vec::new();
    loop {
        let Some(line) = read_line(reader)? else {
            return Err(io::ErrorKind::UnexpectedEof.into());
        };
        let size = line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            return Ok(Err(format!("bad chunk size {line:?}")));
        };
        if body.len().saturating_add(size) > MAX_BODY {
            return Ok(Err("chunked body is too large".to_owned()));
        }
        if size == 0 {
            // Trailers up to the empty line.
            while read_line(reader)?.is_some_and(|l| !l.is_empty()) {}
            return Ok(Ok(body));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0; 2];
        reader.read_exact(&mut crlf)?;
        if crlf != *b"\r\n" {
            return Ok(Err("chunk not followed by CRLF".to_owned()));
        }
    }
}

/// One response.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    /// Status code.
    pub status: u16,
    /// Headers besides `Content-Length`, which is the body's length unless given here.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with a body and a `Content-Type`.
    pub fn new(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body: body.into(),
        }
    }

    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Response {
        Response::new(status, "application/json", value.to_string())
    }

    /// Adds a header.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_owned(), value.into()));
        self
    }
}

/// Writes `response` in one `write` (a second small write would wait for the peer's delayed
/// ACK under Nagle). With `head_only` (a `HEAD` request) the headers, `Content-Length`
/// included, are those of the full response, but no body follows.
pub(crate) fn write_response(
    writer: &mut impl Write,
    response: &Response,
    head_only: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        response.status,
        reason(response.status)
    );
    let mut has_length = false;
    for (name, value) in &response.headers {
        has_length |= name.eq_ignore_ascii_case("content-length");
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if !has_length {
        out.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head_only {
        bytes.extend_from_slice(&response.body);
    }
    writer.write_all(&bytes)?;
    writer.flush()
}

/// The reason phrase of a status.
pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        412 => "Precondition Failed",
        416 => "Range Not Satisfiable",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        _ => "Internal Server Error",
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus_is_space`, as in forms).
pub(crate) fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit() =>
            {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("0");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                i += 3;
                continue;
            }
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&b=2&b=3` as decoded pairs, in order.
pub(crate) fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k, true), percent_decode(v, true))
        })
        .collect()
}

/// An accept loop on a loopback port with a thread per connection; stops when dropped.
pub(crate) struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    /// Listens on `port` (0: any free port); returns the listener and the port it got.
    pub fn bind(port: u16) -> (TcpListener, u16) {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind a loopback port");
        let port = listener.local_addr().map_or(0, |a| a.port());
        (listener, port)
    }

    /// Hands each connection of `listener` to `serve` on its own thread, until `stop` is set
    /// (dropping the server sets it).
    pub fn start(
        listener: TcpListener,
        stop: Arc<AtomicBool>,
        serve: impl Fn(TcpStream) + Send + Sync + 'static,
    ) -> Server {
        let port = listener.local_addr().map_or(0, |a| a.port());
        let serve = Arc::new(serve);
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let serve = serve.clone();
                    std::thread::spawn(move || serve(stream));
                }
            })
        };
        Server {
            port,
            stop,
            thread: Some(thread),
        }
    }

    /// The port listened on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn read(raw: &[u8]) -> Request {
        match read_request(&mut BufReader::new(raw)) {
            Incoming::Request(r) => r,
            Incoming::Closed => panic!("closed"),
            Incoming::Malformed(why) => panic!("malformed: {why}"),
        }
    }

    #[test]
    fn binary_and_chunked_bodies() {
        let r = read(b"PUT /x?a=1 HTTP/1.1\r\nContent-Length: 4\r\nX-A: b\r\n\r\n\0\xff\x01\x02");
        assert_eq!(r.body, b"\0\xff\x01\x02");
        assert_eq!((r.path(), r.query()), ("/x", "a=1"));
        assert_eq!(r.header("x-a"), Some("b"));
        let r = read(
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nab\0\r\n2\r\n\r\n\r\n0\r\nT: 1\r\n\r\n",
        );
        assert_eq!(r.body, b"ab\0\r\n");
    }

    #[test]
    fn malformed_and_closed() {
        let mut empty = BufReader::new(&b""[..]);
        assert!(matches!(read_request(&mut empty), Incoming::Closed));
        let mut bad = BufReader::new(&b"garbage\r\n\r\n"[..]);
        assert!(matches!(read_request(&mut bad), Incoming::Malformed(_)));
        let mut bad = BufReader::new(&b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"[..]);
        assert!(matches!(read_request(&mut bad), Incoming::Malformed(_)));
    }

    #[test]
    fn head_has_length_but_no_body() {
        let mut out = Vec::new();
        write_response(&mut out, &Response::new(200, "text/plain", "hello"), true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Content-Length: 5\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("a%2Fb+c%", false), "a/b+c%");
        assert_eq!(
            form_pairs("paths=a%2Fb&paths=c+d&expand=False"),
            vec![
                ("paths".into(), "a/b".into()),
                ("paths".into(), "c d".into()),
                ("expand".into(), "False".into())
            ]
        );
    }
}
