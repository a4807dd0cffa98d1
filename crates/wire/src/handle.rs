//! The public handles both adapters share — the calls of a `Client`, a `TaskPool` and its
//! `SocketTask`s that do not wait — defined once over [`DriverHandle`], so that the two
//! adapters' handles take the same arguments, check them the same way and say the same in
//! their docs.
//!
//! An adapter implements [`DriverHandle`] for its driver handle and invokes
//! [`client_calls!`](crate::client_calls) inside `impl Client` and
//! [`task_pool!`](crate::task_pool) in its pool module. What waits (`send`, `shutdown`:
//! `async` in tokio, blocking in blocking), `try_send` (whose bookkeeping of waiters is the
//! adapter's) and the constructors stay in the adapter.

use crate::client::SocketInfo;
use crate::proxy::ProxyEnv;
use std::time::Instant;
use wxsocket_core::{ConnId, ConnectError, HandshakeRequest};

/// How an adapter's handle reaches the machine its driver runs (a `Session`, a `Pool` or
/// a wx socket). Every handle keeps the driver alive; when the last is dropped, the driver
/// shuts the machine down.
pub trait DriverHandle<M>: Send + Sync + 'static {
    /// Runs `f` on the machine under the driver's lock, with the driver's clock, then
    /// carries out what the call queued (or wakes the driver to).
    fn call<R>(&self, f: impl FnOnce(&mut M, Instant) -> R) -> R;

    /// Reads the machine under the lock; nothing runs.
    fn read<R>(&self, f: impl FnOnce(&M) -> R) -> R;

    /// The socket of connection `conn`, once it is dialled.
    fn socket_info(&self, conn: ConnId) -> Option<SocketInfo>;

    /// Whether the driver has ended: nothing runs what the machine queues any more (the
    /// callbacks of a wx call made after a shutdown, say).
    fn has_ended(&self) -> bool;

    /// The proxy variables the driver dials with, read when it started.
    fn proxy_env(&self) -> &ProxyEnv;
}

/// Refuses, before any IO, a request the driver could not dial however often it tried: one
/// that needs a feature this build lacks ([`crate::check_request`]), or one whose proxy
/// from the environment is not usable ([`ProxyEnv::check`]).
pub fn check_dial(request: &HandshakeRequest, env: &ProxyEnv) -> Result<(), ConnectError> {
    crate::check_request(request)?;
    env.check(request)
}

/// `options` validated and checked as a request the driver of `handle` can dial
/// ([`check_dial`]), for `connect` and `reconnect_with`.
pub fn dialable<M>(
    handle: &impl DriverHandle<M>,
    options: &wxsocket_core::ConnectOptions,
) -> Result<std::sync::Arc<HandshakeRequest>, ConnectError> {
    let request = options.validate()?;
    check_dial(&request, handle.proxy_env())?;
    Ok(std::sync::Arc::new(request))
}

