//! The shape every method of berth's objects shares around its one engine call: keep
//! berthd from idling out while it runs, authorize the caller, and reply once the signals
//! the call produced are out.

use zbus::message::Header;

use super::auth::Action;
use super::error::BusResult;
use super::Shared;
use crate::engine::{BusyGuard, Caller, Engine, EngineError};

/// An object berth serves: it holds the engine handle and what every object shares (and
/// the id of what it shows, never the thing itself).
pub trait Served {
    fn engine(&self) -> &Engine;
    fn shared(&self) -> &Shared;

    /// Begins a call. zbus has checked that it brought the arguments the method declares
    /// and nothing else (none for a method that declares none), before anything runs:
    /// tests/contract.rs calls every method with one argument more.
    fn call<'a>(&'a self, header: &'a Header<'a>) -> Call<'a> {
        Call {
            engine: self.engine(),
            shared: self.shared(),
            header,
            _busy: self.engine().busy(),
        }
    }
}

/// One method call in progress.
pub struct Call<'a> {
    engine: &'a Engine,
    shared: &'a Shared,
    header: &'a Header<'a>,
    _busy: BusyGuard,
}

impl Call<'_> {
    pub fn engine(&self) -> &Engine {
        self.engine
    }

    /// The caller, if it may do `action` (polkit for anyone but root).
    pub async fn authorize(&self, action: Action) -> BusResult<Caller> {
        self.shared.auth.authorize(self.header, action).await
    }

    /// As [`Call::authorize`], with details for polkit's rules and prompt.
    pub async fn authorize_with(
        &self,
        action: Action,
        details: &[(&str, String)],
    ) -> BusResult<Caller> {
        self.shared
            .auth
            .authorize_with(self.header, action, details)
            .await
    }

    /// Whether the caller may do `action`, asked without interaction; never an error.
    pub async fn permits(&self, action: Action) -> bool {
        self.shared.auth.permits(self.header, action).await
    }

    /// Maps the engine's result to the reply, once every signal the call produced is out.
    pub async fn reply<T>(self, result: Result<T, EngineError>) -> BusResult<T> {
        self.shared.reply(self.engine, result).await
    }
}
