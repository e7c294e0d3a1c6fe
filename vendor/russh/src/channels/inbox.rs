//! A channel's incoming queue: the session puts in what the peer sent on the
//! channel, the channel's reader ([`super::ChannelReadHalf`]) takes it out.
//! (gatehouse patch 0001, see PATCHES.md.)
//!
//! Server side, putting in ([`InboxSender::push`]) never waits: the session's
//! read loop serves every channel of the connection, so one reader that does
//! not read must not stall the others. What bounds the queue instead:
//!
//! - data: the server re-opens a channel's window only for data its reader
//!   took out ([`InboxSender::unread_and_watch`]), and data beyond the window
//!   ends the session, so unread data never exceeds the window. Small packets
//!   are merged into one buffer (up to [`MERGED_MAX`] bytes), so a peer
//!   sending one-byte packets cannot make per-message overhead dominate: a
//!   queue holds at most ~2 items per [`MERGE_BELOW`] bytes of data, plus
//!   what the other messages split;
//! - other messages (requests; extended data is counted here too, besides
//!   its bytes): at most `limit` (`channel_buffer_size`) unread, holding at
//!   most [`OTHER_BYTES_MAX`] bytes of strings. One beyond that is dropped,
//!   never queued, and the session goes on (patch 0006: the server refuses
//!   such a request on its channel, see [`InboxSender::has_room`]);
//! - EOF and close: always queued, the first of each (one each per channel
//!   by construction); a repeated one is dropped (patch 0006).
//!
//! The client still re-opens windows on receipt, as russh 0.65.1 does, and
//! so keeps its old bound: [`InboxSender::send`] waits while `limit`
//! messages are unread.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use tokio::sync::Notify;

use super::ChannelMsg;

/// Data packets shorter than this are copied into a merge buffer.
pub(crate) const MERGE_BELOW: usize = 2048;
/// A merge buffer takes small packets up to this many bytes.
pub(crate) const MERGED_MAX: usize = 4096;
/// The strings (command, environment, terminal, ...) that unread non-data
/// messages of one channel may hold; one message is always admitted.
pub(crate) const OTHER_BYTES_MAX: usize = 64 * 1024;

enum Item {
    Msg(ChannelMsg),
    /// Small `Data` packets, merged.
    Merged(Vec<u8>),
}

/// What an item counts for.
#[derive(Default)]
struct Cost {
    /// Bytes of data (window accounting).
    data: usize,
    /// Non-data messages (extended data included), and their strings' bytes.
    others: usize,
    other_bytes: usize,
}

impl Cost {
    fn of(item: &Item) -> Cost {
        match item {
            Item::Merged(data) => Cost {
                data: data.len(),
                ..Cost::default()
            },
            Item::Msg(msg) => Cost::of_msg(msg),
        }
    }

    fn of_msg(msg: &ChannelMsg) -> Cost {
        let other_bytes = match msg {
            ChannelMsg::Data { data } => {
                return Cost {
                    data: data.len(),
                    ..Cost::default()
                };
            }
            ChannelMsg::ExtendedData { data, .. } => {
                return Cost {
                    data: data.len(),
                    others: 1,
                    other_bytes: 0,
                };
            }
            ChannelMsg::RequestPty {
                term,
                terminal_modes,
                ..
            } => term.len() + std::mem::size_of_val(terminal_modes.as_slice()),
            ChannelMsg::Exec { command, .. } => command.len(),
            ChannelMsg::RequestSubsystem { name, .. } => name.len(),
            ChannelMsg::RequestX11 {
                x11_authentication_protocol,
                x11_authentication_cookie,
                ..
            } => x11_authentication_protocol.len() + x11_authentication_cookie.len(),
            ChannelMsg::SetEnv {
                variable_name,
                variable_value,
                ..
            } => variable_name.len() + variable_value.len(),
            ChannelMsg::Signal {
                signal: crate::Sig::Custom(name),
            } => name.len(),
            ChannelMsg::ExitSignal {
                error_message,
                lang_tag,
                ..
            } => error_message.len() + lang_tag.len(),
            _ => 0,
        };
        Cost {
            data: 0,
            others: 1,
            other_bytes,
        }
    }
}

