//! The writing end of access logs: a bounded queue to one writer thread per process.
//!
//! [`AccessLog::active`] answers, for the mesh config in force, whether lines are written
//! and where; it caches the parsed format, so a request costs a comparison of the three
//! settings. A change of settings is a new generation: the writer reopens the file (so
//! a rotated file is picked up by touching the config), or stops writing when the file is
//! empty (off, Istio's default). `try_send` never waits: a line that does not fit in the
//! queue is dropped and counted (`istio_weft_access_log_lines_dropped_total`).
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::ArcSwapOption;
use prometheus_client::metrics::counter::Counter;

use super::encoding::Encoding;
use super::format::Format;

/// Lines queued for the writer before new ones are dropped.
pub const QUEUE_LINES: usize = 4096;

struct Line {
    generation: u64,
    path: Arc<Path>,
    text: String,
}

/// The settings an [`ActiveLog`] was made for.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    file: String,
    encoding: Encoding,
    format: String,
}

/// Access logging as the mesh config has it now: where, and in what format.
pub struct ActiveLog {
    settings: Settings,
    generation: u64,
    path: Option<Arc<Path>>,
    format: Format,
    sender: SyncSender<Line>,
    dropped: Counter,
}

impl ActiveLog {
    /// Whether lines are written (`accessLogFile` set).
    pub fn is_on(&self) -> bool {
        self.path.is_some()
    }

    pub fn encoding(&self) -> Encoding {
        self.settings.encoding
    }

    /// The parsed `accessLogFormat` (Istio's default for the encoding when unset, or when
    /// a JSON format does not parse, as Istio does).
    pub fn format(&self) -> &Format {
        &self.format
    }

    /// Queues `line` (without its newline); dropped and counted when the queue is full.
    pub fn write(&self, line: String) {
        let Some(path) = &self.path else {
            return;
        };
        let line = Line {
            generation: self.generation,
            path: path.clone(),
            text: line,
        };
        // Full, or the writer is gone: either way the line is lost, and counted.
        if self.sender.try_send(line).is_err() {
            self.dropped.inc();
        }
    }
}

/// A process's access log.
pub struct AccessLog {
    active: ArcSwapOption<ActiveLog>,
    /// Serializes the rebuild when settings change.
    rebuild: Mutex<u64>,
    sender: OnceLock<SyncSender<Line>>,
    capacity: usize,
    dropped: Counter,
}

impl AccessLog {
    /// An access log counting dropped lines in `dropped`.
    pub fn new(dropped: Counter) -> Arc<Self> {
        Self::with_capacity(dropped, QUEUE_LINES)
    }

    pub fn with_capacity(dropped: Counter, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            active: ArcSwapOption::empty(),
            rebuild: Mutex::new(0),
            sender: OnceLock::new(),
            capacity,
            dropped,
        })
    }

    /// The access log for meshConfig's `file`, `encoding` and `format`; `None` when off.
    pub fn active(&self, file: &str, encoding: Encoding, format: &str) -> Option<Arc<ActiveLog>> {
        let current = self.active.load_full();
        if let Some(active) = &current
            && active.settings.file == file
            && active.settings.encoding == encoding
            && active.settings.format == format
        {
            return active.is_on().then(|| active.clone());
        }
        if file.is_empty() && current.is_none() {
            return None;
        }
        let mut generation = crate::sync::lock(&self.rebuild);
        *generation += 1;
        let path = (!file.is_empty()).then(|| Arc::<Path>::from(PathBuf::from(file)));
        let parsed = match Format::parse(encoding, format) {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::warn!(%error, "access log format not usable; Istio's default is used");
                Format::default_for(encoding)
            }
        };
        let active = Arc::new(ActiveLog {
            settings: Settings {
                file: file.to_string(),
                encoding,
                format: format.to_string(),
            },
            generation: *generation,
            path,
            format: parsed,
            sender: self.sender().clone(),
            dropped: self.dropped.clone(),
        });
        self.active.store(Some(active.clone()));
        active.is_on().then_some(active)
    }

    fn sender(&self) -> &SyncSender<Line> {
        self.sender.get_or_init(|| {
            let (sender, receiver) = sync_channel(self.capacity);
            let spawned = std::thread::Builder::new()
                .name("access-log".into())
                .spawn(move || write_lines(&receiver));
            if let Err(error) = spawned {
                tracing::warn!(%error, "cannot start the access log writer; lines are dropped");
            }
            sender
        })
    }
}

/// The writer thread: one open file at a time, reopened when a line comes from a newer
/// generation; flushed whenever the queue is empty. Ends when every sender is gone.
fn write_lines(receiver: &Receiver<Line>) {
    let mut open: Option<(u64, Option<BufWriter<File>>)> = None;
    while let Ok(line) = receiver.recv() {
        let mut next = Some(line);
        while let Some(line) = next.take() {
            if open.as_ref().is_none_or(|(g, _)| *g != line.generation) {
                if let Some((_, Some(mut file))) = open.take() {
                    let _ = file.flush();
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&line.path)
                    .map(BufWriter::new);
                let file = match file {
                    Ok(file) => Some(file),
                    Err(error) => {
                        tracing::warn!(path = %line.path.display(), %error, "cannot open the access log file");
                        None
                    }
                };
                open = Some((line.generation, file));
            }
            if let Some((_, Some(file))) = &mut open {
                let written = file
                    .write_all(line.text.as_bytes())
                    .and_then(|()| file.write_all(b"\n"));
                if let Err(error) = written {
                    tracing::warn!(%error, "cannot write the access log");
                }
            }
            next = receiver.try_recv().ok();
        }
        if let Some((_, Some(file))) = &mut open {
            let _ = file.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn wait_for_lines(path: &Path, count: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= count || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn lines_go_to_the_configured_file_and_follow_a_change_of_file() {
        let dir = tempfile::tempdir().expect("dir");
        let first = dir.path().join("a.log");
        let second = dir.path().join("b.log");
        let log = AccessLog::new(Counter::default());
        assert!(
            log.active("", Encoding::Text, "").is_none(),
            "off by default"
        );
        let active = log
            .active(first.to_str().expect("path"), Encoding::Text, "")
            .expect("on");
        active.write("one".into());
        assert_eq!(wait_for_lines(&first, 1), "one\n");
        let moved = log
            .active(second.to_str().expect("path"), Encoding::Json, "")
            .expect("on");
        moved.write("two".into());
        assert_eq!(wait_for_lines(&second, 1), "two\n");
        assert!(log.active("", Encoding::Text, "").is_none(), "turned off");
        assert_eq!(std::fs::read_to_string(&first).expect("read"), "one\n");
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_instead_of_waiting() {
        let dropped = Counter::default();
        let log = AccessLog::with_capacity(dropped.clone(), 0);
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("a.log");
        let active = log
            .active(path.to_str().expect("path"), Encoding::Text, "")
            .expect("on");
        // A zero-capacity queue takes a line only while the writer waits on it: most of a
        // burst is dropped, and every line is either written or counted.
        for i in 0..200 {
            active.write(format!("line {i}"));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let written = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .count() as u64;
            if written + dropped.get() == 200 || Instant::now() > deadline {
                assert_eq!(written + dropped.get(), 200);
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dropped.get() > 0, "a burst past the queue is dropped");
    }
}