/// The calls of a `Client` that return at once, for an `impl Client` block whose `handle`
/// field is an `Arc` of a [`DriverHandle`] over a `Session`.
#[macro_export]
#[doc(hidden)]
macro_rules! client_calls {
    () => {
        /// `wx.connectSocket`: validates `options` (nothing is dialled on error) and starts
        /// a new connection, replacing the current one (whose close event comes first).
        pub fn connect(
            &self,
            options: &$crate::reexports::ConnectOptions,
        ) -> Result<$crate::reexports::ConnId, $crate::reexports::ConnectError> {
            let request = $crate::handle::dialable(&*self.handle, options)?;
            $crate::handle::DriverHandle::call(
                &*self.handle,
                |s: &mut $crate::__private::Session, now| s.connect_request(request, now),
            )
        }

        /// What the reconnect policy dials from its next attempt on, for what changes
        /// between attempts (a token in the URL or a header that expires, as Socket.IO's
        /// `auth` callback or SignalR's `accessTokenFactory` are asked again on every
        /// reconnection): validates `options` as `connect` does (nothing changes on error)
        /// and keeps them for the next reconnection, which goes on dialling them. The
        /// current connection is not touched. Call it when a token is renewed, or on the
        /// [`Event::Reconnecting`](crate::Event::Reconnecting) that announces an attempt
        /// (it dials when its delay is over). Without a reconnect policy nothing dials it;
        /// with no connection to reconnect (none made, or the last ended for good),
        /// [`ConnectError::NoConnection`](crate::ConnectError::NoConnection): `connect`
        /// instead. A later `connect` drops it.
        pub fn reconnect_with(
            &self,
            options: &$crate::reexports::ConnectOptions,
        ) -> Result<(), $crate::reexports::ConnectError> {
            let request = $crate::handle::dialable(&*self.handle, options)?;
            $crate::handle::DriverHandle::call(
                &*self.handle,
                |s: &mut $crate::__private::Session, now| s.reconnect_with_request(request, now),
            )
        }

        /// Sends a ping (payload at most 125 bytes) on the open connection; the peer's
        /// answer arrives as [`Event::Pong`](crate::Event::Pong) with the same payload.
        pub fn ping(
            &self,
            payload: impl Into<$crate::__private::Bytes>,
        ) -> Result<(), $crate::reexports::PingError> {
            let payload = payload.into();
            $crate::handle::DriverHandle::call(
                &*self.handle,
                |s: &mut $crate::__private::Session, now| s.ping(payload, now),
            )
        }

        /// `wx.closeSocket`: code 1000 (`None`) or 3000–4999, reason at most 123 UTF-8
        /// bytes.
        pub fn close(
            &self,
            code: Option<u16>,
            reason: &str,
        ) -> Result<(), $crate::reexports::CloseError> {
            $crate::handle::DriverHandle::call(
                &*self.handle,
                |s: &mut $crate::__private::Session, now| s.close(code, reason, now),
            )
        }

        /// The state (`readyState`).
        pub fn state(&self) -> $crate::reexports::ReadyState {
            $crate::handle::DriverHandle::read(&*self.handle, $crate::__private::Session::state)
        }

        /// Bytes accepted but not yet confirmed written.
        pub fn buffered_amount(&self) -> usize {
            $crate::handle::DriverHandle::read(
                &*self.handle,
                $crate::__private::Session::buffered_amount,
            )
        }

        /// The current connection (Connecting, Open or Closing), if any.
        pub fn current(&self) -> Option<$crate::reexports::ConnId> {
            $crate::handle::DriverHandle::read(&*self.handle, $crate::__private::Session::current)
        }

        /// The current connection's socket (addresses, `TCP_NODELAY`, TLS), once it is
        /// dialled.
        pub fn socket_info(&self) -> Option<$crate::reexports::SocketInfo> {
            let conn = self.current()?;
            $crate::handle::DriverHandle::socket_info(&*self.handle, conn)
        }

        /// The session's counters: input it did not act on, and how often and how long
        /// reading paused because the application had not taken its events (flow control;
        /// `read_paused_for` counts a pause once reading has resumed).
        pub fn stats(&self) -> $crate::reexports::Stats {
            $crate::handle::DriverHandle::read(&*self.handle, $crate::__private::Session::stats)
        }

        /// The received messages (count, payload bytes) and send completions waiting in the
        /// session for the application; the messages stay within
        /// [`SessionConfig::receive_bounds`](crate::SessionConfig::receive_bounds) (one
        /// larger message excepted), as reading pauses at the bound, and the completions
        /// within `max_untaken_completions` (at that bound sends wait). Events already moved
        /// to the [`Events`](crate::Events)' own small batch (at most 64 events and 256 KiB
        /// of messages, or one larger message the application asked for) are not counted.
        pub fn backlog(&self) -> $crate::reexports::Backlog {
            $crate::handle::DriverHandle::read(&*self.handle, $crate::__private::Session::backlog)
        }
    };
}

/// `Debug` for a `Client` with [`client_calls!`]: its state and current connection.
#[macro_export]
#[doc(hidden)]
macro_rules! client_debug {
    () => {
        impl ::std::fmt::Debug for Client {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct("Client")
                    .field("state", &self.state())
                    .field("current", &self.current())
                    .finish()
            }
        }
    };
}

