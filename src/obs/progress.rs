//! Progress on the terminal for long work of the command line (loading a
//! model, replaying a log, evaluating a file): a spinner that turns into a
//! bar, hidden when stderr is not a terminal, with log lines written above it
//! through [`LogWriter`].

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

/// The progress bar on screen, if any: log lines are printed above it.
static SHOWN: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Writes log lines to stderr, around the progress bar on screen.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = SHOWN.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Progress on stderr (hidden when stderr is not a terminal): a spinner
/// saying what is going on until [`Progress::bar`] turns it into a bar.
/// Log lines print above it; it is cleared when dropped.
pub struct Progress(ProgressBar);

impl Progress {
    /// A spinner saying `message`.
    pub fn spinner(message: &str) -> Self {
        let bar = ProgressBar::new_spinner();
        if std::io::stderr().is_terminal() {
            bar.enable_steady_tick(Duration::from_millis(120));
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.to_string());
        if let Ok(mut shown) = SHOWN.lock() {
            *shown = Some(bar.clone());
        }
        Self(bar)
    }

    /// The bar itself (position, message, printing above it).
    pub fn handle(&self) -> &ProgressBar {
        &self.0
    }

    /// Turns the spinner into a bar of `len` steps drawn with `template`.
    pub fn bar(&self, len: u64, template: &str) {
        if self.0.length() != Some(len) {
            self.0.set_length(len);
            self.0.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            self.0.set_message("");
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Ok(mut shown) = SHOWN.lock() {
            *shown = None;
        }
        self.0.finish_and_clear();
    }
}