struct State {
    items: VecDeque<Item>,
    /// The sum of the items' costs.
    data: usize,
    others: usize,
    other_bytes: usize,
    /// The session wants to know when the reader takes data out.
    watched: bool,
    /// (patch 0007) The reader has asked for a message (it reads).
    asked: bool,
    reader: Option<Waker>,
    /// The reader closed the queue or is gone: nothing more goes in.
    closed: bool,
    /// (patch 0006) An EOF, a close was queued: a repeat is dropped.
    eof: bool,
    close: bool,
    /// The sender is gone: after the items, the end.
    ended: bool,
}

impl State {
    fn add(&mut self, item: Item) {
        let cost = Cost::of(&item);
        self.data += cost.data;
        self.others += cost.others;
        self.other_bytes += cost.other_bytes;
        // A merge buffer grows no more once an item follows it: drop its
        // spare capacity, so only the last one has any.
        if let Some(Item::Merged(last)) = self.items.back_mut() {
            last.shrink_to_fit();
        }
        self.items.push_back(item);
    }

    fn add_data(&mut self, data: Bytes) {
        if data.len() < MERGE_BELOW {
            if let Some(Item::Merged(last)) = self.items.back_mut()
                && last.len() + data.len() <= MERGED_MAX
            {
                last.extend_from_slice(&data);
                self.data += data.len();
                return;
            }
            self.add(Item::Merged(data.to_vec()));
        } else {
            self.add(Item::Msg(ChannelMsg::Data { data }));
        }
    }

    /// A message of this cost fits beside what is unread: data always (the
    /// window bounds it); others while fewer than `limit` are unread and
    /// their strings stay within [`OTHER_BYTES_MAX`] (one always fits).
    fn has_room(&self, cost: &Cost, limit: usize) -> bool {
        cost.others == 0
            || (self.others < limit
                && (self.others == 0 || self.other_bytes + cost.other_bytes <= OTHER_BYTES_MAX))
    }

    fn take(&mut self) -> Option<ChannelMsg> {
        let item = self.items.pop_front()?;
        let cost = Cost::of(&item);
        self.data -= cost.data;
        self.others -= cost.others;
        self.other_bytes -= cost.other_bytes;
        Some(match item {
            Item::Msg(msg) => msg,
            Item::Merged(data) => ChannelMsg::Data { data: data.into() },
        })
    }
}

struct Shared {
    state: Mutex<State>,
    /// How many messages [`InboxSender::send`] lets wait (and how many
    /// non-data messages a push may leave unread).
    limit: usize,
    /// A waiting [`InboxSender::send`]: there may be room now.
    room: Notify,
    /// The server session: the reader took data out while it watched.
    session: Option<Arc<Notify>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent when a holder panics (no await inside).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The session's end of a channel's queue.
pub struct InboxSender(Arc<Shared>);

/// The reader's end of a channel's queue.
pub struct InboxReceiver(Arc<Shared>);

impl std::fmt::Debug for InboxSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxSender").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for InboxReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxReceiver").finish_non_exhaustive()
    }
}

/// A new queue: see the module documentation for `limit`; `session` is the
/// server session's [`Notify`] for [`InboxSender::unread_and_watch`].
pub(crate) fn inbox(limit: usize, session: Option<Arc<Notify>>) -> (InboxSender, InboxReceiver) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            data: 0,
            others: 0,
            other_bytes: 0,
            // (patch 0007) A server channel's first wait asks for a window.
            watched: session.is_some(),
            asked: false,
            reader: None,
            closed: false,
            eof: false,
            close: false,
            ended: false,
        }),
        limit: limit.max(1),
        room: Notify::new(),
        session,
    });
    (InboxSender(Arc::clone(&shared)), InboxReceiver(shared))
}

impl InboxSender {
    fn put(&self, mut state: MutexGuard<'_, State>, msg: ChannelMsg) {
        match msg {
            // Nothing to deliver, and an empty read would look like EOF.
            ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. }
                if data.is_empty() =>
            {
                return;
            }
            ChannelMsg::Data { data } => state.add_data(data),
            msg => state.add(Item::Msg(msg)),
        }
        let reader = state.reader.take();
        drop(state);
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Server side: queue `msg` without waiting. Data is bounded by the
    /// window (the caller checks the peer kept to it); the first EOF and
    /// the first close always go in; another message beyond the limits is
    /// dropped (patch 0006: it used to end the session), and so is a
    /// repeated EOF or close. When the reader is gone, `msg` is dropped.
    /// False when `msg` was dropped while the reader is still there.
    pub(crate) fn push(&self, msg: ChannelMsg) -> bool {
        let mut state = self.0.lock();
        if state.closed {
            return true;
        }
        let admitted = match msg {
            ChannelMsg::Eof => !std::mem::replace(&mut state.eof, true),
            ChannelMsg::Close => !std::mem::replace(&mut state.close, true),
            ref msg => state.has_room(&Cost::of_msg(msg), self.0.limit),
        };
        if admitted {
            self.put(state, msg);
        }
        admitted
    }

