//! The CNI protocol as the spec (containernetworking/cni SPEC.md, versions 0.4.0 to
//! 1.1.0) has it: the versions this plugin speaks, the error codes, the error JSON
//! and the environment a runtime passes.
//!
//! No crate was used: `cni-plugin` (0.2.1, 2021) stops at CNI 1.0 (no GC, no STATUS),
//! and the plugin needs only a few fields of the config and of prevResult, which
//! [`crate::conf`] reads from `serde_json::Value` so each error names its key.

use serde::Serialize;

/// What VERSION reports, oldest first; the last is this plugin's own.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["0.4.0", "1.0.0", "1.1.0"];
/// The version of answers given before a config's `cniVersion` is known.
pub const OWN_VERSION: &str = "1.1.0";

/// The spec's error codes ("Error codes", SPEC.md section 7); 100 and up are this
/// plugin's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[expect(
    dead_code,
    reason = "the spec's codes, listed whole: 3 and 11 are not answered by this plugin yet"
)]
pub enum Code {
    /// 1: the config's `cniVersion` is not one this plugin speaks.
    IncompatibleVersion,
    /// 2: a field this plugin does not support.
    UnsupportedField,
    /// 3: the container is unknown or does not exist.
    UnknownContainer,
    /// 4: a required environment variable is missing or invalid.
    InvalidEnv,
    /// 5: an I/O failure (reading stdin, writing state).
    Io,
    /// 6: stdin is not the JSON it should be.
    Decode,
    /// 7: the network config is invalid (a key has a wrong type or value).
    InvalidConfig,
    /// 11: try again later (a transient condition).
    TryAgain,
    /// 50 (STATUS, CNI 1.1): the plugin cannot serve ADD requests.
    NotAvailable,
    /// 100: the datapath failed (loading, attaching, a map).
    Datapath,
    /// 101: a host port another container (or `netfast publish add`) holds.
    PortTaken,
    /// 102: CHECK found the container's state incomplete.
    CheckFailed,
}

impl Code {
    pub fn number(self) -> u32 {
        match self {
            Code::IncompatibleVersion => 1,
            Code::UnsupportedField => 2,
            Code::UnknownContainer => 3,
            Code::InvalidEnv => 4,
            Code::Io => 5,
            Code::Decode => 6,
            Code::InvalidConfig => 7,
            Code::TryAgain => 11,
            Code::NotAvailable => 50,
            Code::Datapath => 100,
            Code::PortTaken => 101,
            Code::CheckFailed => 102,
        }
    }
}

/// A CNI error: printed on stdout as the spec's error JSON, with a non-zero exit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: Code,
    /// One sentence naming the value and the fix.
    pub msg: String,
    /// More context (the error chain), possibly empty.
    pub details: String,
}

impl CniError {
    pub fn new(code: Code, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// `{"cniVersion","code","msg","details"}`; `details` is left out when empty.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Wire<'a> {
            cni_version: &'a str,
            code: u32,
            msg: &'a str,
            #[serde(skip_serializing_if = "str::is_empty")]
            details: &'a str,
        }
        // Serializing strings and a number cannot fail.
        serde_json::to_string(&Wire {
            cni_version,
            code: self.code.number(),
            msg: &self.msg,
            details: &self.details,
        })
        .unwrap_or_default()
    }
}

/// How library errors reach the runtime: refused input is code 7, a taken host
/// port 101, missing state on CHECK 102, a lock or state file 5, the rest 100.
impl From<netfast::cni_instance::CniError> for CniError {
    fn from(e: netfast::cni_instance::CniError) -> Self {
        use netfast::cni_instance::CniError as E;
        let code = match &e {
            E::Invalid(_) => Code::InvalidConfig,
            E::PortTaken(_) => Code::PortTaken,
            E::Missing(_) => Code::CheckFailed,
            E::Lock(_) | E::State { .. } | E::BadRecord { .. } => Code::Io,
            E::Pinned(p) if p.is_invalid_input() => Code::InvalidConfig,
            E::Instance(i) if i.is_invalid_input() => Code::InvalidConfig,
            _ => Code::Datapath,
        };
        let mut details = Vec::new();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            details.push(s.to_string());
            source = s.source();
        }
        CniError {
            code,
            msg: e.to_string(),
            details: details.join(": "),
        }
    }
}

