//! Restart policies (`--restart no|always|unless-stopped|on-failure[:N]`)
//! without a daemon: the container's monitor boots the VM again when the
//! container ends, as the policy says, after Docker's back-off (100 ms,
//! doubled after each restart, at most a minute, back to 100 ms after a
//! run of 10 s or more). A container stopped or killed by the user
//! (`husk stop`, `husk kill`: they leave a marker in its directory, which
//! `start` removes) is not restarted until it is started again.
//! `unless-stopped` and `always` differ only when the host restarts: an
//! init system restarts `always` containers and those `unless-stopped` ones
//! that were not stopped (see docs/OPERATIONS.md).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The first back-off.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest back-off.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the back-off.
pub const RESET_AFTER: Duration = Duration::from_secs(10);

/// Docker's restart policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Never restart.
    #[default]
    No,
    /// Always restart (unless stopped by the user).
    Always,
    /// Like `always`; not restarted at boot if it was stopped.
    UnlessStopped,
    /// Restart after a non-zero exit, at most `max_retries` times (0:
    /// without limit).
    OnFailure {
        /// Docker's `MaximumRetryCount`.
        max_retries: u32,
    },
}

/// A `--restart` value Docker refuses (Docker's messages).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RestartPolicyError {
    /// `:N` without a name.
    #[error("invalid restart policy format: no policy provided before colon")]
    NoName,
    /// `:N` not an integer.
    #[error("invalid restart policy format: maximum retry count must be an integer")]
    BadCount,
    /// `:N` on a policy other than on-failure.
    #[error("invalid restart policy: maximum retry count can only be used with 'on-failure'")]
    CountNotAllowed,
    /// A negative count.
    #[error("invalid restart policy: maximum retry count cannot be negative")]
    Negative,
    /// An unknown name.
    #[error("invalid restart policy: unknown policy '{0}'; use one of 'no', 'always', 'on-failure', or 'unless-stopped'")]
    Unknown(String),
}

impl FromStr for RestartPolicy {
    type Err = RestartPolicyError;

    fn from_str(s: &str) -> Result<RestartPolicy, RestartPolicyError> {
        let (name, count) = match s.split_once(':') {
            Some(("", _)) => return Err(RestartPolicyError::NoName),
            Some((name, count)) => (name, Some(count)),
            None => (s, None),
        };
        let count = match count.filter(|c| !c.is_empty()) {
            Some(c) => Some(c.parse::<i64>().map_err(|_| RestartPolicyError::BadCount)?),
            None => None,
        };
        if count.is_some_and(|c| c < 0) {
            return Err(RestartPolicyError::Negative);
        }
        let policy = match name {
            "" | "no" => RestartPolicy::No,
            "always" => RestartPolicy::Always,
            "unless-stopped" => RestartPolicy::UnlessStopped,
            "on-failure" => RestartPolicy::OnFailure {
                max_retries: u32::try_from(count.unwrap_or(0)).unwrap_or(u32::MAX),
            },
            other => return Err(RestartPolicyError::Unknown(other.to_string())),
        };
        if count.is_some_and(|c| c != 0) && !matches!(policy, RestartPolicy::OnFailure { .. }) {
            return Err(RestartPolicyError::CountNotAllowed);
        }
        Ok(policy)
    }
}

impl fmt::Display for RestartPolicy {
    /// Docker's `HostConfig.RestartPolicy.Name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartPolicy::No => "no",
            RestartPolicy::Always => "always",
            RestartPolicy::UnlessStopped => "unless-stopped",
            RestartPolicy::OnFailure { .. } => "on-failure",
        })
    }
}

impl RestartPolicy {
    /// Whether it restarts at all (`--rm` conflicts with such a policy).
    pub fn is_none(self) -> bool {
        self == RestartPolicy::No
    }

    /// Docker's `MaximumRetryCount`.
    pub fn max_retries(self) -> u32 {
        match self {
            RestartPolicy::OnFailure { max_retries } => max_retries,
            _ => 0,
        }
    }
}

