//! `load`: open-loop HTTP/1.1 keep-alive load. Requests fall due at fixed intervals whatever
//! the responses do, and each one's latency runs from when it was due, so time spent waiting
//! for a busy connection counts (no coordinated omission). `--rate 0` is the closed loop
//! instead: each connection sends as soon as its previous response is in, which measures
//! saturation throughput, with latencies from the actual send.
//!
//! Only requests due (closed loop: sent) in the window after `--warmup-ms` count. `sent` is
//! those that went out, `ok` the 2xx among them, and `errors` everything else: other statuses,
//! failures, timeouts, and requests still waiting for a connection at the hard deadline, which
//! were never sent; so `ok + errors` is every request of the window. Latency percentiles cover
//! every request that got a response, whatever its status. `duration_ms` is the window,
//! stretched to its last response if the path fell behind, and `achieved_rps` is responses
//! over it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::hist::{self, Histogram, Summary};
use crate::timer::Timer;
use crate::tls::{self, Conn};
use crate::{h1, message, net, out};

/// Pause after a failed exchange in the closed loop, which would otherwise spin on a refusing
/// target as fast as connect(2) fails.
const CLOSED_LOOP_BACKOFF: Duration = Duration::from_millis(10);

/// Extra time to collect the workers after the hard deadline, which they observe themselves.
const JOIN_GRACE: Duration = Duration::from_secs(1);

pub struct LoadArgs {
    pub url: String,
    /// Where to connect instead of the URL's host (`host:port`).
    pub connect: Option<String>,
    /// For https:// URLs: the certificates the server must chain to.
    pub cacert: Option<std::path::PathBuf>,
    /// Requests per second; 0 = closed loop.
    pub rate: u64,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: u32,
    pub timeout: Duration,
    pub body_bytes: u64,
}

// Fields in the documented order.
#[derive(Serialize)]
struct Report {
    rate: u64,
    sent: u64,
    ok: u64,
    errors: u64,
    duration_ms: u64,
    achieved_rps: f64,
    latency_us: Summary,
}

/// The run's clock, fixed when the first request may go.
#[derive(Clone, Copy)]
struct Plan {
    /// Requests due (or, closed loop, sent) from here on are counted.
    window_start: Instant,
    /// No request is due, or sent, from here on.
    window_end: Instant,
    /// Everything stops here: the run's length plus `--timeout-ms`.
    hard: Instant,
    timeout: Duration,
}

/// Request `i` is due at `start + i/rate`, computed from `i` rather than accumulated so that
/// rounding never drifts.
#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    rate: u64,
}

const NS_PER_S: u128 = 1_000_000_000;

