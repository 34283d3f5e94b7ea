use std::fmt;
use std::str::FromStr;

/// The eight user-facing capabilities. A server build compiles some of them in (cargo
/// features) and its configuration switches on a subset of those.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    Identity,
    Data,
    Storage,
    Functions,
    Jobs,
    Sites,
    Gateway,
    Connect,
}

impl Capability {
    pub const ALL: [Capability; 8] = [
        Capability::Identity,
        Capability::Data,
        Capability::Storage,
        Capability::Functions,
        Capability::Jobs,
        Capability::Sites,
        Capability::Gateway,
        Capability::Connect,
    ];

    /// The name used in configuration, cargo features and `/v1/info`.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Identity => "identity",
            Capability::Data => "data",
            Capability::Storage => "storage",
            Capability::Functions => "functions",
            Capability::Jobs => "jobs",
            Capability::Sites => "sites",
            Capability::Gateway => "gateway",
            Capability::Connect => "connect",
        }
    }

    /// The HTTP prefix the capability's routes live under.
    pub fn prefix(self) -> &'static str {
        match self {
            Capability::Identity => "/auth/v1",
            Capability::Data => "/data/v1",
            Capability::Storage => "/storage/v1",
            Capability::Functions => "/fn/v1",
            Capability::Jobs => "/jobs/v1",
            Capability::Sites => "/sites/v1",
            Capability::Gateway => "/gateway/v1",
            Capability::Connect => "/connect/v1",
        }
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown capability `{0}`; expected one of identity, data, storage, functions, jobs, sites, gateway, connect"
)]
pub struct UnknownCapability(pub String);

impl FromStr for Capability {
    type Err = UnknownCapability;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Capability::ALL
            .into_iter()
            .find(|c| c.name() == wanted)
            .ok_or_else(|| UnknownCapability(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Capability::ALL {
            assert_eq!(c.name().parse::<Capability>(), Ok(c));
        }
        assert_eq!(" Data ".parse::<Capability>(), Ok(Capability::Data));
        assert!("database".parse::<Capability>().is_err());
    }
}
