//! A loopback HTTP server that only enforces a [`Quota`], on the caller's tokio clock.
//!
//! wiremock (and so [`KeyCrmMock`](super::KeyCrmMock)) answers from a runtime thread of its
//! own, which a paused test clock does not reach: its quota counts real time. This server
//! runs as tasks of the runtime that starts it instead, and counts the quota on
//! `tokio::time`, so that under a paused clock (`#[tokio::test(start_paused = true)]`)
//! server and client read the same time and a minute of quota costs no real time. It is
//! what the quota tests and the `quota_wall_time` bench measure clients against.
//!
//! It speaks just enough HTTP/1.1 (keep-alive, `Content-Length` bodies) for the client:
//! every request, whatever its path, is counted by a [`QuotaCounter`]; an allowed one is
//! answered 200 with a one-item page (`{"current_page":1,"last_page":1,"data":[...]}`, which
//! the list operations of reference data decode), a refused one 429 with Laravel's message;
//! both with the quota's headers ([`QuotaAnswer::headers`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;

#[cfg(doc)]
use super::quota::QuotaAnswer;
use super::quota::{Quota, QuotaCounter};
use crate::{Client, ClientBuilder};

/// The body of an allowed answer: a page of one reference item.
const PAGE: &str = r#"{"current_page":1,"last_page":1,"data":[{"id":1,"name":"new"}]}"#;
/// The body of a 429, as Laravel words it.
const TOO_MANY: &str = r#"{"message":"Too Many Attempts."}"#;
/// The wall-clock time the server's clock starts at (for `X-RateLimit-Reset`): a fixed
/// date, so that answers do not depend on the machine's time.
const WALL_ORIGIN: Duration = Duration::from_secs(1_800_000_000);

/// One request as the server counted it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Arrival {
    /// When it arrived, since the server started.
    pub at: Duration,
    /// Whether the quota let it pass (`false`: answered 429).
    pub allowed: bool,
}

/// A loopback server enforcing a [`Quota`] on the runtime's (possibly paused) tokio clock
/// (see the [module docs](self)). Dropping it stops it.
///
/// ```
/// use std::time::Duration;
/// use keycrm_api::mock::{Quota, QuotaServer, Window};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let server = QuotaServer::start(Quota::per_minute(2).with_model(Window::Rolling)).await;
/// let client = server.client("key").burst(5).pacing(keycrm_api::PacingMode::Even).build().unwrap();
/// for _ in 0..3 {
///     let _ = client.order_status_list().send().await;
/// }
/// // Two pass at once; the third is refused once, then waits out `Retry-After` (60 s).
/// assert_eq!(server.rejected(), 1);
/// assert_eq!(server.arrivals().last().map(|a| a.at), Some(Duration::from_secs(60)));
/// # }
/// ```
#[derive(Debug)]
pub struct QuotaServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    counter: Mutex<QuotaCounter>,
    arrivals: Mutex<Vec<Arrival>>,
    start: Instant,
    latency: Duration,
}

/// The data behind a lock is plain and updated without panicking: a poisoned lock (a test
/// thread that panicked) is used as is.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl QuotaServer {
    /// Starts a server on `127.0.0.1` that answers at once.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound (a test environment without networking).
    pub async fn start(quota: Quota) -> Self {
        Self::start_with_latency(quota, Duration::ZERO).await
    }

    /// Starts a server that counts each request on arrival and answers it `latency` later
    /// (on the tokio clock).
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn start_with_latency(quota: Quota, latency: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the quota server");
        let addr = listener.local_addr().expect("the bound address");
        let shared = Arc::new(Shared {
            counter: Mutex::new(QuotaCounter::new(quota)),
            arrivals: Mutex::new(Vec::new()),
            start: Instant::now(),
            latency,
        });
        let state = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, state.clone()));
            }
        });
        Self {
            addr,
            shared,
            accept,
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:port`, the base URL for a client.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A client builder for this server with `key`.
    pub fn client(&self, key: &str) -> ClientBuilder {
        Client::builder().api_key(key).base_url(self.uri())
    }

    /// The quota the server enforces.
    pub fn quota(&self) -> Quota {
        lock(&self.shared.counter).quota()
    }

    /// Every request so far, in order of arrival.
    pub fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.shared.arrivals).clone()
    }

    /// How many requests were answered 429 (requests counted by
    /// [`spend_elsewhere`](Self::spend_elsewhere) not included).
    pub fn rejected(&self) -> usize {
        lock(&self.shared.arrivals)
            .iter()
            .filter(|a| !a.allowed)
            .count()
    }

    /// Time since the server started, on its clock.
    pub fn elapsed(&self) -> Duration {
        self.shared.start.elapsed()
    }

    /// Another user of the same key spends `n` requests now (counted, not recorded as
    /// arrivals).
    pub fn spend_elsewhere(&self, n: u32) {
        let now = self.elapsed();
        let mut counter = lock(&self.shared.counter);
        for _ in 0..n {
            counter.hit(now);
        }
    }
}

impl Drop for QuotaServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Serves one keep-alive connection until the client closes it.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buffer = Vec::new();
    while let Some(length) = read_request(&mut stream, &mut buffer).await {
        buffer.drain(..length);
        let now = shared.start.elapsed();
        let answer = lock(&shared.counter).hit(now);
        lock(&shared.arrivals).push(Arrival {
            at: now,
            allowed: answer.allowed,
        });
        if !shared.latency.is_zero() {
            tokio::time::sleep(shared.latency).await;
        }
        let (status, body) = if answer.allowed {
            (200, PAGE)
        } else {
            (429, TOO_MANY)
        };
        let wall = UNIX_EPOCH + WALL_ORIGIN + now;
        let response = render(status, body, &answer.headers(wall));
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Reads one request (head and `Content-Length` body) into `buffer`; its length, or `None`
/// when the connection ends.
async fn read_request(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<usize> {
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, buffer).await?;
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_ascii_lowercase();
    let body_len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    while buffer.len() < head_end + body_len {
        read_more(stream, buffer).await?;
    }
    Some(head_end + body_len)
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 4096];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buffer.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn render(status: u16, body: &str, headers: &[(&'static str, String)]) -> String {
    let reason = if status == 200 {
        "OK"
    } else {
        "Too Many Requests"
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_carry_the_quota_headers() {
        let text = render(
            429,
            TOO_MANY,
            &[("retry-after", "5".to_string()), ("x-a", "b".to_string())],
        );
        assert!(
            text.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{text}"
        );
        assert!(
            text.contains("\r\nretry-after: 5\r\nx-a: b\r\n\r\n{"),
            "{text}"
        );
        assert!(text.contains(&format!("content-length: {}\r\n", TOO_MANY.len())));
    }
}
