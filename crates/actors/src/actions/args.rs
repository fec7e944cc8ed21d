//! Reading positional action arguments, with errors that name the action, the argument and what
//! was wrong (`exec: argument 1 (command) must be a string, got number`).

use std::collections::BTreeMap;

use agentvm_protocol::Value;

use crate::error::ActorError;

pub struct Args<'a> {
    action: &'a str,
    values: &'a [Value],
}

impl<'a> Args<'a> {
    pub fn new(action: &'a str, values: &'a [Value]) -> Self {
        Args { action, values }
    }

    fn present(&self, index: usize) -> Option<&'a Value> {
        self.values.get(index).filter(|v| !v.is_nullish())
    }

    fn wrong(&self, index: usize, name: &str, expected: &str, got: Option<&Value>) -> ActorError {
        let got = got.map_or("nothing", |v| v.type_name());
        ActorError::InvalidArguments(format!(
            "{}: argument {} ({name}) must be {expected}, got {got}",
            self.action,
            index + 1
        ))
    }

    /// Argument `index` as JSON, when given (for arguments passed through as they are).
    pub fn json(&self, index: usize) -> Option<serde_json::Value> {
        self.present(index)
            .map(|v| v.to_json_with(&|b| serde_json::Value::String(String::from_utf8_lossy(b).into_owned())))
    }

    pub fn string(&self, index: usize, name: &str) -> Result<String, ActorError> {
        match self.present(index) {
            Some(Value::String(s)) => Ok(s.clone()),
            other => Err(self.wrong(index, name, "a string", other)),
        }
    }

    pub fn integer(&self, index: usize, name: &str) -> Result<i64, ActorError> {
        self.present(index)
            .and_then(Value::as_i64)
            .ok_or_else(|| self.wrong(index, name, "an integer", self.present(index)))
    }

    /// An optional number (`None` when absent, `null` or `undefined`).
    pub fn optional_number(&self, index: usize, name: &str) -> Result<Option<f64>, ActorError> {
        match self.present(index) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.wrong(index, name, "a number", Some(v))),
        }
    }

    pub fn pid(&self, index: usize) -> Result<i32, ActorError> {
        let n = self.integer(index, "pid")?;
        i32::try_from(n).map_err(|_| self.wrong(index, "pid", "a process id", self.present(index)))
    }

    pub fn u16(&self, index: usize, name: &str) -> Result<u16, ActorError> {
        let n = self.integer(index, name)?;
        u16::try_from(n).map_err(|_| {
            ActorError::InvalidArguments(format!("{}: {name} must be between 0 and 65535, got {n}", self.action))
        })
    }

    /// A string (sent as UTF-8) or bytes.
    pub fn data(&self, index: usize, name: &str) -> Result<Vec<u8>, ActorError> {
        match self.present(index) {
            Some(Value::String(s)) => Ok(s.clone().into_bytes()),
            Some(Value::Bytes(b)) => Ok(b.to_vec()),
            other => Err(self.wrong(index, name, "a string or Uint8Array", other)),
        }
    }

    pub fn string_list(&self, index: usize, name: &str) -> Result<Vec<String>, ActorError> {
        match self.present(index) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| self.wrong(index, name, "an array of strings", self.present(index))),
            other => Err(self.wrong(index, name, "an array of strings", other)),
        }
    }

    /// `writeFiles` entries: `[{path, content}]`, content a string or bytes.
    pub fn entries(&self, index: usize) -> Result<Vec<(String, Vec<u8>)>, ActorError> {
        let Some(Value::Array(items)) = self.present(index) else {
            return Err(self.wrong(index, "entries", "an array of {path, content}", self.present(index)));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let path = item.get("path").and_then(Value::as_str);
                let content = match item.get("content") {
                    Some(Value::String(s)) => Some(s.clone().into_bytes()),
                    Some(Value::Bytes(b)) => Some(b.to_vec()),
                    _ => None,
                };
                match (path, content) {
                    (Some(path), Some(content)) => Ok((path.to_string(), content)),
                    _ => Err(ActorError::InvalidArguments(format!(
                        "{}: entry {i} must be {{path: string, content: string | Uint8Array}}",
                        self.action
                    ))),
                }
            })
            .collect()
    }

    /// An optional options object.
    pub fn options(&self, index: usize) -> Result<Options<'a>, ActorError> {
        match self.present(index) {
            None => Ok(Options { action: self.action, value: None }),
            Some(v @ Value::Map(_)) => Ok(Options { action: self.action, value: Some(v) }),
            other => Err(self.wrong(index, "options", "an object", other)),
        }
    }
}

