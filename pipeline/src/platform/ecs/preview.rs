//! The test listener: pointing it at a candidate's target group, and the version check
//! through it (a GET of the service's `verify.version_path`, which must name the candidate's
//! release).
//!
//! The check needs the load balancer's name to resolve from where shipit runs; an
//! emulator's does not, and the check is skipped with a warning. For the test suite only,
//! [`TEST_RESOLVE_ENV`] maps that name to a local address, as curl's `--resolve` does.

use std::net::SocketAddr;

use super::change::Change;
use super::forward::Forward;
use super::{EcsPlatform, VERSION_CHECK_TIMEOUT};

/// How long the version check asks again while the test listener still answers with
/// another release: the time a listener change may take to reach the load balancer's nodes.
const LISTENER_PROPAGATION: std::time::Duration = std::time::Duration::from_secs(5);
const PROPAGATION_RETRY: std::time::Duration = std::time::Duration::from_millis(250);
use crate::Slot;
use crate::event::{Phase, Reporter};
use crate::platform::{Candidate, ErrorKind, PlatformError};

/// Test-only: `<host>:<port>=<ip>:<port>` makes the version check connect to that address
/// for the test listener at `<host>:<port>`. Not for production use: it exists so that the
/// test suite can stand a local HTTP server in for an emulated load balancer.
pub const TEST_RESOLVE_ENV: &str = "SHIPIT_TEST_RESOLVE";

/// The address [`TEST_RESOLVE_ENV`] gives for `authority`, if any.
fn test_resolve(authority: &str) -> Option<SocketAddr> {
    let value = std::env::var(TEST_RESOLVE_ENV).ok()?;
    let (name, addr) = value.split_once('=')?;
    if !name.eq_ignore_ascii_case(authority) {
        return None;
    }
    addr.parse().ok()
}

impl EcsPlatform {
    /// Points the test listener at `slot`'s target group.
    pub(super) async fn preview(
        &self,
        slot: Slot,
        phase: Phase,
        reporter: &Reporter,
    ) -> Result<Option<String>, PlatformError> {
        let Some(test) = &self.target.test_listener_arn else {
            return Ok(None);
        };
        let change = Change::ModifyListener {
            listener_arn: test.clone(),
            forward: Forward::all_to(self.group(slot), self.group(slot.other())),
        };
        self.send(&change, None).await?;
        reporter.progress(
            phase,
            format!("the test listener forwards to the {slot} slot"),
        );
        Ok(self.site.test_url.clone())
    }

    /// GETs the version path through the test listener, when the load balancer's name
    /// resolves from here. An emulator's does not: the check is skipped with a warning.
    pub(super) async fn check_version(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        let (Some(path), Some(url)) = (&self.service.verify.version_path, &self.site.test_url)
        else {
            return Ok(());
        };
        let authority = url
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let addr = match test_resolve(authority) {
            Some(addr) => Ok(Some(addr)),
            None => tokio::net::lookup_host(authority)
                .await
                .map(|mut a| a.next()),
        };
        let addr = match addr {
            Ok(Some(addr)) => addr,
            _ => {
                reporter.warn(format!(
                    "skipped the version check: {authority} does not resolve from here (an emulated load balancer?)"
                ));
                return Ok(());
            }
        };
        let prober = crate::health::Prober::new(addr);
        // A listener change reaches every node of a load balancer within seconds, not at
        // once: an answer from the other release is asked again until the propagation
        // window has passed. Any other failure ends the check.
        let check = async {
            let started = tokio::time::Instant::now();
            loop {
                match prober.check_version(path, &candidate.release).await {
                    Err(crate::health::HealthError::WrongVersion { .. })
                        if started.elapsed() < LISTENER_PROPAGATION =>
                    {
                        tokio::time::sleep(PROPAGATION_RETRY).await;
                    }
                    other => return other,
                }
            }
        };
        tokio::time::timeout(VERSION_CHECK_TIMEOUT, check)
            .await
            .map_err(|_| {
                PlatformError::new(
                    ErrorKind::Verify,
                    format!("{url}{path} did not answer within {}", humantime::format_duration(VERSION_CHECK_TIMEOUT)),
                )
            })?
            .map_err(|e| {
                PlatformError::new(ErrorKind::Verify, format!("through the test listener: {e}")).with_hint(format!(
                    "the app must include $SHIPIT_RELEASE in the body of {path}; the live slot was not touched"
                ))
            })?;
        reporter.progress(
            Phase::Verify,
            format!("{url}{path} reports release {}", candidate.release),
        );
        Ok(())
    }
}
