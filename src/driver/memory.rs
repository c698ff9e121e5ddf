//! A scripted in-memory driver, only for unit tests of the runner's loops and the outbox
//! benchmark. It stands for "WhatsApp's servers" as seen by several runners at once: a
//! [`MemoryWorld`] shared by every [`MemoryDriver`] counts what was sent, so tests can assert
//! "exactly once" across runners, crashes and takeovers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, Notify};

use super::{
    ChatState, Driver, DriverError, DriverEvent, IncomingMessage, MarkedRead, OutgoingMessage,
    RejectOutcome, Sent, Session, SessionSpec, StartedSession,
};
use crate::error_code::ErrorCode;

/// What the next send of a session does instead of succeeding.
#[derive(Debug, Clone, PartialEq)]
pub enum SendFault {
    Transient(ErrorCode),
    Permanent(ErrorCode),
    /// WhatsApp refuses the send (ack -1) and the id stays spent, as on the page: a later send
    /// under it is refused again and a lookup finds it with ack -1.
    Refused,
    /// The message reaches the server, then the call never returns (a runner dying mid-send).
    HangAfterRecord,
    /// The call never returns and nothing reaches the server.
    HangBeforeRecord,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SentRecord {
    pub session_id: String,
    pub chat_id: String,
    pub wa_message_id: String,
    pub body: Option<String>,
    pub kind: &'static str,
    pub media_len: Option<usize>,
    /// The pin of a `location` message.
    pub location: Option<crate::driver::Location>,
    /// The cards of a `contact` message or a `poll`.
    pub data: Option<crate::kinds::KindData>,
    pub driver_id: u64,
}

#[derive(Default)]
struct WorldState {
    sent: Vec<SentRecord>,
    unregistered: HashSet<String>,
    faults: HashMap<String, VecDeque<SendFault>>,
    /// session id → driver id currently running it.
    active: HashMap<String, u64>,
    /// Times a session was started while another driver was still running it.
    double_ownership: u64,
    dead_drivers: HashSet<u64>,
    senders: HashMap<String, mpsc::Sender<DriverEvent>>,
    starts: HashMap<String, u32>,
    /// Every send call (wa_message_id, when), including failed ones.
    calls: Vec<(String, std::time::Instant)>,
    /// Ids WhatsApp refused (ack -1).
    refused: HashSet<String>,
    /// Incoming messages each session's account holds (what its page would show on connect).
    inbox: HashMap<String, Vec<IncomingMessage>>,
    /// Chats each session marked read, in order.
    read_marks: Vec<(String, String)>,
    /// Chat states each session sent: (session, chat, state).
    chat_states: Vec<(String, String, ChatState)>,
    /// Calls each session declined, as the server hears it: (session, call id), every time.
    rejects: Vec<(String, String)>,
    /// Per session: how many of the next declines fail as a page whose socket is down.
    reject_failures: HashMap<String, u32>,
}

#[derive(Default)]
pub struct MemoryWorld {
    state: Mutex<WorldState>,
    next_driver: AtomicU64,
    /// Signalled on every recorded send, so tests wait on it rather than sleep.
    pub changed: Notify,
}

impl MemoryWorld {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WorldState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn sent(&self) -> Vec<SentRecord> {
        self.lock().sent.clone()
    }
    pub fn sent_count(&self) -> usize {
        self.lock().sent.len()
    }
    pub fn set_unregistered(&self, chat_id: &str) {
        self.lock().unregistered.insert(chat_id.to_string());
    }
    pub fn push_fault(&self, session_id: &str, fault: SendFault) {
        self.lock()
            .faults
            .entry(session_id.to_string())
            .or_default()
            .push_back(fault);
    }
    /// When each send of this message id was attempted.
    pub fn send_calls(&self, wa_message_id: &str) -> Vec<std::time::Instant> {
        self.lock()
            .calls
            .iter()
            .filter(|(id, _)| id == wa_message_id)
            .map(|(_, t)| *t)
            .collect()
    }
    /// The message id of every send call, in order, failed ones included.
    pub fn send_call_ids(&self) -> Vec<String> {
        self.lock().calls.iter().map(|(id, _)| id.clone()).collect()
    }
    /// (session, chat) of every chat marked read, in order.
    pub fn read_marks(&self) -> Vec<(String, String)> {
        self.lock().read_marks.clone()
    }
    /// (session, chat, state) of every chat state sent, in order.
    pub fn chat_states(&self) -> Vec<(String, String, ChatState)> {
        self.lock().chat_states.clone()
    }
    /// (session, call id) of every decline that reached the server, in order.
    pub fn rejects(&self) -> Vec<(String, String)> {
        self.lock().rejects.clone()
    }
    /// The next `n` declines of this session fail as on a page whose socket is down.
    pub fn fail_next_rejects(&self, session_id: &str, n: u32) {
        self.lock()
            .reject_failures
            .insert(session_id.to_string(), n);
    }
    pub fn double_ownership(&self) -> u64 {
        self.lock().double_ownership
    }
    pub fn starts(&self, session_id: &str) -> u32 {
        self.lock().starts.get(session_id).copied().unwrap_or(0)
    }
    pub fn is_active(&self, session_id: &str) -> bool {
        self.lock().active.contains_key(session_id)
    }
    /// A message reaches the account while no page may be watching: kept for `inbound_since`.
    /// (A running page is also told, as `emit` does, by the caller if it wants.)
    pub fn hold_incoming(&self, session_id: &str, msg: IncomingMessage) {
        self.lock()
            .inbox
            .entry(session_id.to_string())
            .or_default()
            .push(msg);
    }
    /// Pushes an event into a running session as if its page produced it.
    pub async fn emit(&self, session_id: &str, event: DriverEvent) -> bool {
        let tx = self.lock().senders.get(session_id).cloned();
        match tx {
            Some(tx) => tx.send(event).await.is_ok(),
            None => false,
        }
    }
    /// A driver's process died: its sessions stop counting as active, its pending calls hang.
    pub fn kill_driver(&self, driver_id: u64) {
        let mut st = self.lock();
        st.dead_drivers.insert(driver_id);
        st.active.retain(|_, d| *d != driver_id);
    }
}

pub struct MemoryDriver {
    world: Arc<MemoryWorld>,
    pub id: u64,
    send_delay: Duration,
    /// Whether sends produce a server ack event (benchmarks turn this off).
    acks: bool,
}

impl MemoryDriver {
    pub fn new(world: Arc<MemoryWorld>) -> Self {
        let id = world.next_driver.fetch_add(1, Ordering::Relaxed) + 1;
        Self {
            world,
            id,
            send_delay: Duration::ZERO,
            acks: true,
        }
    }
    pub fn with_send_delay(mut self, d: Duration) -> Self {
        self.send_delay = d;
        self
    }
    pub fn without_acks(mut self) -> Self {
        self.acks = false;
        self
    }
}

/// The phone number a memory session links to: stable per session id.
pub fn phone_for(session_id: &str) -> String {
    let h = session_id
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    format!("1555{:07}", h % 10_000_000)
}

#[async_trait]
impl Driver for MemoryDriver {
    async fn start(&self, spec: SessionSpec) -> Result<StartedSession, DriverError> {
        let (tx, rx) = mpsc::channel(1024);
        {
            let mut st = self.world.lock();
            if st.dead_drivers.contains(&self.id) {
                return Err(DriverError::transient(
                    ErrorCode::BrowserCrashed,
                    "driver is dead",
                ));
            }
            if let Some(other) = st.active.get(&spec.session_id) {
                if *other != self.id {
                    st.double_ownership += 1;
                }
            }
            st.active.insert(spec.session_id.clone(), self.id);
            st.senders.insert(spec.session_id.clone(), tx.clone());
            *st.starts.entry(spec.session_id.clone()).or_default() += 1;
        }
        tx.send(DriverEvent::Connected {
            phone: phone_for(&spec.session_id),
            push_name: Some("Memory".into()),
        })
        .await
        .ok();
        let session = MemorySession {
            world: self.world.clone(),
            driver_id: self.id,
            session_id: spec.session_id,
            tx,
            delay: self.send_delay,
            acks: self.acks,
        };
        Ok(StartedSession {
            session: Arc::new(session),
            events: rx,
        })
    }
}

struct MemorySession {
    world: Arc<MemoryWorld>,
    driver_id: u64,
    session_id: String,
    tx: mpsc::Sender<DriverEvent>,
    delay: Duration,
    acks: bool,
}

impl MemorySession {
    fn dead(&self) -> bool {
        self.world.lock().dead_drivers.contains(&self.driver_id)
    }
    fn record(&self, msg: &OutgoingMessage) {
        let mut st = self.world.lock();
        st.sent.push(SentRecord {
            session_id: self.session_id.clone(),
            chat_id: msg.chat_id.clone(),
            wa_message_id: msg.wa_message_id.clone(),
            body: msg.body.clone(),
            kind: msg.kind.as_str(),
            media_len: msg.media.as_ref().map(|m| m.data.len()),
            location: msg.location.clone(),
            data: msg.data.clone(),
            driver_id: self.driver_id,
        });
        drop(st);
        self.world.changed.notify_waiters();
    }
}

#[async_trait]
impl Session for MemorySession {
    async fn resolve_chat(&self, chat_id: &str) -> Result<Option<String>, DriverError> {
        if self.dead() {
            return std::future::pending().await;
        }
        Ok((!self.world.lock().unregistered.contains(chat_id)).then(|| chat_id.to_string()))
    }