/// An options object; unknown fields are ignored (clients of the reference product send some
/// that have no meaning here, such as `cpuTimeLimitMs`).
pub struct Options<'a> {
    action: &'a str,
    value: Option<&'a Value>,
}

impl Options<'_> {
    fn field(&self, name: &str) -> Option<&Value> {
        self.value.and_then(|v| v.get(name)).filter(|v| !v.is_nullish())
    }

    fn wrong(&self, name: &str, expected: &str, got: &Value) -> ActorError {
        ActorError::InvalidArguments(format!(
            "{}: option `{name}` must be {expected}, got {}",
            self.action,
            got.type_name()
        ))
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, ActorError> {
        match self.field(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.wrong(name, "a string", other)),
        }
    }

    /// A boolean option, `false` when absent.
    pub fn flag(&self, name: &str) -> Result<bool, ActorError> {
        match self.field(name) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(self.wrong(name, "a boolean", other)),
        }
    }

    pub fn number(&self, name: &str) -> Result<Option<f64>, ActorError> {
        match self.field(name) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.wrong(name, "a number", v)),
        }
    }

    pub fn u16(&self, name: &str) -> Result<Option<u16>, ActorError> {
        match self.field(name) {
            None => Ok(None),
            Some(v) => match v.as_i64().and_then(|n| u16::try_from(n).ok()) {
                Some(n) => Ok(Some(n)),
                None => Err(self.wrong(name, "an integer from 0 to 65535", v)),
            },
        }
    }

    pub fn data(&self, name: &str) -> Result<Option<Vec<u8>>, ActorError> {
        match self.field(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone().into_bytes())),
            Some(Value::Bytes(b)) => Ok(Some(b.to_vec())),
            Some(other) => Err(self.wrong(name, "a string or Uint8Array", other)),
        }
    }

    pub fn string_list(&self, name: &str) -> Result<Option<Vec<String>>, ActorError> {
        match self.field(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| self.wrong(name, "an array of strings", &Value::Array(items.clone()))),
            Some(other) => Err(self.wrong(name, "an array of strings", other)),
        }
    }

    /// An object of strings (`headers`), in its order; `None` when absent.
    pub fn string_map(&self, name: &str) -> Result<Option<Vec<(String, String)>>, ActorError> {
        match self.field(name) {
            None => Ok(None),
            Some(Value::Map(entries)) => entries
                .iter()
                .filter(|(_, v)| !v.is_nullish())
                .map(|(key, value)| match value {
                    Value::String(s) => Ok((key.clone(), s.clone())),
                    other => Err(ActorError::InvalidArguments(format!(
                        "{}: {name}.{key} must be a string, got {}",
                        self.action,
                        other.type_name()
                    ))),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(other) => Err(self.wrong(name, "an object of strings", other)),
        }
    }

    /// `env`: an object of strings (numbers and booleans are accepted and converted).
    pub fn env(&self) -> Result<BTreeMap<String, String>, ActorError> {
        let mut env = BTreeMap::new();
        match self.field("env") {
            None => {}
            Some(Value::Map(entries)) => {
                for (key, value) in entries {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        Value::Int(n) => n.to_string(),
                        Value::Float(f) => f.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null | Value::Undefined => continue,
                        other => {
                            return Err(ActorError::InvalidArguments(format!(
                                "{}: env.{key} must be a string, got {}",
                                self.action,
                                other.type_name()
                            )))
                        }
                    };
                    env.insert(key.clone(), text);
                }
            }
            Some(other) => return Err(self.wrong("env", "an object", other)),
        }
        Ok(env)
    }
}