/// Defines `TaskPool` and `SocketTask` with their calls that return at once, over an
/// adapter's driver handle type (a [`DriverHandle`] over a `Pool`). The attributes given
/// go on `TaskPool`.
#[macro_export]
#[doc(hidden)]
macro_rules! task_pool {
    ($(#[$meta:meta])* handle: $handle:ty $(,)?) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct TaskPool {
            handle: ::std::sync::Arc<$handle>,
        }

        impl ::std::fmt::Debug for TaskPool {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct("TaskPool")
                    .field("live", &self.live())
                    .finish_non_exhaustive()
            }
        }

        impl TaskPool {
            /// `wx.connectSocket` returning a `SocketTask`: opens a new connection next to
            /// the others; over the limit,
            /// [`ConnectError::TooManyConnections`](crate::ConnectError::TooManyConnections).
            pub fn connect(
                &self,
                options: &$crate::reexports::ConnectOptions,
            ) -> Result<SocketTask, $crate::reexports::ConnectError> {
                // Invalid options pass here, for the pool to refuse as it always does.
                if let Ok(request) = options.validate() {
                    let env = $crate::handle::DriverHandle::proxy_env(&*self.handle);
                    $crate::handle::check_dial(&request, env)?;
                }
                let id = $crate::handle::DriverHandle::call(
                    &*self.handle,
                    |p: &mut $crate::__private::Pool, now| p.connect(options, now),
                )?;
                Ok(SocketTask {
                    id,
                    handle: ::std::sync::Arc::clone(&self.handle),
                })
            }

            /// The task connection `conn` belongs to ([`SocketTask::id`]): the events of a
            /// task's later connections, after a reconnect, carry their own ids, and this
            /// maps them back, also for a connection that has ended (until 1,024 more, or
            /// eight per `pool_limit` if that is more, at most 262,144, have ended), so the
            /// events taken late map too. `None` for an id the pool never
            /// gave or no longer maps.
            pub fn task_of(
                &self,
                conn: $crate::reexports::ConnId,
            ) -> Option<$crate::reexports::ConnId> {
                $crate::handle::DriverHandle::read(&*self.handle, |p: &$crate::__private::Pool| {
                    p.task_of(conn)
                })
            }

            /// Connections not yet closed (the ones that count toward the limit).
            pub fn live(&self) -> usize {
                $crate::handle::DriverHandle::read(&*self.handle, $crate::__private::Pool::live)
            }

            /// The received messages (count, payload bytes) and send completions waiting
            /// in the pool for the application, over every task. Reading pauses when a
            /// task reaches its own
            /// [`SessionConfig::receive_bounds`](crate::SessionConfig::receive_bounds),
            /// and the tasks holding more than their share pause when the pool reaches
            /// [`SessionConfig::pool_receive_bounds`](crate::SessionConfig::pool_receive_bounds)
            /// (the others read on, up to their share).
            /// Events already moved to the [`Events`](crate::Events)' own small batch (at
            /// most 64) are not counted.
            pub fn backlog(&self) -> $crate::reexports::Backlog {
                $crate::handle::DriverHandle::read(&*self.handle, $crate::__private::Pool::backlog)
            }
        }

        /// One connection of a [`TaskPool`] (`SocketTask`). Cheap to clone. Dropping it
        /// does not close the connection ([`close`](Self::close) does); dropping the pool
        /// and every task closes them all.
        #[derive(Clone)]
        pub struct SocketTask {
            id: $crate::reexports::ConnId,
            handle: ::std::sync::Arc<$handle>,
        }

        impl ::std::fmt::Debug for SocketTask {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_struct("SocketTask")
                    .field("id", &self.id)
                    .field("state", &self.state())
                    .finish_non_exhaustive()
            }
        }

        impl SocketTask {
            /// This task's id: the id of its first connection, the `conn` of its events
            /// until a reconnect; the events of later connections carry theirs
            /// ([`Self::current`], [`TaskPool::task_of`]). Every call accepts either.
            pub fn id(&self) -> $crate::reexports::ConnId {
                self.id
            }

            /// The connection this task is on now (its first, or a later one after a
            /// reconnect); `None` once it is closed.
            pub fn current(&self) -> Option<$crate::reexports::ConnId> {
                let id = self.id;
                $crate::handle::DriverHandle::read(&*self.handle, |p: &$crate::__private::Pool| {
                    p.current(id)
                })
            }

            /// What this task's reconnect policy dials from its next attempt on; see
            /// [`Client::reconnect_with`](crate::Client::reconnect_with).
            pub fn reconnect_with(
                &self,
                options: &$crate::reexports::ConnectOptions,
            ) -> Result<(), $crate::reexports::ConnectError> {
                let request = $crate::handle::dialable(&*self.handle, options)?;
                let id = self.id;
                $crate::handle::DriverHandle::call(
                    &*self.handle,
                    |p: &mut $crate::__private::Pool, now| p.reconnect_with_request(id, request, now),
                )
            }

            /// Sends a ping on this connection; see [`Client::ping`](crate::Client::ping).
            pub fn ping(
                &self,
                payload: impl Into<$crate::__private::Bytes>,
            ) -> Result<(), $crate::reexports::PingError> {
                let (id, payload) = (self.id, payload.into());
                $crate::handle::DriverHandle::call(
                    &*self.handle,
                    |p: &mut $crate::__private::Pool, now| p.ping(id, payload, now),
                )
            }

            /// `SocketTask.close(code, reason)`: code 1000 (`None`) or 3000–4999, reason at
            /// most 123 UTF-8 bytes.
            pub fn close(
                &self,
                code: Option<u16>,
                reason: &str,
            ) -> Result<(), $crate::reexports::CloseError> {
                let id = self.id;
                $crate::handle::DriverHandle::call(
                    &*self.handle,
                    |p: &mut $crate::__private::Pool, now| p.close(id, code, reason, now),
                )
            }

            /// This connection's state (`Closed` once the pool has forgotten it).
            pub fn state(&self) -> $crate::reexports::ReadyState {
                $crate::handle::DriverHandle::read(&*self.handle, |p: &$crate::__private::Pool| {
                    p.state(self.id)
                })
            }

            /// Bytes accepted on this connection but not yet confirmed written.
            pub fn buffered_amount(&self) -> usize {
                $crate::handle::DriverHandle::read(&*self.handle, |p: &$crate::__private::Pool| {
                    p.buffered_amount(self.id)
                })
            }

            /// This connection's socket (addresses, `TCP_NODELAY`, TLS), once it is dialled.
            pub fn socket_info(&self) -> Option<$crate::reexports::SocketInfo> {
                $crate::handle::DriverHandle::socket_info(&*self.handle, self.id)
            }
        }
    };
}
