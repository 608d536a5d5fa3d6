//! The release listener: the pub/sub connection, the per-lock release
//! channels waiters subscribe to, and the messages it hears.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use manna_lock::{FencingToken, Lease, ReleaseNotifier};
use redis::aio::PubSubSink;
use redis::{Client, RedisError};
use tokio::sync::watch;

/// How long a release channel stays subscribed after its last waiter left:
/// a lock contended again soon finds its channel already subscribed, so a
/// new waiter needs no `SUBSCRIBE`, no second attempt and no `UNSUBSCRIBE`.
const CHANNEL_LINGER: Duration = Duration::from_secs(5);

/// The per-lock release channels this backend's waiters use, and the sink
/// of the pub/sub connection (`None` while disconnected).
pub(super) struct Subscriptions {
    pub(super) channels: std::sync::Mutex<HashMap<String, Channel>>,
    pub(super) sink: tokio::sync::Mutex<Option<PubSubSink>>,
    pub(super) listening: watch::Sender<bool>,
}

/// One release channel's state.
#[derive(Debug)]
pub(super) struct Channel {
    /// Watches on it.
    pub(super) watches: usize,
    /// A `SUBSCRIBE` was sent (it may not have been confirmed).
    pub(super) requested: bool,
    /// Subscribed on the current pub/sub connection: every message from now
    /// on reaches the notifier.
    pub(super) confirmed: bool,
    /// When the last watch left (meaningful while `watches` is 0).
    pub(super) idle_since: tokio::time::Instant,
    /// A task will unsubscribe it once it has been idle for
    /// [`CHANNEL_LINGER`].
    pub(super) sweeping: bool,
}

impl Default for Channel {
    fn default() -> Self {
        Self {
            watches: 0,
            requested: false,
            confirmed: false,
            idle_since: tokio::time::Instant::now(),
            sweeping: false,
        }
    }
}

impl Subscriptions {
    pub(super) fn new() -> Self {
        Self {
            channels: std::sync::Mutex::default(),
            sink: tokio::sync::Mutex::default(),
            listening: watch::Sender::new(false),
        }
    }

    pub(super) fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        // Updates are single field writes: a poisoned map is still sound.
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks every channel subscribed (`true`, after a resubscription) or
    /// not (`false`, the connection is gone).
    fn confirm_all(&self, confirmed: bool) {
        for channel in self.channels().values_mut() {
            channel.confirmed = confirmed;
            channel.requested = confirmed;
        }
    }

    /// Unsubscribes `channel` unless a watch came back meanwhile; after
    /// `linger` of idleness first when given.
    async fn sweep(self: Arc<Self>, channel: String, linger: Option<Duration>, timeout: Duration) {
        if let Some(linger) = linger {
            loop {
                let idle_until = {
                    let mut channels = self.channels();
                    let Some(c) = channels.get_mut(&channel) else {
                        return;
                    };
                    if c.watches > 0 {
                        c.sweeping = false;
                        return;
                    }
                    c.idle_since + linger
                };
                if tokio::time::Instant::now() >= idle_until {
                    break;
                }
                tokio::time::sleep_until(idle_until).await;
            }
        }
        let mut sink = self.sink.lock().await;
        // Re-check under the sink lock: a new watch may have subscribed.
        {
            let mut channels = self.channels();
            if let Some(c) = channels.get_mut(&channel) {
                if c.watches > 0 {
                    c.sweeping = false;
                    return;
                }
            }
            channels.remove(&channel);
        }
        if let Some(sink) = sink.as_mut() {
            let _ = tokio::time::timeout(timeout, sink.unsubscribe(&channel)).await;
        }
    }
}

/// Ends a watch's share of a channel subscription. When the last one leaves,
/// a confirmed subscription lingers for [`CHANNEL_LINGER`] before it is
/// dropped; one never sent is simply forgotten.
pub(super) struct SubscriptionShare {
    pub(super) subs: Arc<Subscriptions>,
    pub(super) channel: String,
    pub(super) timeout: Duration,
}

impl Drop for SubscriptionShare {
    fn drop(&mut self) {
        // Without a runtime (shutting down) the subscription ends with the
        // connection.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let linger = {
            let mut channels = self.subs.channels();
            let Some(c) = channels.get_mut(&self.channel) else {
                return;
            };
            c.watches = c.watches.saturating_sub(1);
            if c.watches > 0 {
                return;
            }
            c.idle_since = tokio::time::Instant::now();
            if c.confirmed {
                if c.sweeping {
                    return;
                }
                c.sweeping = true;
                Some(CHANNEL_LINGER)
            } else if c.requested {
                None
            } else {
                channels.remove(&self.channel);
                return;
            }
        };
        let subs = Arc::clone(&self.subs);
        drop(handle.spawn(subs.sweep(std::mem::take(&mut self.channel), linger, self.timeout)));
    }
}