    /// (patch 0006) Would [`Self::push`] queue `msg` now? The server asks
    /// before a request goes to its handler, and refuses one that would
    /// not fit: a peer that keeps sending requests on a channel nobody
    /// reads meets a refusal on that channel, not the end of its session.
    pub(crate) fn has_room(&self, msg: &ChannelMsg) -> bool {
        let state = self.0.lock();
        state.closed || state.has_room(&Cost::of_msg(msg), self.0.limit)
    }

    /// Client side: queue `msg` once fewer than `limit` messages are unread.
    /// `Err(msg)` when the reader is gone.
    pub async fn send(&self, msg: ChannelMsg) -> Result<(), ChannelMsg> {
        loop {
            // Made before looking, so a wake-up in between is not lost.
            let room = self.0.room.notified();
            {
                let state = self.0.lock();
                if state.closed {
                    return Err(msg);
                }
                if state.items.len() < self.0.limit {
                    self.put(state, msg);
                    return Ok(());
                }
            }
            room.await;
        }
    }

    /// Queue `msg` if there is room now. A `WindowAdjusted` only goes into
    /// an empty queue: it is informational, and a reader that is behind
    /// would only learn an old size from it.
    pub fn try_send(&self, msg: ChannelMsg) -> Result<(), ChannelMsg> {
        let state = self.0.lock();
        let behind = matches!(msg, ChannelMsg::WindowAdjusted { .. }) && !state.items.is_empty();
        if state.closed || behind || state.items.len() >= self.0.limit {
            return Err(msg);
        }
        self.put(state, msg);
        Ok(())
    }

    /// The data still unread (0 once the reader is gone), and from now on
    /// wake the session when the reader takes some out.
    pub(crate) fn unread_and_watch(&self) -> usize {
        let mut state = self.0.lock();
        state.watched = true;
        state.data
    }

    /// (patch 0007) The data still unread, and from now on wake the session
    /// when the reader takes some out or waits for more; `None` while the
    /// reader has never asked for a message, and once it is gone (or closed
    /// the queue): nobody reads what a window would let in.
    pub(crate) fn reading_and_watch(&self) -> Option<usize> {
        let mut state = self.0.lock();
        state.watched = true;
        if state.closed || !state.asked {
            return None;
        }
        Some(state.data)
    }
}

impl Drop for InboxSender {
    fn drop(&mut self) {
        let reader = {
            let mut state = self.0.lock();
            state.ended = true;
            state.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

impl InboxReceiver {
    fn took(&self, state: MutexGuard<'_, State>, took_data: bool) {
        let mut state = state;
        let wake_session = took_data && std::mem::take(&mut state.watched);
        drop(state);
        self.0.room.notify_one();
        if let (true, Some(session)) = (wake_session, &self.0.session) {
            session.notify_one();
        }
    }

    /// The next message; `None` once the sender is gone (or the queue was
    /// closed) and everything before was taken.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ChannelMsg>> {
        let mut state = self.0.lock();
        state.asked = true;
        if let Some(msg) = state.take() {
            let took_data = matches!(
                msg,
                ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. }
            );
            self.took(state, took_data);
            return Poll::Ready(Some(msg));
        }
        if state.ended || state.closed {
            return Poll::Ready(None);
        }
        state.reader = Some(cx.waker().clone());
        // (patch 0007) The reader waits on an empty queue: a channel that
        // opened with no window (a window budget) gets one now.
        let wake_session = std::mem::take(&mut state.watched);
        drop(state);
        if let (true, Some(session)) = (wake_session, &self.0.session) {
            session.notify_one();
        }
        Poll::Pending
    }

    /// See [`Self::poll_recv`].
    pub async fn recv(&mut self) -> Option<ChannelMsg> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Take nothing more in; what is queued can still be received.
    pub fn close(&mut self) {
        self.0.lock().closed = true;
        self.0.room.notify_one();
    }
}

impl Drop for InboxReceiver {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.closed = true;
        let had_data = state.data > 0;
        let items = std::mem::take(&mut state.items);
        (state.data, state.others, state.other_bytes) = (0, 0, 0);
        // What nobody will read any more is as good as read: re-open.
        self.took(state, had_data);
        drop(items);
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::task::Waker;

