//! Per-tier policies from `policies/tierN.toml`. For now they hold the upload-token rules; the
//! governance issue adds approvals, limits, scanners and re-verification intervals.
//!
//! The defaults are compiled in from the repository's `policies/` folder, so a bare binary has
//! them; a policy file with an unknown key is refused when the service starts.

use crate::domain::Tier;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub tier: i64,
    pub upload_token: UploadTokenRules,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadTokenRules {
    #[serde(deserialize_with = "duration")]
    pub max_ttl: Duration,
    pub require_cidr: bool,
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(serde::de::Error::custom)
}

const DEFAULTS: [(&str, &str); 5] = [
    (
        "policies/tier0.toml",
        include_str!("../../policies/tier0.toml"),
    ),
    (
        "policies/tier1.toml",
        include_str!("../../policies/tier1.toml"),
    ),
    (
        "policies/tier2.toml",
        include_str!("../../policies/tier2.toml"),
    ),
    (
        "policies/tier3.toml",
        include_str!("../../policies/tier3.toml"),
    ),
    (
        "policies/tier4.toml",
        include_str!("../../policies/tier4.toml"),
    ),
];

#[derive(Debug, thiserror::Error)]
#[error("policy {file}: {message}")]
pub struct PolicyError {
    pub file: String,
    pub message: String,
}

/// The default policy of every tier, checked.
#[derive(Debug, Clone)]
pub struct Policies {
    by_tier: Vec<Policy>,
}

impl Policies {
    pub fn defaults() -> Result<Self, PolicyError> {
        let mut by_tier = Vec::new();
        for (i, (file, text)) in DEFAULTS.iter().enumerate() {
            let p: Policy = toml::from_str(text).map_err(|e| PolicyError {
                file: file.to_string(),
                message: e.to_string(),
            })?;
            if p.tier != i as i64 {
                return Err(PolicyError {
                    file: file.to_string(),
                    message: format!("`tier` is {} but the file is for tier {i}", p.tier),
                });
            }
            by_tier.push(p);
        }
        Ok(Self { by_tier })
    }

    pub fn for_tier(&self, tier: Tier) -> &Policy {
        &self.by_tier[tier.get() as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_tier_three_requires_an_ip_range() {
        let p = Policies::defaults().unwrap();
        assert!(
            !p.for_tier(Tier::try_from(2).unwrap())
                .upload_token
                .require_cidr
        );
        assert!(
            p.for_tier(Tier::try_from(3).unwrap())
                .upload_token
                .require_cidr
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = toml::from_str::<Policy>(
            "tier = 0\n[upload_token]\nmax_ttl = \"1h\"\nrequire_cidr = false\nbogus = 1\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("bogus"));
    }
}
