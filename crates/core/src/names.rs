use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest name accepted for a namespace or an environment. Names become path
/// components and object-store keys, so they stay well below filesystem limits.
const MAX_NAME_LEN: usize = 64;

/// Names that would be confusing or dangerous as path components.
const RESERVED: &[&str] = &[".", "..", "api", "current"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} name '{name}': {reason}")]
pub struct InvalidName {
    pub kind: &'static str,
    pub name: String,
    pub reason: &'static str,
}

/// Checks a name that becomes a directory and a URL path segment: ASCII
/// letters, digits, `-`, `_` and `.`, starting with a letter or digit.
fn validate(kind: &'static str, name: &str) -> Result<(), InvalidName> {
    let fail = |reason| {
        Err(InvalidName {
            kind,
            name: name.escape_debug().to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return fail("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return fail("it is longer than 64 characters");
    }
    if RESERVED.contains(&name) {
        return fail("it is reserved");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return fail("only ASCII letters, digits, '-', '_' and '.' are allowed");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return fail("it must start with a letter or a digit");
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$meta:meta])* $type:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $type(String);

        impl $type {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $type {
            type Err = InvalidName;
            fn from_str(name: &str) -> Result<Self, Self::Err> {
                validate($kind, name)?;
                Ok(Self(name.to_owned()))
            }
        }

        impl TryFrom<String> for $type {
            type Error = InvalidName;
            fn try_from(name: String) -> Result<Self, Self::Error> {
                validate($kind, &name)?;
                Ok(Self(name))
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let name = String::deserialize(deserializer)?;
                Self::try_from(name).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $type {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A namespace owns environments, e.g. a team (`team-ml`) or a user.
    NamespaceName,
    "namespace"
);
name_type!(
    /// The name of an environment inside a namespace.
    EnvironmentName,
    "environment"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["team-ml", "a", "py3.11_env", "0day"] {
            assert!(name.parse::<NamespaceName>().is_ok(), "{name}");
        }
    }

    #[test]
    fn refuses_names_that_escape_or_confuse() {
        let long = "x".repeat(65);
        for name in [
            "", "..", ".", "a/b", "../x", "-x", ".hidden", "a b", "a\0b", "é", &long, "api",
        ] {
            let error = name.parse::<EnvironmentName>().unwrap_err();
            assert_eq!(error.kind, "environment");
        }
    }

    #[test]
    fn deserialising_validates() {
        assert!(serde_json::from_str::<NamespaceName>("\"../etc\"").is_err());
        assert_eq!(
            serde_json::from_str::<NamespaceName>("\"ok\"")
                .unwrap()
                .as_str(),
            "ok"
        );
    }
}
