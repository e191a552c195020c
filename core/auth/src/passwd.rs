//! The logic of `uringmq passwd`, a `mosquitto_passwd` work-alike, as a function of parsed
//! arguments so the broker binary's clap subcommand only parses and calls [`run`].
//!
//! ```text
//! uringmq passwd [-H argon2id|sha512-pbkdf2|scram-sha-256] [-c | -D] passwordfile username
//! uringmq passwd [-H argon2id|sha512-pbkdf2|scram-sha-256] [-c] -b passwordfile username password
//! ```
//!
//! `-c` creates (or overwrites) the file, `-D` deletes the user, `-b` takes the password from
//! the command line (batch mode) instead of prompting twice, `-H` picks the hash for the new
//! entry. Mosquitto's `-U` (hash a plain-text file) is not offered: our reader refuses
//! plain-text entries, so there is nothing to upgrade.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

use crate::password_file::{PasswordFile, PasswordFileError, Scheme};

/// What `uringmq passwd` was asked to do.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswdArgs {
    /// The password file.
    pub file: PathBuf,
    /// The user to add, update or delete.
    pub username: String,
    /// `-c`: create a new file, overwriting any existing one.
    pub create: bool,
    /// `-D`: delete the user instead of setting a password.
    pub delete: bool,
    /// `-b`: the password given on the command line (batch mode); `None` prompts for it.
    pub batch_password: Option<String>,
    /// `-H`: how to hash the new password.
    pub scheme: Scheme,
}

// The batch password must not leak into logs through Debug.
impl std::fmt::Debug for PasswdArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswdArgs")
            .field("file", &self.file)
            .field("username", &self.username)
            .field("create", &self.create)
            .field("delete", &self.delete)
            .field(
                "batch_password",
                &self.batch_password.as_ref().map(|_| "<redacted>"),
            )
            .field("scheme", &self.scheme)
            .finish()
    }
}

/// What [`run`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasswdOutcome {
    /// A new file was written with the one user.
    Created,
    /// The user was added to an existing file.
    Added,
    /// The user's password was changed.
    Updated,
    /// The user was removed.
    Deleted,
}

