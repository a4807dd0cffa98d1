//! The notices of one reconnection attempt, held back while the application leaves
//! [`crate::RECONNECT_HOLD_NOTICES`] notices or more untaken. An attempt that ends with
//! nothing to report but its own notices (`Reconnecting`, `Connecting`, `Open`, `Error`,
//! `Close`), and after which another attempt follows while the notices still wait, is
//! folded into that attempt's `Reconnecting` event as a count instead of being queued: so
//! an application that stopped taking events holds a bounded number of notices, however
//! long the server stays away or keeps dropping it. Nothing else is dropped: an event that
//! is not a notice of the attempt queues what is held first, in order; and taking events
//! until fewer than the count wait queues it too (an attempt that ended for good, with no
//! attempt after it, stays held until then, behind what was queued before it).

use crate::event::Event;

/// The notices of the reconnection attempt held back, from its `Reconnecting` event on;
/// empty when none is.
#[derive(Debug, Default)]
pub(super) struct HeldAttempt {
    events: Vec<Event>,
}

impl HeldAttempt {
    /// Whether no attempt is held.
    pub(super) fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Holds `reconnecting`, the `Reconnecting` event of an attempt beginning while the
    /// notices untaken are at their count; nothing is held yet.
    pub(super) fn start(&mut self, reconnecting: Event) {
        debug_assert!(self.events.is_empty());
        debug_assert!(matches!(reconnecting, Event::Reconnecting { .. }));
        self.events.push(reconnecting);
    }

    /// Keeps `event` if it is a notice of the attempt held (it is then `None`).
    pub(super) fn keep(&mut self, event: Event) -> Option<Event> {
        let Some(first) = self.events.first() else {
            return Some(event);
        };
        let notice = matches!(
            event,
            Event::Connecting { .. }
                | Event::Open { .. }
                | Event::Error { .. }
                | Event::Close { .. }
        );
        if !notice || first.conn() != event.conn() || self.ended() {
            return Some(event);
        }
        self.events.push(event);
        None
    }

    /// Whether the attempt held ended: its `Close` is here.
    pub(super) fn ended(&self) -> bool {
        matches!(self.events.last(), Some(Event::Close { .. }))
    }

    /// Folds the attempt held, which ended, into `next`, the `Reconnecting` event of the
    /// attempt after it: `next` carries its count (and those it carried) instead of its
    /// notices, which are dropped.
    pub(super) fn fold_into(&mut self, next: &mut Event) {
        debug_assert!(self.ended());
        let opened = self.events.iter().any(|e| matches!(e, Event::Open { .. }));
        let Some(Event::Reconnecting {
            unreported: before,
            unreported_opened: opened_before,
            ..
        }) = self.events.first()
        else {
            unreachable!("a held attempt begins with its Reconnecting event")
        };
        let (before, opened_before) = (*before, *opened_before);
        if let Event::Reconnecting {
            unreported,
            unreported_opened,
            ..
        } = next
        {
            *unreported = before.saturating_add(1);
            *unreported_opened = opened_before.saturating_add(u32::from(opened));
        }
        self.events.clear();
    }

    /// What is held, in order, to be queued.
    pub(super) fn into_events(self) -> Vec<Event> {
        self.events
    }
}
