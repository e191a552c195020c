//! Broker settings from Python keyword arguments.
//!
//! The keyword arguments become a TOML table that goes through the very parser the config file
//! uses (`Config::from_toml_str`): every key of the file is a keyword argument, unknown keys and
//! bad values fail with the broker's own message naming the key, and this glue keeps no second
//! list of settings. A `config=` file is read first and the keyword arguments override its keys.

use crate::errors::config_error;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use std::path::Path;
use uringmq::Config;

/// Builds and validates a `Config` from an optional TOML file and keyword overrides.
///
/// The file goes through `Config::from_file`, as in the binary: its errors name the file and
/// the line, and relative paths in it are relative to its folder. The keyword arguments then
/// override its keys (so the file must be valid on its own).
pub fn build_config(path: Option<&Path>, settings: Option<&Bound<'_, PyDict>>) -> PyResult<Config> {
    let base = match path {
        Some(p) => Config::from_file(p).map_err(config_error)?,
        None => Config::default(),
    };
    let Some(settings) = settings.filter(|s| !s.is_empty()) else {
        return Ok(base);
    };
    let mut table = match toml::Value::try_from(&base) {
        Ok(toml::Value::Table(t)) => t,
        _ => {
            return Err(PyValueError::new_err(
                "cannot represent the config file's settings",
            ))
        }
    };
    for (key, value) in settings.iter() {
        let key: String = key.extract()?;
        // `None` means "the default": the key is left out (TOML has no null).
        match to_toml(&key, &value)? {
            Some(v) => table.insert(key, v),
            None => table.remove(&key),
        };
    }
    Config::from_toml_str(&table.to_string()).map_err(config_error)
}

/// One Python value as TOML. `key` is the dotted path, for error messages.
fn to_toml(key: &str, v: &Bound<'_, PyAny>) -> PyResult<Option<toml::Value>> {
    if v.is_none() {
        return Ok(None);
    }
    // bool before int: Python's bool is an int.
    let value = if v.is_instance_of::<PyBool>() {
        toml::Value::Boolean(v.extract()?)
    } else if v.is_instance_of::<PyInt>() {
        let n: i64 = v.extract().map_err(|_| {
            PyValueError::new_err(format!("invalid value for `{key}`: integer out of range"))
        })?;
        toml::Value::Integer(n)
    } else if v.is_instance_of::<PyFloat>() {
        toml::Value::Float(v.extract()?)
    } else if v.is_instance_of::<PyString>() {
        toml::Value::String(v.extract()?)
    } else if v.is_instance_of::<PyDict>() {
        let mut t = toml::Table::new();
        for (k, item) in v.cast::<PyDict>()?.iter() {
            let k: String = k.extract()?;
            if let Some(x) = to_toml(&format!("{key}.{k}"), &item)? {
                t.insert(k, x);
            }
        }
        toml::Value::Table(t)
    } else if v.is_instance_of::<PyList>() || v.is_instance_of::<PyTuple>() {
        let mut items = Vec::new();
        for (i, item) in v.try_iter()?.enumerate() {
            match to_toml(&format!("{key}[{i}]"), &item?)? {
                Some(x) => items.push(x),
                None => {
                    return Err(PyValueError::new_err(format!(
                        "invalid value for `{key}[{i}]`: None is not allowed in a list"
                    )))
                }
            }
        }
        toml::Value::Array(items)
    } else if v.hasattr("__fspath__")? {
        // pathlib.Path and other os.PathLike values (password_file, acl_file, cert_file...).
        let p = v.call_method0("__fspath__")?;
        toml::Value::String(p.extract().map_err(|_| {
            PyTypeError::new_err(format!(
                "invalid value for `{key}`: bytes paths are not supported"
            ))
        })?)
    } else {
        return Err(PyTypeError::new_err(format!(
            "invalid value for `{key}`: unsupported type {}",
            v.get_type().name()?
        )));
    };
    Ok(Some(value))
}

/// A `[[bridge]]` table from a dict of its keys (`topic`: a list of `[[bridge.topic]]`
/// dicts), parsed and checked like the config file's (errors name the key).
pub fn bridge_config(d: &Bound<'_, PyDict>) -> PyResult<uringmq::BridgeConfig> {
    let value = to_toml("bridge", d.as_any())?.unwrap_or(toml::Value::Table(Default::default()));
    let cfg: uringmq::BridgeConfig = value
        .try_into()
        .map_err(|e| PyValueError::new_err(format!("invalid bridge: {e}")))?;
    cfg.validate().map_err(config_error)?;
    Ok(cfg)
}

/// The effective settings as a dict (keys whose value is unset, like `password_file`, are absent).
pub fn config_to_dict<'py>(py: Python<'py>, config: &Config) -> PyResult<Bound<'py, PyAny>> {
    let value = toml::Value::try_from(config)
        .map_err(|e| PyValueError::new_err(format!("cannot represent the config: {e}")))?;
    from_toml(py, &value)
}

fn from_toml<'py>(py: Python<'py>, v: &toml::Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        toml::Value::String(s) => PyString::new(py, s).into_any(),
        toml::Value::Integer(i) => i.into_pyobject(py)?.into_any(),
        toml::Value::Float(f) => f.into_pyobject(py)?.into_any(),
        toml::Value::Boolean(b) => PyBool::new(py, *b).to_owned().into_any(),
        toml::Value::Datetime(d) => PyString::new(py, &d.to_string()).into_any(),
        toml::Value::Array(a) => {
            let list = PyList::empty(py);
            for x in a {
                list.append(from_toml(py, x)?)?;
            }
            list.into_any()
        }
        toml::Value::Table(t) => {
            let dict = PyDict::new(py);
            for (k, x) in t {
                dict.set_item(k, from_toml(py, x)?)?;
            }
            dict.into_any()
        }
    })
}