impl Schedule {
    /// Rounded up, so a request is never released before its time.
    fn at(&self, i: u64) -> Instant {
        let ns = (u128::from(i) * NS_PER_S).div_ceil(u128::from(self.rate));
        self.start + Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// How many requests are due by `now`: the `i` with `at(i) <= now`.
    fn due(&self, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(self.start).as_nanos();
        saturate(elapsed * u128::from(self.rate) / NS_PER_S + 1)
    }

    /// How many requests fall due before `offset` from the start.
    fn count_before(&self, offset: Duration) -> u64 {
        match offset.as_nanos().checked_sub(1) {
            None => 0,
            Some(last) => saturate(last * u128::from(self.rate) / NS_PER_S + 1),
        }
    }
}

fn saturate(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// The open loop's shared state: the pacer releases one permit per due request, and
/// whichever connection is free first takes the oldest one.
struct Open {
    schedule: Schedule,
    /// Requests due before the window ends, warmup included.
    total: u64,
    /// Requests due before the window starts (the warmup's), not counted.
    first_counted: u64,
    permits: Semaphore,
    next: AtomicU64,
}

struct Shared {
    plan: Plan,
    open: Option<Open>,
    request: h1::Request,
    /// The address that answered at setup: reconnects skip the resolver.
    target: SocketAddr,
    /// For https:// URLs.
    tls: Option<Arc<tls::Client>>,
}

/// A connection as the URL's scheme asks: TLS on top of `tcp` for https://.
async fn secure(tcp: TcpStream, tls: Option<&tls::Client>) -> Result<Conn> {
    let _ = tcp.set_nodelay(true);
    Ok(match tls {
        Some(client) => Conn::Tls(Box::new(client.handshake(tcp).await?)),
        None => Conn::Plain(tcp),
    })
}

/// One worker's counts over the requests in the window.
struct Tally {
    sent: u64,
    ok: u64,
    errors: u64,
    /// Every request that got a response, 2xx or not.
    latency: Histogram,
    last_done: Option<Instant>,
}

impl Tally {
    fn new() -> Self {
        Self {
            sent: 0,
            ok: 0,
            errors: 0,
            latency: Histogram::new(),
            last_done: None,
        }
    }

    fn add(&mut self, result: &Result<h1::Response>, from: Instant, done: Instant) {
        self.sent += 1;
        match result {
            Ok(resp) => {
                self.latency.record(done.saturating_duration_since(from));
                self.last_done = self.last_done.max(Some(done));
                if (200..300).contains(&resp.status) {
                    self.ok += 1;
                } else {
                    self.errors += 1;
                }
            }
            Err(_) => self.errors += 1,
        }
    }

    fn merge(&mut self, other: &Self) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
        self.last_done = self.last_done.max(other.last_done);
    }
}

pub async fn run(args: LoadArgs) -> Result<bool> {
    let (url, tls_name) = message::url_parts_tls(&args.url)?;
    let request = h1::Request::get(&url.authority, &url.path_and_query, args.body_bytes, false);
    let tls = match (&tls_name, &args.cacert) {
        (Some(name), Some(cacert)) => Some(Arc::new(tls::Client::new(cacert, name)?)),
        (Some(_), None) => bail!("an https:// URL needs --cacert"),
        (None, _) => None,
    };
    let connect = args.connect.clone().unwrap_or(url.connect.clone());

    // Every connection is open (TLS handshakes done) before the clock starts: connection
    // setup is `connrate`'s measurement, and a dead target should fail here once rather than
    // as every request.
    let setup = async {
        let addrs = net::resolve(&connect).await?;
        let (first, target) = net::connect_first(&addrs).await?;
        let mut streams = vec![secure(first, tls.as_deref()).await?];
        for _ in 1..args.connections {
            let tcp = TcpStream::connect(target)
                .await
                .with_context(|| format!("connect {target}"))?;
            streams.push(secure(tcp, tls.as_deref()).await?);
        }
        anyhow::Ok((streams, target))
    };
    let (streams, target) = match tokio::time::timeout(args.timeout, setup).await {
        Ok(r) => r?,
        Err(_) => bail!(
            "connect {connect}: timed out after {} ms",
            args.timeout.as_millis()
        ),
    };

    let start = Instant::now();
    let window_start = start + args.warmup;
    let window_end = window_start + args.duration;
    let plan = Plan {
        window_start,
        window_end,
        hard: window_end + args.timeout,
        timeout: args.timeout,
    };
    let open = (args.rate > 0).then(|| {
        let schedule = Schedule {
            start,
            rate: args.rate,
        };
        Open {
            schedule,
            total: schedule.count_before(args.warmup + args.duration),
            first_counted: schedule.count_before(args.warmup),
            permits: Semaphore::new(0),
            next: AtomicU64::new(0),
        }
    });
    let shared = Arc::new(Shared {
        plan,
        open,
        request,
        target,
        tls,
    });

    let workers = streams.len();
    let pacer = shared
        .open
        .is_some()
        .then(|| tokio::spawn(pace(shared.clone(), workers)));
    let mut set = JoinSet::new();
    for stream in streams {
        set.spawn(Worker::new(shared.clone(), stream).run());
    }
    let mut tally = Tally::new();
    // Bounded by the workers, which stop by the hard deadline, and by the deadline itself.
    loop {
        match tokio::time::timeout_at((plan.hard + JOIN_GRACE).into(), set.join_next()).await {
            Ok(Some(Ok(t))) => tally.merge(&t),
            Ok(Some(Err(e))) => eprintln!("weft-testapp: load worker failed: {e}"),
            Ok(None) => break,
            Err(_) => {
                eprintln!("weft-testapp: load workers still busy past the hard deadline");
                set.abort_all();
                break;
            }
        }
    }
    if let Some(pacer) = pacer {
        pacer.abort();
    }

    let mut errors = tally.errors;
    if let Some(open) = &shared.open {
        let unsent = (open.total - open.first_counted).saturating_sub(tally.sent);
        if unsent > 0 {
            eprintln!(
                "weft-testapp: {unsent} requests due in the window were never sent (still \
                 waiting for a connection {} ms after the run): counted as errors",
                args.timeout.as_millis()
            );
            errors += unsent;
        }
    }
    // The window, stretched to its last response when the path fell behind the schedule: the
    // time the counted requests took. (Not just to the last response: N requests due 1/rate
    // apart span N-1 intervals, which would overstate the rate of a short run.)
    let span = tally
        .last_done
        .map_or(window_end, |d| d.max(window_end))
        .saturating_duration_since(window_start);
    let achieved_rps = if span.is_zero() {
        0.0
    } else {
        // Responses of any status: the rate the path answered at.
        tally.latency.count() as f64 / span.as_secs_f64()
    };
    out::warn_summary();
    out::json(&Report {
        rate: args.rate,
        sent: tally.sent,
        ok: tally.ok,
        errors,
        duration_ms: u64::try_from(span.as_millis()).unwrap_or(u64::MAX),
        achieved_rps: hist::round(achieved_rps, 1),
        latency_us: tally.latency.summary(),
    })?;
    if tally.ok == 0 {
        // Exit 1 needs its reason on stderr even when no failure was printed above.
        eprintln!("weft-testapp: no request got a 2xx response");
        return Ok(false);
    }
    Ok(true)
}

/// Releases the open loop's requests as they fall due, on a timer precise to the microsecond
/// (see `timer`).
async fn pace(shared: Arc<Shared>, workers: usize) {
    let Some(open) = &shared.open else {
        return;
    };
    let timer = Timer::new();
    let mut released = 0;
    // Bounded by the schedule and the hard deadline: each pass releases at least one request
    // or waits until the next is due.
    while released < open.total && Instant::now() < shared.plan.hard {
        let due = open.schedule.due(Instant::now()).min(open.total);
        if due > released {
            open.permits
                .add_permits(usize::try_from(due - released).unwrap_or(usize::MAX));
            released = due;
        } else {
            timer.sleep_until(open.schedule.at(released)).await;
        }
    }
    // One more permit per worker: each takes an index past the end and stops.
    open.permits.add_permits(workers);
}

/// One connection's loop. The stream is reopened after a failure or a `Connection: close`;
/// the reconnect is part of the next request's latency, as it would be for a real client.
struct Worker {
    shared: Arc<Shared>,
    conn: Option<Conn>,
    buf: h1::Buffer,
    tally: Tally,
}

impl Worker {
    fn new(shared: Arc<Shared>, stream: Conn) -> Self {
        Self {
            shared,
            conn: Some(stream),
            buf: h1::Buffer::new(),
            tally: Tally::new(),
        }
    }