/// Why `uringmq passwd` failed. Messages are for the terminal.
#[derive(Debug, Error)]
pub enum PasswdError {
    /// `-c` and `-D` together.
    #[error("-c and -D cannot be used together")]
    CreateAndDelete,
    /// `-D` with a password.
    #[error("-D takes no password")]
    PasswordWithDelete,
    /// The file does not exist and `-c` was not given.
    #[error("{}: no such file (use -c to create it)", .0.display())]
    NoFile(PathBuf),
    /// `-D` for a user the file does not list.
    #[error("user {0:?} not found in the password file")]
    UserNotFound(String),
    /// The two interactive entries differ.
    #[error("passwords do not match")]
    PasswordsDiffer,
    /// Reading the password from the terminal failed.
    #[error("reading the password: {0}")]
    Prompt(#[source] io::Error),
    /// Reading, hashing or writing the file failed.
    #[error(transparent)]
    File(#[from] PasswordFileError),
}

/// Carries out `args`. `prompt` reads one password without echo (use [`tty_prompt`]); it is
/// called only without `-b`, twice, with `Password: ` and `Reenter password: `.
pub fn run(
    args: &PasswdArgs,
    prompt: &mut dyn FnMut(&str) -> io::Result<String>,
) -> Result<PasswdOutcome, PasswdError> {
    if args.create && args.delete {
        return Err(PasswdError::CreateAndDelete);
    }
    if args.delete && args.batch_password.is_some() {
        return Err(PasswdError::PasswordWithDelete);
    }
    let mut file = if args.create {
        let mut f = PasswordFile::new();
        f.set_path(&args.file);
        f
    } else if !args.file.exists() {
        return Err(PasswdError::NoFile(args.file.clone()));
    } else {
        PasswordFile::load(&args.file)?
    };

    let outcome = if args.delete {
        if !file.delete(&args.username) {
            return Err(PasswdError::UserNotFound(args.username.clone()));
        }
        PasswdOutcome::Deleted
    } else {
        let password = match &args.batch_password {
            Some(p) => p.clone(),
            None => {
                let first = prompt("Password: ").map_err(PasswdError::Prompt)?;
                let again = prompt("Reenter password: ").map_err(PasswdError::Prompt)?;
                if first != again {
                    return Err(PasswdError::PasswordsDiffer);
                }
                first
            }
        };
        let existed = file.contains(&args.username);
        file.set(&args.username, password.as_bytes(), args.scheme)?;
        match (args.create, existed) {
            (true, _) => PasswdOutcome::Created,
            (false, true) => PasswdOutcome::Updated,
            (false, false) => PasswdOutcome::Added,
        }
    };
    file.save()?;
    Ok(outcome)
}

/// Reads a password from the terminal without echoing it.
pub fn tty_prompt(prompt: &str) -> io::Result<String> {
    rpassword::prompt_password(prompt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password_file::Verification;

    fn args(file: PathBuf, user: &str) -> PasswdArgs {
        PasswdArgs {
            file,
            username: user.into(),
            create: false,
            delete: false,
            batch_password: None,
            scheme: Scheme::Pbkdf2Sha512,
        }
    }

    fn no_prompt(_: &str) -> io::Result<String> {
        panic!("batch mode must not prompt")
    }

    #[test]
    fn create_add_update_delete_like_mosquitto_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let a = |user: &str| args(path.clone(), user);

        let missing = run(&a("u"), &mut no_prompt).unwrap_err();
        assert!(missing.to_string().contains("use -c"), "{missing}");

        let create = PasswdArgs {
            create: true,
            batch_password: Some("one".into()),
            ..a("u1")
        };
        assert_eq!(
            run(&create, &mut no_prompt).unwrap(),
            PasswdOutcome::Created
        );

        // Interactive: two prompts that must agree.
        let mut asked = Vec::new();
        let mut prompt = |p: &str| {
            asked.push(p.to_owned());
            Ok("two".to_owned())
        };
        let add = PasswdArgs {
            scheme: Scheme::Argon2id,
            ..a("u2")
        };
        assert_eq!(run(&add, &mut prompt).unwrap(), PasswdOutcome::Added);
        assert_eq!(asked, ["Password: ", "Reenter password: "]);

        let update = PasswdArgs {
            batch_password: Some("uno".into()),
            ..a("u1")
        };
        assert_eq!(
            run(&update, &mut no_prompt).unwrap(),
            PasswdOutcome::Updated
        );

        let f = PasswordFile::load(&path).unwrap();
        assert_eq!(f.verify("u1", b"uno"), Verification::Match);
        assert_eq!(f.verify("u2", b"two"), Verification::Match);

        let delete = PasswdArgs {
            delete: true,
            ..a("u1")
        };
        assert_eq!(
            run(&delete, &mut no_prompt).unwrap(),
            PasswdOutcome::Deleted
        );
        assert!(matches!(
            run(&delete, &mut no_prompt),
            Err(PasswdError::UserNotFound(_))
        ));
        let f = PasswordFile::load(&path).unwrap();
        assert_eq!(f.users().collect::<Vec<_>>(), ["u2"]);

        // -c overwrites.
        let recreate = PasswdArgs {
            create: true,
            batch_password: Some("three".into()),
            ..a("u3")
        };
        run(&recreate, &mut no_prompt).unwrap();
        let f = PasswordFile::load(&path).unwrap();
        assert_eq!(f.users().collect::<Vec<_>>(), ["u3"]);
    }

    #[test]
    fn refuses_bad_combinations_and_mismatched_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        let both = PasswdArgs {
            create: true,
            delete: true,
            ..args(path.clone(), "u")
        };
        assert!(matches!(
            run(&both, &mut no_prompt),
            Err(PasswdError::CreateAndDelete)
        ));
        let del_pw = PasswdArgs {
            delete: true,
            batch_password: Some("x".into()),
            ..args(path.clone(), "u")
        };
        assert!(matches!(
            run(&del_pw, &mut no_prompt),
            Err(PasswdError::PasswordWithDelete)
        ));

        let mut n = 0;
        let mut differing = |_: &str| {
            n += 1;
            Ok(format!("pw{n}"))
        };
        let create = PasswdArgs {
            create: true,
            ..args(path.clone(), "u")
        };
        assert!(matches!(
            run(&create, &mut differing),
            Err(PasswdError::PasswordsDiffer)
        ));
        assert!(!path.exists(), "nothing is written on failure");

        let colon = PasswdArgs {
            create: true,
            batch_password: Some("x".into()),
            ..args(path.clone(), "a:b")
        };
        let e = run(&colon, &mut no_prompt).unwrap_err();
        assert!(e.to_string().contains("':'"), "{e}");
        assert!(!format!("{del_pw:?}").contains("\"x\""));
    }
}