/// Keeps a pub/sub connection open, subscribed to this backend's waiter
/// channel (always) and to the release channels that waiters need,
/// forwarding each message to the notifier (see [`Message`]); reconnects
/// with backoff and resubscribes. It reports listening only once every
/// channel is subscribed, and then wakes every watch: messages may have
/// been missed while it was away, so every waiter tries again once.
pub(super) async fn listen(
    client: Client,
    waiter_channel: String,
    notifier: ReleaseNotifier,
    subs: Arc<Subscriptions>,
    connect_timeout: Duration,
) {
    let mut delay = Duration::from_millis(20);
    loop {
        let connected = tokio::time::timeout(connect_timeout, async {
            let (mut sink, stream) = client.get_async_pubsub().await?.split();
            let mut channels: Vec<String> = subs.channels().keys().cloned().collect();
            channels.push(waiter_channel.clone());
            sink.subscribe(channels).await?;
            Ok::<_, RedisError>((sink, stream))
        })
        .await;
        match connected {
            Ok(Ok((sink, mut messages))) => {
                delay = Duration::from_millis(20);
                *subs.sink.lock().await = Some(sink);
                subs.confirm_all(true);
                subs.listening.send_replace(true);
                // Releases may have been missed while we were away.
                notifier.wake_all();
                while let Some(msg) = messages.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    let channel = msg.get_channel_name();
                    let message = if channel == waiter_channel {
                        Message::parse_handoff(&payload)
                    } else {
                        Message::Released(&payload)
                    };
                    match message {
                        Message::Released(name) => notifier.notify(name),
                        Message::Unknown => notifier.wake_all(),
                        Message::Granted {
                            name,
                            ticket,
                            expires_in,
                            lease,
                        } => notifier.notify_granted(name, ticket, expires_in, Some(lease)),
                    }
                }
                subs.listening.send_replace(false);
                *subs.sink.lock().await = None;
                subs.confirm_all(false);
                notifier.wake_all();
                tracing::warn!("lock release listener disconnected; reconnecting");
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "lock release listener cannot connect"),
            Err(_) => tracing::debug!("lock release listener connect timed out"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

/// A message on a lock's release channel `NAMESPACE{NAME}:released`, or on
/// this backend's waiter channel.
#[derive(Debug, PartialEq, Eq)]
enum Message<'a> {
    /// Not understood on the waiter channel (the lock is unknown): wakes
    /// every watch, which is always safe.
    Unknown,
    /// On a release channel, the payload: the lock name, released with
    /// nobody queued (or anything else: waking waiters is always safe).
    Released(&'a str),
    /// On this backend's waiter channel, `granted TICKET PX TOKEN NAME_BYTES
    /// NAME OWNER`: the release handed the lock to a queued waiter of this
    /// process for PX ms (unless it confirms), with that fencing token and
    /// owner value: its lease.
    Granted {
        name: &'a str,
        ticket: &'a str,
        expires_in: Duration,
        lease: Lease,
    },
}

impl<'a> Message<'a> {
    /// A message on this backend's waiter channel:
    /// `granted TICKET PX TOKEN NAME_BYTES NAME OWNER` (the lock name is
    /// length-prefixed, as names and owner values may contain spaces).
    fn parse_handoff(payload: &'a str) -> Self {
        let parsed = (|| {
            let rest = payload.strip_prefix("granted ")?;
            let (ticket, rest) = rest.split_once(' ')?;
            let (px, rest) = rest.split_once(' ')?;
            let (token, rest) = rest.split_once(' ')?;
            let (len, rest) = rest.split_once(' ')?;
            let len: usize = len.parse().ok()?;
            let name = rest.get(..len)?;
            let owner = rest.get(len..)?.strip_prefix(' ')?;
            let expires_in = Duration::from_millis(px.parse().ok()?);
            let token = FencingToken::new(token.parse().ok()?);
            Some(Self::Granted {
                name,
                ticket,
                expires_in,
                lease: Lease::new(name, owner, token, expires_in),
            })
        })();
        parsed.unwrap_or(Self::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiter_channel_messages() {
        assert_eq!(
            Message::parse_handoff("granted 0f 250 17 3 a b 0f;host h pid 1 since x"),
            Message::Granted {
                name: "a b",
                ticket: "0f",
                expires_in: Duration::from_millis(250),
                lease: Lease::new(
                    "a b",
                    "0f;host h pid 1 since x",
                    FencingToken::new(17),
                    Duration::from_millis(250)
                ),
            }
        );
        // A multi-byte name: the length is in bytes.
        assert!(matches!(
            Message::parse_handoff("granted 0f 250 17 2 é 0f;h"),
            Message::Granted { name: "é", .. }
        ));
        for odd in [
            "granted 0f 250 17",
            "granted 0f 250 17 9 a 0f;h",
            "granted 0f 250 17 1 é 0f;h",
            "granted 0f x 17 1 a 0f;h",
            "a",
        ] {
            assert_eq!(Message::parse_handoff(odd), Message::Unknown, "{odd}");
        }
    }
}