    async fn run(mut self) -> Tally {
        let shared = self.shared.clone();
        match &shared.open {
            Some(open) => self.open_loop(open).await,
            None => self.closed_loop().await,
        }
        self.tally
    }

    async fn open_loop(&mut self, open: &Open) {
        // Bounded by the schedule: every pass takes one index or stops.
        for _ in 0..=open.total {
            // Past the hard deadline requests still queued stay unsent (and count as errors)
            // rather than "fail" one after another without being sent.
            if !self.permit(open).await || Instant::now() >= self.shared.plan.hard {
                return;
            }
            let i = open.next.fetch_add(1, Ordering::Relaxed);
            if i >= open.total {
                return;
            }
            let due = open.schedule.at(i);
            let result = self.exchange().await;
            if i >= open.first_counted {
                self.tally.add(&result, due, Instant::now());
            }
        }
    }

    /// Waits for a due request; false at the hard deadline.
    async fn permit(&self, open: &Open) -> bool {
        let permit = match open.permits.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                let hard = self.shared.plan.hard.into();
                match tokio::time::timeout_at(hard, open.permits.acquire()).await {
                    Ok(Ok(p)) => p,
                    _ => return false,
                }
            }
        };
        // Permits stand for requests, which are used up, not returned.
        permit.forget();
        true
    }

    async fn closed_loop(&mut self) {
        let plan = self.shared.plan;
        // Bounded by time: every pass starts before the window's end and is itself bounded by
        // the request timeout.
        loop {
            let sent_at = Instant::now();
            if sent_at >= plan.window_end {
                return;
            }
            let result = self.exchange().await;
            if sent_at >= plan.window_start {
                self.tally.add(&result, sent_at, Instant::now());
            }
            if result.is_err() {
                let resume = (Instant::now() + CLOSED_LOOP_BACKOFF).min(plan.window_end);
                tokio::time::sleep_until(resume.into()).await;
            }
        }
    }

    /// One request and its whole response, within the request timeout and the hard deadline.
    async fn exchange(&mut self) -> Result<h1::Response> {
        let plan = self.shared.plan;
        let own = Instant::now() + plan.timeout;
        let deadline = own.min(plan.hard);
        let result = match tokio::time::timeout_at(deadline.into(), self.try_exchange()).await {
            Ok(r) => r,
            Err(_) => {
                // Mid-exchange: whatever arrives later on this stream belongs to no request.
                self.conn = None;
                Err(if own <= plan.hard {
                    anyhow!("no response within {} ms", plan.timeout.as_millis())
                } else {
                    anyhow!("no response by the end of the run (its length + --timeout-ms)")
                })
            }
        };
        match &result {
            Ok(resp) if !(200..300).contains(&resp.status) => {
                out::warn_limited(format_args!("response status {}", resp.status));
            }
            Ok(_) => {}
            Err(e) => out::warn_limited(format_args!("request: {e:#}")),
        }
        result
    }

    async fn try_exchange(&mut self) -> Result<h1::Response> {
        // One retry, only when a reused connection closed before answering: the server's idle
        // close raced the request, which never reached it.
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            let stream = match &mut self.conn {
                Some(s) => s,
                None => {
                    self.buf.clear();
                    let target = self.shared.target;
                    let s = TcpStream::connect(target)
                        .await
                        .with_context(|| format!("connect {target}"))?;
                    let s = secure(s, self.shared.tls.as_deref()).await?;
                    self.conn.insert(s)
                }
            };
            match h1::exchange(stream, &mut self.buf, &self.shared.request).await {
                Ok(resp) => {
                    if !resp.keep_alive {
                        self.conn = None;
                    }
                    return Ok(resp);
                }
                Err(e) => {
                    self.conn = None;
                    if attempt == 0 && reused && e.is::<h1::ClosedEarly>() {
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(h1::ClosedEarly.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_counts() {
        let s = Schedule {
            start: Instant::now(),
            rate: 200,
        };
        assert_eq!(s.count_before(Duration::ZERO), 0);
        assert_eq!(s.count_before(Duration::from_secs(1)), 200);
        assert_eq!(s.count_before(Duration::from_millis(1500)), 300);
        // 5 ms apart: the one due exactly at 5 ms is not before it.
        assert_eq!(s.count_before(Duration::from_millis(5)), 1);
        assert_eq!(s.count_before(Duration::from_micros(5001)), 2);
        let s = Schedule {
            start: s.start,
            rate: 3,
        };
        assert_eq!(s.count_before(Duration::from_secs(1)), 3);
    }

    #[test]
    fn due_matches_at() {
        let start = Instant::now();
        for rate in [1, 3, 7, 200, 999, 100_000] {
            let s = Schedule { start, rate };
            for i in [0, 1, 2, 10, 12_345] {
                let at = s.at(i);
                assert_eq!(s.due(at), i + 1, "rate {rate} i {i}");
                if i > 0 {
                    assert_eq!(s.due(at - Duration::from_nanos(1)), i, "rate {rate} i {i}");
                }
            }
        }
    }
}
