//! The platform of the selected target, whatever its kind: one type the commands hand to the
//! release state machine, which is generic over [`Platform`].

use std::time::Duration;

use shipit_pipeline::Slot;
use shipit_pipeline::event::Reporter;
use shipit_pipeline::history::{HistoryStore, ReleaseRecord};
use shipit_pipeline::lock::LockStore;
use shipit_pipeline::platform::ecs::EcsPlatform;
use shipit_pipeline::platform::local::LocalPlatform;
use shipit_pipeline::platform::{BuildInput, Candidate, Image, Live, Platform, PlatformError};
use shipit_pipeline::shift::ShiftStrategy;
use tokio_util::sync::CancellationToken;

pub enum TargetPlatform {
    Local(Box<LocalPlatform>),
    Ecs(Box<EcsPlatform>),
}

/// Calls the same method on whichever platform it is.
macro_rules! each {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            TargetPlatform::Local($p) => $e,
            TargetPlatform::Ecs($p) => $e,
        }
    };
}

impl Platform for TargetPlatform {
    fn describe(&self) -> String {
        each!(self, p => p.describe())
    }

    fn service(&self) -> &str {
        each!(self, p => p.service())
    }

    fn target(&self) -> &str {
        each!(self, p => p.target())
    }

    fn url(&self) -> String {
        each!(self, p => p.url())
    }

    fn locks(&self) -> &dyn LockStore {
        each!(self, p => p.locks())
    }

    fn history(&self) -> &dyn HistoryStore {
        each!(self, p => p.history())
    }

    fn shift_strategy(&self) -> &ShiftStrategy {
        each!(self, p => p.shift_strategy())
    }

    async fn live(&self) -> Result<Option<Live>, PlatformError> {
        each!(self, p => p.live().await)
    }

    async fn converge(&self, reporter: &Reporter) -> Result<Option<Live>, PlatformError> {
        each!(self, p => Box::pin(p.converge(reporter)).await)
    }

    async fn build(&self, input: &BuildInput, reporter: &Reporter) -> Result<Image, PlatformError> {
        each!(self, p => Box::pin(p.build(input, reporter)).await)
    }

    async fn push(&self, image: &Image, reporter: &Reporter) -> Result<Image, PlatformError> {
        each!(self, p => Box::pin(p.push(image, reporter)).await)
    }

    async fn launch(
        &self,
        slot: Slot,
        release: &str,
        version: &str,
        image: &Image,
        reporter: &Reporter,
    ) -> Result<Candidate, PlatformError> {
        each!(self, p => Box::pin(p.launch(slot, release, version, image, reporter)).await)
    }

    async fn revive(
        &self,
        record: &ReleaseRecord,
        slot: Slot,
        reporter: &Reporter,
    ) -> Result<Candidate, PlatformError> {
        each!(self, p => Box::pin(p.revive(record, slot, reporter)).await)
    }

    async fn verify(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
        cancel: &CancellationToken,
    ) -> Result<(), PlatformError> {
        each!(self, p => Box::pin(p.verify(candidate, reporter, cancel)).await)
    }

    async fn shift(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> Result<Option<Live>, PlatformError> {
        each!(self, p => Box::pin(p.shift(candidate, reporter)).await)
    }

    async fn split(
        &self,
        candidate: &Candidate,
        live: &Live,
        percent: u8,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        each!(self, p => Box::pin(p.split(candidate, live, percent, reporter)).await)
    }

    async fn bake(
        &self,
        candidate: &Candidate,
        period: Duration,
        reporter: &Reporter,
        cancel: &CancellationToken,
    ) -> Result<(), PlatformError> {
        each!(self, p => Box::pin(p.bake(candidate, period, reporter, cancel)).await)
    }

    async fn unsplit(
        &self,
        live: &Live,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> Result<(), PlatformError> {
        each!(self, p => Box::pin(p.unsplit(live, candidate, reporter)).await)
    }

    async fn stage(
        &self,
        candidate: &Candidate,
        reporter: &Reporter,
    ) -> Result<Option<String>, PlatformError> {
        each!(self, p => Box::pin(p.stage(candidate, reporter)).await)
    }

    async fn staged(&self, slot: Slot, release: &str) -> Result<Option<Candidate>, PlatformError> {
        each!(self, p => Box::pin(p.staged(slot, release)).await)
    }

    async fn retire(&self, old: &Live, reporter: &Reporter) -> Result<(), PlatformError> {
        each!(self, p => Box::pin(p.retire(old, reporter)).await)
    }

    async fn discard(&self, slot: Slot, reporter: &Reporter) -> Result<(), PlatformError> {
        each!(self, p => Box::pin(p.discard(slot, reporter)).await)
    }

    async fn down(&self, reporter: &Reporter) -> Result<(), PlatformError> {
        each!(self, p => Box::pin(p.down(reporter)).await)
    }
}
