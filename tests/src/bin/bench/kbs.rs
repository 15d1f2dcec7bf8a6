//! The test KBS on a thread and runtime of its own, so the load client never slows it down.

use std::path::Path;
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use stack_tests::kbs::{EndpointCounts, TestKbs, TestKbsConfig};
use tokio::sync::{mpsc, oneshot};

/// A request to the KBS thread.
enum Command {
    Counts(oneshot::Sender<EndpointCounts>),
}

/// A running test KBS serving the resources under a directory.
pub struct KbsThread {
    url: String,
    commands: mpsc::Sender<Command>,
    thread: JoinHandle<Result<()>>,
}

impl KbsThread {
    /// Starts the KBS over `resource_dir` and waits until it listens.
    pub fn start(resource_dir: &Path) -> Result<Self> {
        let config = TestKbsConfig::new(resource_dir);
        let (commands, mut received) = mpsc::channel::<Command>(4);
        let (started, url) = std::sync::mpsc::channel::<Result<String>>();
        let thread = std::thread::spawn(move || -> Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to start the test KBS runtime")?;
            runtime.block_on(async move {
                let kbs = match TestKbs::start(config).await {
                    Ok(kbs) => kbs,
                    Err(e) => {
                        // The receiver reports the failure; this thread has nothing to add.
                        let _ = started.send(Err(e));
                        return Ok(());
                    }
                };
                // A gone receiver means the bench already gave up; serving on is harmless.
                let _ = started.send(Ok(kbs.url()));
                while let Some(Command::Counts(reply)) = received.recv().await {
                    let _ = reply.send(kbs.counts());
                }
                kbs.shutdown().await
            })
        });
        let url = url
            .recv()
            .context("the test KBS thread ended before it listened")??;
        Ok(Self {
            url,
            commands,
            thread,
        })
    }

    /// Base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests received so far, by endpoint.
    pub async fn counts(&self) -> Result<EndpointCounts> {
        let (reply, counts) = oneshot::channel();
        self.commands
            .send(Command::Counts(reply))
            .await
            .context("the test KBS thread is gone")?;
        counts.await.context("the test KBS thread is gone")
    }

    /// Stops the KBS and waits for its thread.
    pub fn shutdown(self) -> Result<()> {
        drop(self.commands);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the test KBS thread panicked"))?
    }
}
