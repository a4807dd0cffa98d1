//! The driver's timing profile of a dial reaches the application unchanged: on
//! `Event::Open` and in `onSocketOpen`'s result (`res.profile`). Simulated: the profile is
//! whatever the driver measured, the core only carries it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wxsocket_core::wx::*;
use wxsocket_core::*;

fn profile() -> OpenProfile {
    let ms = Duration::from_millis;
    OpenProfile::new(ms(2), ms(5), Some(ms(11)), ms(12), ms(313))
}

#[test]
fn the_profile_passes_through_to_the_open_event() {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::default()).unwrap();
    let conn = s
        .connect(&ConnectOptions::new("wss://example.com/"), now)
        .unwrap();
    assert!(matches!(s.poll_action(), Some(Action::Dial { .. })));
    let handshake = Handshake::default()
        .with_protocol(None)
        .with_profile(profile());
    s.handle(conn, TransportEvent::Opened(Box::new(handshake)), now);
    let events: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
    match events.as_slice() {
        [Event::Connecting { .. }, Event::Open { handshake, .. }] => {
            assert_eq!(handshake.profile, profile());
            // Debug shows it (Display stays one short line).
            assert!(format!("{:?}", events[1]).contains("response_received: 313ms"));
            assert_eq!(events[1].to_string(), "#1 open");
        }
        other => panic!("{other:#?}"),
    }
}

#[test]
fn on_socket_open_receives_the_profile() {
    let now = Instant::now();
    let seen: Arc<Mutex<Vec<OpenProfile>>> = Arc::default();
    let mut wx = WxSocket::new(SessionConfig::default()).unwrap();
    let s = Arc::clone(&seen);
    wx.on_socket_open(move |r| s.lock().unwrap().push(r.profile));
    let conn = wx
        .connect_socket(
            ConnectSocket::new(ConnectOptions::new("wss://example.com")),
            now,
        )
        .unwrap();
    let handshake = Handshake::default().with_profile(profile());
    Driven::handle(
        &mut wx,
        conn,
        TransportEvent::Opened(Box::new(handshake)),
        now,
    );
    wx.dispatch();
    assert_eq!(*seen.lock().unwrap(), [profile()]);
}

#[test]
fn phases_are_the_differences_and_add_up() {
    let p = profile();
    let phases: Vec<_> = p.phases().collect();
    let ms = Duration::from_millis;
    assert_eq!(
        phases,
        [
            ("dns", ms(2)),
            ("tcp", ms(3)),
            ("tls", ms(6)),
            ("request", ms(1)),
            ("response", ms(301)),
        ]
    );
    let sum: Duration = phases.iter().map(|(_, d)| *d).sum();
    assert_eq!(sum, p.response_received);
    // Without TLS there is no "tls" phase; the request phase starts at the connect.
    let plain = OpenProfile::new(ms(0), ms(1), None, ms(2), ms(4));
    let names: Vec<_> = plain.phases().map(|(name, _)| name).collect();
    assert_eq!(names, ["dns", "tcp", "request", "response"]);
    assert_eq!(OpenProfile::default().phases().count(), 4);
}