    use super::*;

    fn data(len: usize) -> ChannelMsg {
        ChannelMsg::Data {
            data: Bytes::from(vec![7; len]),
        }
    }

    fn next(rx: &mut InboxReceiver) -> Option<ChannelMsg> {
        match rx.poll_recv(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(msg) => msg,
            Poll::Pending => panic!("nothing queued"),
        }
    }

    fn len(msg: Option<ChannelMsg>) -> usize {
        match msg {
            Some(ChannelMsg::Data { data }) => data.len(),
            other => panic!("not data: {other:?}"),
        }
    }

    #[test]
    fn unread_data_counts_until_the_reader_takes_it() {
        let (tx, mut rx) = inbox(4, None);
        assert!(tx.push(data(10_000)));
        assert!(tx.push(data(5)));
        assert_eq!(tx.unread_and_watch(), 10_005);
        assert_eq!(len(next(&mut rx)), 10_000);
        assert_eq!(tx.unread_and_watch(), 5);
        assert_eq!(len(next(&mut rx)), 5);
        assert_eq!(tx.unread_and_watch(), 0);
    }

    #[test]
    fn empty_data_is_not_queued() {
        let (tx, _rx) = inbox(4, None);
        assert!(tx.push(data(0)));
        assert!(tx.push(ChannelMsg::ExtendedData {
            data: Bytes::new(),
            ext: 1,
        }));
        assert!(tx.0.lock().items.is_empty());
    }

    #[test]
    fn one_byte_packets_are_merged_so_items_stay_few() {
        let (tx, mut rx) = inbox(4, None);
        let mut pushed = 0;
        while pushed < 100 * MERGED_MAX {
            assert!(tx.push(data(1)));
            pushed += 1;
        }
        assert_eq!(tx.0.lock().items.len(), 100);
        assert_eq!(tx.unread_and_watch(), pushed);
        let mut read = 0;
        while read < pushed {
            let n = len(next(&mut rx));
            assert_eq!(n, MERGED_MAX);
            read += n;
        }
    }

    #[test]
    fn items_stay_few_whatever_the_mix_of_sizes() {
        let (tx, _rx) = inbox(4, None);
        let mut pushed = 0;
        for i in 0..20_000 {
            let n = [1, MERGE_BELOW - 1, MERGE_BELOW, 3, 1500][i % 5];
            assert!(tx.push(data(n)));
            pushed += n;
        }
        let items = tx.0.lock().items.len();
        assert!(
            items <= 2 * pushed / MERGE_BELOW + 1,
            "{items} items for {pushed} bytes"
        );
    }

    #[test]
    fn other_messages_are_capped_in_count_and_bytes() {
        let (tx, mut rx) = inbox(3, None);
        let env = |len: usize| ChannelMsg::SetEnv {
            want_reply: false,
            variable_name: "X".into(),
            variable_value: "v".repeat(len),
        };
        assert!(tx.push(ChannelMsg::Eof));
        assert!(tx.push(env(1)));
        assert!(tx.push(env(1)));
        assert!(!tx.has_room(&env(1)) && !tx.push(env(1)));
        // Data is the window's business, not this limit's.
        assert!(tx.push(data(1)));
        while let Poll::Ready(Some(_)) = rx.poll_recv(&mut Context::from_waker(Waker::noop())) {}
        // One message is always admitted, however large; then the byte cap.
        assert!(tx.push(env(OTHER_BYTES_MAX * 2)));
        assert!(!tx.has_room(&env(1)) && !tx.push(env(1)));
        let _ = next(&mut rx);
        assert!(tx.push(env(OTHER_BYTES_MAX - 2)));
        assert!(!tx.has_room(&env(1)) && !tx.push(env(1)));
    }