    async fn send(&self, msg: &OutgoingMessage) -> Result<Sent, DriverError> {
        if self.dead() {
            return std::future::pending().await;
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let fault = {
            let mut st = self.world.lock();
            st.calls
                .push((msg.wa_message_id.clone(), std::time::Instant::now()));
            if st.refused.contains(&msg.wa_message_id) {
                Some(SendFault::Refused)
            } else {
                st.faults
                    .get_mut(&self.session_id)
                    .and_then(VecDeque::pop_front)
            }
        };
        match fault {
            Some(SendFault::Refused) => {
                self.world.lock().refused.insert(msg.wa_message_id.clone());
                return Err(DriverError::refused(
                    ErrorCode::SendFailed,
                    "scripted refusal (ack -1)",
                ));
            }
            Some(SendFault::Transient(code)) => {
                return Err(DriverError::transient(code, "scripted transient failure"))
            }
            Some(SendFault::Permanent(code)) => {
                return Err(DriverError::permanent(code, "scripted permanent failure"))
            }
            Some(SendFault::HangBeforeRecord) => return std::future::pending().await,
            Some(SendFault::HangAfterRecord) => {
                self.record(msg);
                return std::future::pending().await;
            }
            None => {}
        }
        self.record(msg);
        if self.acks {
            let _ = self.tx.try_send(DriverEvent::Ack {
                wa_message_id: msg.wa_message_id.clone(),
                ack: 1,
            });
        }
        Ok(Sent {
            wa_message_id: msg.wa_message_id.clone(),
            chat_id: msg.chat_id.clone(),
        })
    }

    async fn find_message(
        &self,
        _chat_id: &str,
        wa_message_id: &str,
    ) -> Result<Option<i32>, DriverError> {
        if self.dead() {
            return std::future::pending().await;
        }
        let st = self.world.lock();
        if st.refused.contains(wa_message_id) {
            return Ok(Some(-1));
        }
        Ok(st
            .sent
            .iter()
            .any(|r| r.wa_message_id == wa_message_id)
            .then_some(1))
    }

    async fn inbound_since(
        &self,
        since: i64,
        limit: usize,
    ) -> Result<Vec<IncomingMessage>, DriverError> {
        if self.dead() {
            return std::future::pending().await;
        }
        let st = self.world.lock();
        let mut held: Vec<IncomingMessage> = st
            .inbox
            .get(&self.session_id)
            .map(|v| v.iter().filter(|m| m.timestamp >= since).cloned().collect())
            .unwrap_or_default();
        held.sort_by_key(|m| m.timestamp);
        held.truncate(limit);
        Ok(held)
    }

    async fn mark_read(&self, chat_id: &str) -> Result<MarkedRead, DriverError> {
        if self.dead() {
            return std::future::pending().await;
        }
        self.world
            .lock()
            .read_marks
            .push((self.session_id.clone(), chat_id.to_string()));
        self.world.changed.notify_waiters();
        Ok(MarkedRead {
            chat: Some(chat_id.to_string()),
            unread: 0,
        })
    }

    async fn set_presence(&self, chat_id: &str, state: ChatState) -> Result<(), DriverError> {
        if self.dead() {
            return std::future::pending().await;
        }
        self.world
            .lock()
            .chat_states
            .push((self.session_id.clone(), chat_id.to_string(), state));
        self.world.changed.notify_waiters();
        Ok(())
    }

    /// Declines once per call id, as the page's reject function does; a scripted failure first.
    async fn reject_call(&self, call_id: &str) -> Result<RejectOutcome, DriverError> {
        if self.dead() {
            return std::future::pending().await;
        }
        let mut st = self.world.lock();
        if let Some(n) = st.reject_failures.get_mut(&self.session_id) {
            if *n > 0 {
                *n -= 1;
                return Err(DriverError::transient(
                    ErrorCode::CommandFailed,
                    "rejecting the call: offline",
                ));
            }
        }
        let key = (self.session_id.clone(), call_id.to_string());
        if !st.rejects.contains(&key) {
            st.rejects.push(key);
        }
        drop(st);
        self.world.changed.notify_waiters();
        Ok(RejectOutcome::Rejected)
    }

    async fn logout(&self) -> Result<(), DriverError> {
        let _ = self
            .tx
            .send(DriverEvent::LoggedOut {
                reason: "logout requested".into(),
            })
            .await;
        Ok(())
    }

    async fn close(&self) -> Result<(), DriverError> {
        let mut st = self.world.lock();
        if st.active.get(&self.session_id) == Some(&self.driver_id) {
            st.active.remove(&self.session_id);
            st.senders.remove(&self.session_id);
        }
        Ok(())
    }
}