/// The CNI commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Gc,
    Status,
}

/// The runtime's environment (`CNI_*` variables), checked for what `command` needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
}

impl Env {
    /// Reads the variables through `var` (std::env::var, or a map in tests).
    /// CNI_CONTAINERID and CNI_IFNAME are required for ADD, DEL and CHECK, CNI_NETNS
    /// for ADD and CHECK (the spec lets DEL go without it); a missing or invalid one
    /// is code 4, naming it.
    pub fn read(var: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let bad = |msg: String| CniError::new(Code::InvalidEnv, msg);
        let command = match var("CNI_COMMAND").as_deref() {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some("GC") => Command::Gc,
            Some("STATUS") => Command::Status,
            Some(other) => {
                return Err(bad(format!(
                    "CNI_COMMAND \"{other}\" is unknown; the runtime must set ADD, DEL, CHECK, \
                     VERSION, GC or STATUS"
                )));
            }
            None => {
                return Err(bad(
                    "CNI_COMMAND is not set; netfast-cni is a CNI plugin, run by a container \
                     runtime (podman, containerd, CRI-O) with CNI_COMMAND and a network config \
                     on stdin"
                        .to_owned(),
                ));
            }
        };
        let per_container = matches!(command, Command::Add | Command::Del | Command::Check);
        let required = |name: &str, needed: bool| -> Result<String, CniError> {
            match var(name) {
                Some(v) if !v.is_empty() => Ok(v),
                _ if !needed => Ok(String::new()),
                _ => Err(bad(format!(
                    "{name} is not set; the runtime must set it for CNI_COMMAND {command:?}"
                ))),
            }
        };
        let container_id = required("CNI_CONTAINERID", per_container)?;
        // SPEC.md: "must only contain alphanumeric characters, underscore (_), hyphen
        // (-) and period (.)"; the owner records are named after it.
        if let Some(c) = container_id
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
        {
            return Err(bad(format!(
                "CNI_CONTAINERID \"{container_id}\" contains {c:?}; the spec allows only \
                 letters, digits, '_', '-' and '.'"
            )));
        }
        let netns = required(
            "CNI_NETNS",
            matches!(command, Command::Add | Command::Check),
        )?;
        let ifname = required("CNI_IFNAME", per_container)?;
        if ifname.contains(['/', ':']) || ifname.chars().any(char::is_whitespace) {
            return Err(bad(format!(
                "CNI_IFNAME \"{ifname}\" is not an interface name (no '/', ':' or spaces)"
            )));
        }
        Ok(Env {
            command,
            container_id,
            netns,
            ifname,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Env, CniError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Env::read(|k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(Code::InvalidConfig, "masquerade: not a boolean");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).expect("json");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "masquerade: not a boolean");
        assert!(v.get("details").is_none());
    }

    #[test]
    fn env_names_the_missing_variable() {
        let e = env(&[]).unwrap_err();
        assert_eq!(e.code, Code::InvalidEnv);
        assert!(e.msg.contains("CNI_COMMAND"), "{}", e.msg);
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert!(e.msg.contains("CNI_CONTAINERID"), "{}", e.msg);
        let e = env(&[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert!(e.msg.contains("CNI_NETNS"), "{}", e.msg);
        // DEL needs no netns.
        let ok = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ])
        .expect("DEL without CNI_NETNS");
        assert_eq!(ok.command, Command::Del);
        let e = env(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a/b"),
            ("CNI_IFNAME", "eth0"),
        ])
        .unwrap_err();
        assert!(e.msg.contains("CNI_CONTAINERID \"a/b\""), "{}", e.msg);
        let e = env(&[("CNI_COMMAND", "FOO")]).unwrap_err();
        assert!(e.msg.contains("\"FOO\""), "{}", e.msg);
        assert!(env(&[("CNI_COMMAND", "VERSION")]).is_ok());
    }

    #[test]
    fn library_errors_map_to_codes() {
        use netfast::cni_instance::CniError as E;
        assert_eq!(CniError::from(E::Invalid("x".into())).code.number(), 7);
        assert_eq!(CniError::from(E::PortTaken("x".into())).code.number(), 101);
        assert_eq!(CniError::from(E::Missing("x".into())).code.number(), 102);
    }
}