    /// (patch 0006)
    #[test]
    fn eof_and_close_always_go_in_once_and_the_excess_is_dropped() {
        let (tx, mut rx) = inbox(2, None);
        let env = || ChannelMsg::SetEnv {
            want_reply: false,
            variable_name: "LANG".into(),
            variable_value: "C".into(),
        };
        for _ in 0..10_000 {
            tx.push(env());
        }
        assert_eq!(tx.0.lock().items.len(), 2, "the excess was dropped");
        assert!(tx.push(ChannelMsg::Eof));
        assert!(!tx.push(ChannelMsg::Eof), "a repeat is dropped");
        assert!(tx.push(ChannelMsg::Close));
        assert!(!tx.push(ChannelMsg::Close));
        let mut got = Vec::new();
        while let Poll::Ready(Some(msg)) = rx.poll_recv(&mut Context::from_waker(Waker::noop())) {
            got.push(msg);
        }
        assert!(
            matches!(
                got.as_slice(),
                [
                    ChannelMsg::SetEnv { .. },
                    ChannelMsg::SetEnv { .. },
                    ChannelMsg::Eof,
                    ChannelMsg::Close
                ]
            ),
            "{got:?}"
        );
        // Read, the queue has room again; the EOF seen stays seen.
        assert!(tx.push(env()));
        assert!(!tx.push(ChannelMsg::Eof));
    }

    #[test]
    fn a_reader_gone_frees_the_queue_and_wakes_a_watching_session() {
        let session = Arc::new(Notify::new());
        let (tx, rx) = inbox(4, Some(Arc::clone(&session)));
        assert!(tx.push(data(100_000)));
        assert_eq!(tx.unread_and_watch(), 100_000);
        drop(rx);
        assert_eq!(tx.unread_and_watch(), 0);
        // Later data is dropped, not queued.
        assert!(tx.push(data(100_000)));
        assert_eq!(tx.unread_and_watch(), 0);
        let woken = pin!(session.notified());
        assert!(
            futures::FutureExt::now_or_never(woken).is_some(),
            "the session was told"
        );
    }

    #[test]
    fn the_session_hears_of_reads_only_while_it_watches() {
        let session = Arc::new(Notify::new());
        let (tx, mut rx) = inbox(4, Some(Arc::clone(&session)));
        assert!(tx.push(data(10)));
        assert!(tx.push(data(10_000)));
        assert!(tx.push(ChannelMsg::Eof));
        // (patch 0007) A server channel starts watched: its first read is heard.
        let _ = next(&mut rx);
        assert!(futures::FutureExt::now_or_never(pin!(session.notified())).is_some());
        let _ = next(&mut rx);
        assert!(futures::FutureExt::now_or_never(pin!(session.notified())).is_none());
        assert!(tx.push(data(10)));
        tx.unread_and_watch();
        let _ = next(&mut rx);
        let _ = next(&mut rx);
        assert!(futures::FutureExt::now_or_never(pin!(session.notified())).is_some());
    }

    #[test]
    fn a_reader_waiting_on_an_empty_queue_asks_for_a_window() {
        let session = Arc::new(Notify::new());
        let (tx, mut rx) = inbox(4, Some(Arc::clone(&session)));
        // Never asked: no window for it.
        assert_eq!(tx.reading_and_watch(), None);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(futures::FutureExt::now_or_never(pin!(session.notified())).is_some());
        assert_eq!(tx.reading_and_watch(), Some(0));
        // Waiting again, watched again: heard again; not watched: not.
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(futures::FutureExt::now_or_never(pin!(session.notified())).is_some());
        assert!(rx.poll_recv(&mut cx).is_pending());
        assert!(futures::FutureExt::now_or_never(pin!(session.notified())).is_none());
        drop(rx);
        assert_eq!(tx.reading_and_watch(), None);
    }

    #[test]
    fn a_window_adjusted_waits_only_in_an_empty_queue() {
        let (tx, mut rx) = inbox(4, None);
        tx.try_send(ChannelMsg::WindowAdjusted { new_size: 1 })
            .unwrap();
        assert!(
            tx.try_send(ChannelMsg::WindowAdjusted { new_size: 2 })
                .is_err()
        );
        assert!(matches!(
            next(&mut rx),
            Some(ChannelMsg::WindowAdjusted { new_size: 1 })
        ));
    }

    #[tokio::test]
    async fn send_waits_for_room_and_the_end_follows_the_items() {
        let (tx, mut rx) = inbox(2, None);
        tx.send(ChannelMsg::Eof).await.unwrap();
        tx.send(ChannelMsg::Close).await.unwrap();
        let third = tokio::spawn(async move {
            tx.send(data(3)).await.unwrap();
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished());
        assert!(matches!(rx.recv().await, Some(ChannelMsg::Eof)));
        third.await.unwrap();
        assert!(matches!(rx.recv().await, Some(ChannelMsg::Close)));
        assert_eq!(len(rx.recv().await), 3);
        assert!(rx.recv().await.is_none(), "the sender is gone");
    }
}
