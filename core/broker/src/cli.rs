//! `uringmq passwd`: the `mosquitto_passwd` work-alike, as a subcommand of the broker binary so
//! one install manages its own password files. Parsing only; `uringmq_auth::passwd::run` does
//! the work. In the library (not the binary) so that the pip-installed `uringmq` command runs
//! this very definition through the Python bindings.
//!
//! ```text
//! uringmq passwd [-H argon2id|sha512-pbkdf2|scram-sha-256] [-c | -D] passwordfile username
//! uringmq passwd [-H argon2id|sha512-pbkdf2|scram-sha-256] [-c] -b passwordfile username password
//! ```

use clap::Args;
use std::path::PathBuf;
use uringmq_auth::passwd::{run, tty_prompt};
use uringmq_auth::{PasswdArgs, PasswdOutcome, Scheme};

/// Create or update entries of a Mosquitto-compatible password file.
#[derive(Args, Debug)]
pub struct Passwd {
    /// Create a new file (overwriting an existing one).
    #[arg(short = 'c', conflicts_with = "delete")]
    create: bool,
    /// Delete the user.
    #[arg(short = 'D')]
    delete: bool,
    /// Batch mode: the password is the last argument instead of a prompt.
    #[arg(short = 'b')]
    batch: bool,
    /// Hash for the new entry: argon2id (default), sha512-pbkdf2 (readable by Mosquitto 2) or
    /// scram-sha-256 (stored keys for MQTT 5 SCRAM-SHA-256 enhanced authentication, which
    /// also check plain passwords).
    #[arg(short = 'H', default_value = "argon2id")]
    hash: Scheme,
    /// The password file.
    file: PathBuf,
    /// The user to add, update or delete.
    username: String,
    /// The password (with -b only).
    password: Option<String>,
}

impl Passwd {
    /// Runs the subcommand and returns the exit status; errors go to stderr with status 1, as
    /// mosquitto_passwd does.
    pub fn run(self) -> u8 {
        if self.batch != self.password.is_some() {
            eprintln!(
                "uringmq passwd: -b needs the password as the last argument, and only -b takes one"
            );
            return 1;
        }
        let args = PasswdArgs {
            file: self.file,
            username: self.username,
            create: self.create,
            delete: self.delete,
            batch_password: self.password,
            scheme: self.hash,
        };
        match run(&args, &mut tty_prompt) {
            Ok(outcome) => {
                let done = match outcome {
                    PasswdOutcome::Created => "created the file with",
                    PasswdOutcome::Added => "added",
                    PasswdOutcome::Updated => "updated",
                    PasswdOutcome::Deleted => "deleted",
                };
                eprintln!("uringmq passwd: {done} user {:?}", args.username);
                0
            }
            Err(e) => {
                eprintln!("uringmq passwd: {e}");
                1
            }
        }
    }
}

/// `uringmq passwd ARGS...` for the Python bindings: clap parses `args` (the arguments after
/// `passwd`) exactly as the binary does; returns the exit status (usage errors print clap's
/// message and return 2, `--help` prints the help and returns 0).
pub fn passwd_main(args: impl IntoIterator<Item = String>) -> u8 {
    #[derive(clap::Parser)]
    #[command(name = "uringmq passwd")]
    struct Cmd {
        #[command(flatten)]
        passwd: Passwd,
    }
    use clap::Parser;
    match Cmd::try_parse_from(std::iter::once("uringmq passwd".to_owned()).chain(args)) {
        Ok(cmd) => cmd.passwd.run(),
        Err(e) => {
            let _ = e.print();
            u8::try_from(e.exit_code()).unwrap_or(2)
        }
    }
}

/// `uringmq cluster ARGS...` for the Python command (`python -m uringmq cluster ...`): the
/// binary's own subcommand, parsed by the same clap definition; returns the exit status.
pub fn cluster_main(args: impl IntoIterator<Item = String>) -> u8 {
    #[derive(clap::Parser)]
    #[command(name = "uringmq cluster")]
    struct Cmd {
        #[command(subcommand)]
        cluster: crate::ClusterCmd,
    }
    use clap::Parser;
    match Cmd::try_parse_from(std::iter::once("uringmq cluster".to_owned()).chain(args)) {
        Ok(cmd) => cmd.cluster.run(),
        Err(e) => {
            let _ = e.print();
            u8::try_from(e.exit_code()).unwrap_or(2)
        }
    }
}
