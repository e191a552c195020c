//! `uringmq passwd`: the `mosquitto_passwd` work-alike, as a subcommand of the broker binary so
//! one install manages its own password files. Parsing only; `uringmq_auth::passwd::run` does
//! the work.
//!
//! ```text
//! uringmq passwd [-H argon2id|sha512-pbkdf2|scram-sha-256] [-c | -D] passwordfile username
//! uringmq passwd [-H argon2id|sha512-pbkdf2|scram-sha-256] [-c] -b passwordfile username password
//! ```

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;
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
    /// Runs the subcommand; errors go to stderr with exit code 1, as mosquitto_passwd does.
    pub fn run(self) -> ExitCode {
        if self.batch != self.password.is_some() {
            eprintln!(
                "uringmq passwd: -b needs the password as the last argument, and only -b takes one"
            );
            return ExitCode::from(1);
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
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("uringmq passwd: {e}");
                ExitCode::from(1)
            }
        }
    }
}
