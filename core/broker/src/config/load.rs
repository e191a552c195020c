//! Reading a configuration (TOML text or file, relative paths resolved) and its errors.

use super::Config;
use std::path::{Path, PathBuf};

/// A bad setting. The message always names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not valid TOML, unknown key, or a value of the wrong type.
    #[error("invalid config: {0}")]
    Parse(String),
    /// A value out of range or inconsistent with another.
    #[error("invalid value for `{key}`: {reason}")]
    Invalid {
        /// The offending key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl Config {
    /// Parses and validates a TOML document.
    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads, parses and validates a TOML file. Relative paths in it (password, ACL and
    /// certificate files) are relative to the file's folder, as Mosquitto's `include_dir` and
    /// nginx do, so a config works whatever the working directory; errors name the whole path.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Io {
            path: path.clone(),
            source,
        })?;
        let in_file = |e: ConfigError| match e {
            ConfigError::Parse(m) => ConfigError::Parse(format!("{}: {m}", path.display())),
            ConfigError::Invalid { key, reason } => ConfigError::Invalid {
                key,
                reason: format!("{reason} (in {})", path.display()),
            },
            other => other,
        };
        let mut config: Config =
            toml::from_str(&text).map_err(|e| in_file(ConfigError::Parse(e.to_string())))?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("/")));
        config.validate().map_err(in_file)?;
        Ok(config)
    }

    /// Makes every relative file path absolute against `dir`.
    fn resolve_paths(&mut self, dir: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(p) = p.as_mut().filter(|p| p.is_relative()) {
                *p = dir.join(&*p);
            }
        };
        for p in [
            &mut self.password_file,
            &mut self.acl_file,
            &mut self.jwt_secret_file,
            &mut self.jwt_public_key_file,
            &mut self.jwt_jwks_file,
            &mut self.persistence_dir,
        ] {
            fix(p);
        }
        if let Some(c) = &mut self.cluster {
            fix(&mut c.secret_file);
        }
        for l in &mut self.listeners {
            for p in [
                &mut l.cert_file,
                &mut l.key_file,
                &mut l.ca_file,
                &mut l.password_file,
                &mut l.acl_file,
                &mut l.jwt_secret_file,
                &mut l.jwt_public_key_file,
                &mut l.jwt_jwks_file,
            ] {
                fix(p);
            }
        }
        for b in &mut self.bridges {
            for p in [&mut b.ca_file, &mut b.cert_file, &mut b.key_file] {
                fix(p);
            }
        }
    }

    /// The config as a TOML document (every key, with its value).
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}
