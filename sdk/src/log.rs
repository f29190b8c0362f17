//! Messages for the run log: `log::info("...")` functions and `log::info!("{x}")` macros.
//!
//! The host tags every message with the plugin, connection and trace id, and
//! stores it with the run. Never log secrets or whole personal records.

pub use crate::bindings::switchyard::connector::log::Level;

/// Sends `message` to the run log at `level`.
pub fn log(level: Level, message: &str) {
    crate::bindings::switchyard::connector::log::log(level, message);
}

/// Logs at trace level.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Logs at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs at info level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Logs at error level.
pub fn error(message: &str) {
    log(Level::Error, message);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __switchyard_log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::log($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

/// Logs a `format!`-style message at trace level.
#[doc(hidden)]
#[macro_export]
macro_rules! __switchyard_trace {
    ($($arg:tt)+) => { $crate::__switchyard_log!(Trace, $($arg)+) };
}

/// Logs a `format!`-style message at debug level.
#[doc(hidden)]
#[macro_export]
macro_rules! __switchyard_debug {
    ($($arg:tt)+) => { $crate::__switchyard_log!(Debug, $($arg)+) };
}

/// Logs a `format!`-style message at info level.
#[doc(hidden)]
#[macro_export]
macro_rules! __switchyard_info {
    ($($arg:tt)+) => { $crate::__switchyard_log!(Info, $($arg)+) };
}

/// Logs a `format!`-style message at warn level.
#[doc(hidden)]
#[macro_export]
macro_rules! __switchyard_warn {
    ($($arg:tt)+) => { $crate::__switchyard_log!(Warn, $($arg)+) };
}

/// Logs a `format!`-style message at error level.
#[doc(hidden)]
#[macro_export]
macro_rules! __switchyard_error {
    ($($arg:tt)+) => { $crate::__switchyard_log!(Error, $($arg)+) };
}

/// `log::trace!("...", args)`: a `format!`-style message at trace level.
#[doc(inline)]
pub use crate::__switchyard_trace as trace;

/// `log::debug!("...", args)`: a `format!`-style message at debug level.
#[doc(inline)]
pub use crate::__switchyard_debug as debug;

/// `log::info!("...", args)`: a `format!`-style message at info level.
#[doc(inline)]
pub use crate::__switchyard_info as info;

/// `log::warn!("...", args)`: a `format!`-style message at warn level.
#[doc(inline)]
pub use crate::__switchyard_warn as warn;

/// `log::error!("...", args)`: a `format!`-style message at error level.
#[doc(inline)]
pub use crate::__switchyard_error as error;