/// The monitor's restart bookkeeping for one policy.
#[derive(Clone, Debug)]
pub struct Restarts {
    policy: RestartPolicy,
    /// Restarts so far (Docker's `RestartCount`).
    pub count: u32,
    delay: Duration,
}

impl Restarts {
    /// No restart yet.
    pub fn new(policy: RestartPolicy) -> Restarts {
        Restarts {
            policy,
            count: 0,
            delay: FIRST_DELAY,
        }
    }

    /// After a run of `ran` that ended with `exit_code`: the back-off
    /// before the next start, or `None` if the container stays down
    /// (`stopped_by_user`: `husk stop`/`kill`).
    pub fn next(
        &mut self,
        exit_code: i32,
        ran: Duration,
        stopped_by_user: bool,
    ) -> Option<Duration> {
        let again = !stopped_by_user
            && match self.policy {
                RestartPolicy::No => false,
                RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
                RestartPolicy::OnFailure { max_retries } => {
                    exit_code != 0 && (max_retries == 0 || self.count < max_retries)
                }
            };
        if !again {
            return None;
        }
        if ran >= RESET_AFTER {
            self.delay = FIRST_DELAY;
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        self.count += 1;
        Some(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_parsing_and_errors() {
        let p = |s: &str| s.parse::<RestartPolicy>();
        assert_eq!(p("no"), Ok(RestartPolicy::No));
        assert_eq!(p(""), Ok(RestartPolicy::No));
        assert_eq!(p("always"), Ok(RestartPolicy::Always));
        assert_eq!(p("unless-stopped"), Ok(RestartPolicy::UnlessStopped));
        assert_eq!(
            p("on-failure"),
            Ok(RestartPolicy::OnFailure { max_retries: 0 })
        );
        assert_eq!(
            p("on-failure:3"),
            Ok(RestartPolicy::OnFailure { max_retries: 3 })
        );
        assert_eq!(p(":3"), Err(RestartPolicyError::NoName));
        assert_eq!(p("on-failure:x"), Err(RestartPolicyError::BadCount));
        assert_eq!(p("on-failure:-1"), Err(RestartPolicyError::Negative));
        assert_eq!(p("always:2"), Err(RestartPolicyError::CountNotAllowed));
        assert_eq!(
            p("sometimes"),
            Err(RestartPolicyError::Unknown("sometimes".into()))
        );
        assert_eq!(
            RestartPolicy::OnFailure { max_retries: 3 }.to_string(),
            "on-failure"
        );
    }

    #[test]
    fn policies_and_dockers_backoff() {
        let short = Duration::from_secs(1);
        let mut r = Restarts::new(RestartPolicy::OnFailure { max_retries: 2 });
        assert_eq!(r.next(0, short, false), None, "success");
        assert_eq!(r.next(1, short, false), Some(FIRST_DELAY));
        assert_eq!(r.next(1, short, false), Some(FIRST_DELAY * 2));
        assert_eq!(r.next(1, short, false), None, "retries used up");
        assert_eq!(r.count, 2);

        let mut r = Restarts::new(RestartPolicy::Always);
        assert_eq!(r.next(0, short, false), Some(FIRST_DELAY));
        assert_eq!(r.next(0, short, false), Some(FIRST_DELAY * 2));
        assert_eq!(r.next(0, short, false), Some(FIRST_DELAY * 4));
        assert_eq!(
            r.next(0, RESET_AFTER, false),
            Some(FIRST_DELAY),
            "reset after 10 s"
        );
        assert_eq!(r.next(0, short, true), None, "stopped by the user");
        for _ in 0..20 {
            r.next(0, short, false);
        }
        assert_eq!(r.next(0, short, false), Some(MAX_DELAY));
        assert_eq!(Restarts::new(RestartPolicy::No).next(1, short, false), None);
    }
}
