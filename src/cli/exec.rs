//! `exec` and `attach`.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};

use clap::Args;
use nix::fcntl::OFlag;
use zbus::Variant;

use super::attach::{local_size, pump, Resizer, Streams};
use super::proxy::ExecSessionProxy;
use super::{container, explain};

#[derive(Args)]
pub struct ExecArgs {
    /// Send berthctl's stdin.
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a terminal.
    #[arg(short, long)]
    tty: bool,
    #[arg(short, long = "env")]
    env: Vec<String>,
    #[arg(short, long)]
    user: Option<String>,
    #[arg(short, long = "workdir")]
    workdir: Option<String>,
    #[arg(long)]
    privileged: bool,
    container: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<String>,
}

fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

/// Runs the command through `Exec`; the session's exit code is berthctl's status.
pub async fn exec(connection: &zbus::Connection, args: ExecArgs) -> anyhow::Result<i32> {
    let container = container(connection, &args.container).await?;
    let mut options: HashMap<&str, Variant<'_>> = HashMap::new();
    if !args.env.is_empty() {
        options.insert("Env", Variant::from(args.env.clone()));
    }
    if let Some(user) = &args.user {
        options.insert("User", Variant::from(user.as_str()));
    }
    if let Some(dir) = &args.workdir {
        options.insert("WorkingDir", Variant::from(dir.as_str()));
    }
    if args.privileged {
        options.insert("Privileged", Variant::from(true));
    }
    let command: Vec<&str> = args.command.iter().map(String::as_str).collect();
    // Without a terminal the process writes straight into pipes berthctl reads; with one,
    // its pty master comes from OpenPTY.
    let (path, local) = if args.tty {
        options.insert("Terminal", Variant::from(true));
        if let Some(size) = local_size() {
            options.insert("TerminalSize", Variant::from(size));
        }
        let path = container.exec(&command, options).await.map_err(explain)?;
        (path, None)
    } else {
        let (stdout_read, stdout_write) = pipe()?;
        let (stderr_read, stderr_write) = pipe()?;
        let stdin = if args.interactive {
            Some(pipe()?)
        } else {
            None
        };
        options.insert(
            "Stdout",
            Variant::from(zbus::Fd::from(stdout_write.as_fd())),
        );
        options.insert(
            "Stderr",
            Variant::from(zbus::Fd::from(stderr_write.as_fd())),
        );
        if let Some((read, _)) = &stdin {
            options.insert("Stdin", Variant::from(zbus::Fd::from(read.as_fd())));
        }
        let path = container.exec(&command, options).await.map_err(explain)?;
        // Only the process holds the write ends now: end of file comes when it is done.
        drop((stdout_write, stderr_write));
        let streams = Streams {
            stdin: stdin.map(|(_, write)| write),
            stdout: stdout_read,
            stderr: Some(stderr_read),
        };
        (path, Some(streams))
    };
    let session = ExecSessionProxy::builder(connection)
        .path(path)
        .build()
        .await?;
    let streams = match local {
        Some(streams) => streams,
        None => {
            let master: OwnedFd = session.open_pty().await.map_err(explain)?.into();
            Streams {
                stdin: Some(master.try_clone()?),
                stdout: master,
                stderr: None,
            }
        }
    };
    pump(streams, args.tty, Resizer::Session(&session)).await?;
    let code = session.wait().await.map_err(explain)?;
    let _ = session.remove().await;
    Ok(code)
}

/// Attaches until the container's output ends; its exit code is berthctl's status.
pub async fn attach(
    connection: &zbus::Connection,
    name: &str,
    with_stdin: bool,
) -> anyhow::Result<i32> {
    let container = container(connection, name).await?;
    let terminal = container.terminal().await?;
    let options = HashMap::from([("Stdin", Variant::from(with_stdin))]);
    let (stdin, stdout, stderr) = container.attach(options).await.map_err(explain)?;
    if let (true, Some((rows, cols))) = (terminal, local_size()) {
        let _ = container.resize(rows, cols).await;
    }
    let streams = Streams {
        stdin: with_stdin.then(|| stdin.into()),
        stdout: stdout.into(),
        stderr: (!terminal).then(|| stderr.into()),
    };
    pump(streams, terminal, Resizer::Container(&container)).await?;
    container.wait().await.map_err(explain)
}
