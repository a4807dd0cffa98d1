//! The WeChat socket surface (`wx.connectSocket` and its six companions) as both adapters
//! expose it: one definition of `WxSocket` / `WeakWxSocket` and their calls, so the two
//! adapters' surfaces cannot drift apart.
//!
//! An adapter implements [`DriverHandle`](crate::handle::DriverHandle) for its driver
//! handle over a [`wxsocket_core::wx::WxSocket`] and invokes [`wx_socket!`](crate::wx_socket)
//! in its `wx` module; it then adds what is its own: `new` (starting its driver) and `shutdown`
//! (async in tokio, blocking in blocking).

use crate::client::Config;
use wxsocket_core::ConfigError;
use wxsocket_core::wx::WxSocket;

pub use wxsocket_core::wx::{
    CallResult, CloseResult, CloseSocket, ConnectSocket, ErrorResult, MessageResult, OpenResult,
    SendSocketMessage,
};

/// The wx core an adapter drives: deferred callbacks (they run on the driver, outside the
/// lock), the recording of [`Config::record`], and the driver's connect check ([`crate::handle::check_dial`], with the proxy
/// variables `config` gives).
pub fn core(config: &Config) -> Result<WxSocket, ConfigError> {
    let mut core = WxSocket::deferred(config.session.clone())?;
    if let Some(recording) = &config.record {
        recording.attach_wx(&mut core);
    }
    let env = config.resolve_proxy_env();
    core.set_connect_check(move |request| crate::handle::check_dial(request, &env));
    Ok(core)
}

/// Defines `WxSocket` and `WeakWxSocket` in an adapter's `wx` module over its driver
/// handle type (which implements [`DriverHandle`](crate::handle::DriverHandle) over the wx core). The attributes given (docs, derives) go on
/// `WxSocket`; the doc example there is the adapter's own.
#[macro_export]
#[doc(hidden)]
macro_rules! wx_socket {
    ($(#[$meta:meta])* handle: $handle:ty, driver: $driver:literal $(,)?) => {
        pub use $crate::wx::{
            CallResult, CloseResult, CloseSocket, ConnectSocket, ErrorResult, MessageResult,
            OpenResult, SendSocketMessage,
        };

        $(#[$meta])*
        #[derive(Clone)]
        pub struct WxSocket {
            handle: ::std::sync::Arc<$handle>,
        }

        /// A [`WxSocket`] that does not keep the socket alive; for callbacks that call back
        /// into it.
        #[derive(Clone)]
        pub struct WeakWxSocket {
            handle: ::std::sync::Weak<$handle>,
        }

        impl ::std::fmt::Debug for WeakWxSocket {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct("WeakWxSocket").finish_non_exhaustive()
            }
        }

        impl WeakWxSocket {
            /// The socket, if some clone of it still exists.
            pub fn upgrade(&self) -> Option<WxSocket> {
                self.handle.upgrade().map(|handle| WxSocket { handle })
            }
        }

        impl ::std::fmt::Debug for WxSocket {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct("WxSocket")
                    .field("state", &self.state())
                    .finish_non_exhaustive()
            }
        }

        impl WxSocket {
            /// A handle that does not keep the socket alive.
            pub fn downgrade(&self) -> WeakWxSocket {
                WeakWxSocket {
                    handle: ::std::sync::Arc::downgrade(&self.handle),
                }
            }

            #[doc = concat!(
                "`wx.connectSocket`. Replaces a connection that exists (WeChat's single-socket ",
                "rule). Options this adapter cannot honour fail like invalid ones. Callbacks run ",
                "on the driver ", $driver, ", never inside this call (but maybe before it has returned ",
                "to its caller)."
            )]
            pub fn connect_socket(
                &self,
                call: ConnectSocket,
            ) -> Result<$crate::reexports::ConnId, CallResult> {
                self.call(|core, now| core.connect_socket(call, now))
            }

            /// What the reconnect policy dials from its next attempt on, for a token in the
            /// URL or a header that expires (not a WeChat call: the reconnect policy is this
            /// library's); validated as `connect_socket` validates options, the current
            /// connection untouched, no callback run; with no connection to reconnect,
            /// [`ConnectError::NoConnection`](crate::ConnectError::NoConnection). See
            /// [`Client::reconnect_with`](crate::Client::reconnect_with).
            pub fn reconnect_with(
                &self,
                options: &$crate::reexports::ConnectOptions,
            ) -> Result<(), $crate::reexports::ConnectError> {
                self.call(|core, now| core.reconnect_with(options, now))
            }

            /// `wx.sendSocketMessage`. Queued while connecting; `success` once written;
            /// `fail` when refused or when the message can no longer be written.
            pub fn send_socket_message(
                &self,
                call: SendSocketMessage,
            ) -> Result<$crate::reexports::SendId, CallResult> {
                self.call(|core, now| core.send_socket_message(call, now))
            }

            /// `wx.closeSocket`.
            pub fn close_socket(&self, call: CloseSocket) -> Result<(), CallResult> {
                self.call(|core, now| core.close_socket(call, now))
            }

            /// `wx.onSocketOpen`: replaces the previous listener. The result has the
            /// response headers and, as `profile`, how long each phase of the dial took, as
            /// this adapter measured it ([`OpenProfile`](crate::OpenProfile)).
            pub fn on_socket_open(&self, f: impl FnMut(&OpenResult) + Send + 'static) {
                self.call(|core, _| core.on_socket_open(f));
            }

            /// `wx.onSocketError`: replaces the previous listener.
            pub fn on_socket_error(&self, f: impl FnMut(&ErrorResult) + Send + 'static) {
                self.call(|core, _| core.on_socket_error(f));
            }

            /// `wx.onSocketMessage`: replaces the previous listener.
            pub fn on_socket_message(&self, f: impl FnMut(&MessageResult) + Send + 'static) {
                self.call(|core, _| core.on_socket_message(f));
            }

            /// `wx.onSocketClose`: replaces the previous listener.
            pub fn on_socket_close(&self, f: impl FnMut(&CloseResult) + Send + 'static) {
                self.call(|core, _| core.on_socket_close(f));
            }

            /// Runs `f` on the wx core. Once the driver has ended (after a shutdown),
            /// nothing else runs the callbacks the call queued (a refused call's `fail` and
            /// `complete`): they run here, before this returns.
            fn call<R>(
                &self,
                f: impl FnOnce(&mut $crate::__private::WxCore, ::std::time::Instant) -> R,
            ) -> R {
                let result = $crate::handle::DriverHandle::call(&*self.handle, f);
                if $crate::handle::DriverHandle::has_ended(&*self.handle) {
                    $crate::machine::run_last_callbacks(|| {
                        $crate::handle::DriverHandle::call(&*self.handle, |core, _| {
                            $crate::machine::Machine::due_callbacks(core)
                        })
                    });
                }
                result
            }

            /// The state (`readyState`).
            pub fn state(&self) -> $crate::reexports::ReadyState {
                $crate::handle::DriverHandle::read(&*self.handle, |core| core.session().state())
            }

            /// Bytes accepted but not yet written.
            pub fn buffered_amount(&self) -> usize {
                $crate::handle::DriverHandle::read(&*self.handle, |core| core.session().buffered_amount())
            }
        }
    };
}
