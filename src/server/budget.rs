//! What one replica may spend on the reviews it is reading and deciding, bounded by construction
//! rather than by trusting clients: with `failurePolicy: Fail`, a replica killed for memory fails
//! every write of the kinds it guards, so no input may grow it without bound.
//!
//! Three bounds hold together:
//! - a **slot** per review ([`ReviewLimits::max_concurrent`]), taken when the request head arrives
//!   and kept until the answer is ready; a review that finds none is refused at once with 429 and
//!   `Retry-After`, as the API server's own max-in-flight filter does, never queued. A slot covers
//!   the first [`SLOT_BYTES`] of its body, which is all a review of these kinds usually has. A
//!   quarter of the slots is for bodies declared larger than that (or of unknown length), the
//!   rest for the others, so a flood of large bodies cannot take the slots of the API server's
//!   everyday reviews (it sends their length);
//! - the **in-flight bytes** of bodies beyond their slot's share
//!   ([`ReviewLimits::max_in_flight_bytes`]), charged as buffers grow (so a client must send the
//!   bytes it holds, not merely announce them); a body that cannot be charged is refused with 429;
//! - the **body limit** ([`ReviewLimits::max_body`], 413), near the API server's own.
//!
//! Decoding a body costs a multiple of its size (a tree of `[0,0,…]` takes 16 bytes per input
//! byte), and decisions run without yielding, so at most one runs per runtime thread; bodies past
//! [`SLOT_BYTES`] are decided one at a time ([`ReviewBudget::heavy`]), so that multiple is paid
//! once, whatever the number of runtime threads.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Default of [`ReviewLimits::max_body`]: the API server's own request limit
/// (`--max-request-body-bytes`, 3 MiB). The objects these webhooks guard are a few KiB; etcd
/// refuses any object over 1.5 MiB, so an UPDATE's two copies of a storable object fit.
pub const DEFAULT_MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

/// Default of [`ReviewLimits::max_in_flight_bytes`]: ten bodies at the limit.
pub const DEFAULT_MAX_IN_FLIGHT_REVIEW_BYTES: usize = 32 * 1024 * 1024;

/// Default of [`ReviewLimits::max_concurrent`]. Reviews take tens of microseconds, so even a busy
/// API server keeps a handful in flight; the rest of the bound is for slow clients.
pub const DEFAULT_MAX_CONCURRENT_REVIEWS: usize = 256;

/// The body bytes a review's slot covers without charging the shared in-flight budget. Reviews of
/// the kinds served are 1-10 KiB, so the valid traffic of a busy API server never competes with
/// large bodies for the shared budget.
pub const SLOT_BYTES: usize = 64 * 1024;

/// Has buffers of 128 KiB and more (review bodies past their slot's share, their decoded trees)
/// mapped for themselves and given back to the system when freed. glibc otherwise raises its
/// mapping threshold to the size of the first large buffer it frees, so later bodies come from
/// the heap, whose freed pages stay resident and fragment: when this was added, the hostile-load
/// benchmark's peak went from 124 to 100 MiB and what stayed resident after the attack from 101
/// to 50 MiB. Called once at start by `serve`; a no-op off glibc.
pub fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it has no preconditions.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// What bounds the reviews of one replica (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReviewLimits {
    /// Largest body accepted; larger ones get 413.
    pub max_body: usize,
    /// Bytes that bodies may hold beyond their slots' share, all reviews together.
    pub max_in_flight_bytes: usize,
    /// Reviews read or decided at once; a quarter of them with bodies declared larger than
    /// [`SLOT_BYTES`] or of unknown length.
    pub max_concurrent: usize,
}

impl Default for ReviewLimits {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_REVIEW_BYTES,
            max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_REVIEW_BYTES,
            max_concurrent: DEFAULT_MAX_CONCURRENT_REVIEWS,
        }
    }
}

/// The shared budgets of one listener.
#[derive(Debug)]
pub struct ReviewBudget {
    limits: ReviewLimits,
    slots: Arc<Semaphore>,
    large_slots: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    heavy: Arc<Semaphore>,
}

/// A review's slot, and the in-flight bytes charged to it; both are returned when it drops.
#[derive(Debug)]
pub struct Slot {
    _slot: OwnedSemaphorePermit,
    bytes: Option<OwnedSemaphorePermit>,
    charged: usize,
}

/// Why a body was not read.
#[derive(Debug)]
pub enum ReadError {
    /// Over [`ReviewLimits::max_body`] (declared or sent).
    TooLarge,
    /// The in-flight bytes budget is spent.
    Busy,
    /// The connection failed mid-body.
    Failed(String),
}

impl ReviewBudget {
    /// Budgets for `limits`; zeros are raised to one (a budget of nothing would refuse all).
    pub fn new(limits: ReviewLimits) -> Self {
        // `Semaphore` holds at most `usize::MAX >> 3` permits and charges take `u32`s.
        let bytes = limits.max_in_flight_bytes.clamp(1, u32::MAX as usize);
        let all = limits.max_concurrent.max(2);
        let large = (all / 4).max(1);
        Self {
            limits,
            slots: Arc::new(Semaphore::new(all - large)),
            large_slots: Arc::new(Semaphore::new(large)),
            bytes: Arc::new(Semaphore::new(bytes)),
            heavy: Arc::new(Semaphore::new(1)),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> ReviewLimits {
        self.limits
    }

    /// A slot for a new review whose body declares `declared` bytes, from the large bodies'
    /// share when that is over [`SLOT_BYTES`] or unknown; `None` when all of its kind are taken
    /// (the caller answers 429 at once).
    pub fn admit(&self, declared: Option<u64>) -> Option<Slot> {
        let pool = match declared {
            Some(length) if length <= SLOT_BYTES as u64 => &self.slots,
            _ => &self.large_slots,
        };
        let slot = pool.clone().try_acquire_owned().ok()?;
        Some(Slot {
            _slot: slot,
            bytes: None,
            charged: 0,
        })
    }

    /// Reads `body` whole, charging `slot` for what it holds beyond [`SLOT_BYTES`]. A body that
    /// comes in one frame, as reviews usually do, is kept as read; otherwise the buffer grows by
    /// doubling (never past the declared length or the limit), so what is charged is at most
    /// twice what the client has sent, and one copy of the body is ever held.
    pub async fn read(
        &self,
        slot: &mut Slot,
        body: &mut Body,
        declared: Option<u64>,
    ) -> Result<Bytes, ReadError> {
        let max = self.limits.max_body;
        if declared.is_some_and(|length| length > max as u64) {
            return Err(ReadError::TooLarge);
        }
        // The declared length only caps growth: buffers follow the bytes that arrive.
        let ceiling = declared.map_or(max, |length| length as usize);
        let mut first: Option<Bytes> = None;
        let mut buffer = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ReadError::Failed(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let held = first.as_ref().map_or(buffer.len(), Bytes::len);
            let length = held + data.len();
            if length > max {
                return Err(ReadError::TooLarge);
            }
            if held == 0 {
                self.charge(slot, data.len())?;
                first = Some(data);
                continue;
            }
            if length > buffer.capacity() {
                // Doubling, but not past the slot's share while the body fits in it.
                let doubled = length.max(buffer.capacity() * 2);
                let doubled = if length <= SLOT_BYTES {
                    doubled.min(SLOT_BYTES)
                } else {
                    doubled
                };
                let target = doubled.min(ceiling.max(length));
                self.charge(slot, target)?;
                buffer.reserve_exact(target - buffer.len());
            }
            if let Some(first) = first.take() {
                buffer.extend_from_slice(&first);
            }
            buffer.extend_from_slice(&data);
        }
        Ok(first.unwrap_or_else(|| Bytes::from(buffer)))
    }

    /// Charges `slot` so that it covers a buffer of `capacity` bytes.
    fn charge(&self, slot: &mut Slot, capacity: usize) -> Result<(), ReadError> {
        let owed = capacity.saturating_sub(SLOT_BYTES);
        let Some(more) = owed.checked_sub(slot.charged).filter(|more| *more > 0) else {
            return Ok(());
        };
        let permits = u32::try_from(more).map_err(|_| ReadError::Busy)?;
        let permit = self
            .bytes
            .clone()
            .try_acquire_many_owned(permits)
            .map_err(|_| ReadError::Busy)?;
        match &mut slot.bytes {
            Some(held) => held.merge(permit),
            None => slot.bytes = Some(permit),
        }
        slot.charged = owed;
        Ok(())
    }

    /// For a body larger than [`SLOT_BYTES`]: waits for the one heavy decision allowed at a time
    /// (under the caller's deadline; the waiters are bounded by the in-flight bytes they hold).
    /// `None` for smaller bodies, whose decisions cost little.
    pub async fn heavy(&self, length: usize) -> Option<OwnedSemaphorePermit> {
        if length <= SLOT_BYTES {
            return None;
        }
        self.heavy.clone().acquire_owned().await.ok()
    }

    /// In-flight bytes not charged to any review now (for tests).
    pub fn available_bytes(&self) -> usize {
        self.bytes.available_permits()
    }

    /// Slots not taken now, for small and for large bodies (for tests).
    pub fn available_slots(&self) -> (usize, usize) {
        (
            self.slots.available_permits(),
            self.large_slots.available_permits(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(max_body: usize, bytes: usize, concurrent: usize) -> ReviewBudget {
        ReviewBudget::new(ReviewLimits {
            max_body,
            max_in_flight_bytes: bytes,
            max_concurrent: concurrent,
        })
    }

    fn chunked(chunks: Vec<Vec<u8>>) -> Body {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(bytes_of(c))),
        );
        Body::from_stream(stream)
    }

    fn bytes_of(chunk: Vec<u8>) -> axum::body::Bytes {
        axum::body::Bytes::from(chunk)
    }

    #[tokio::test]
    async fn slots_are_refused_once_taken_and_come_back_when_dropped() {
        let budget = budget(1024, 1024, 8);
        assert_eq!(
            budget.available_slots(),
            (6, 2),
            "a quarter for large bodies"
        );
        let small: Vec<_> = (0..6).map(|_| budget.admit(Some(100))).collect();
        assert!(small.iter().all(Option::is_some));
        assert!(budget.admit(Some(100)).is_none(), "refused, not queued");
        let large = [budget.admit(None), budget.admit(Some(1 << 20))];
        assert!(
            large.iter().all(Option::is_some),
            "large bodies have their own share"
        );
        assert!(budget.admit(Some(SLOT_BYTES as u64 + 1)).is_none());
        drop(small);
        assert!(budget.admit(Some(SLOT_BYTES as u64)).is_some());
        assert!(
            budget.admit(None).is_none(),
            "small slots are not lent to large bodies"
        );
    }

    #[tokio::test]
    async fn small_bodies_cost_only_their_slot() {
        let budget = budget(1 << 20, 1000, 4);
        let mut slot = budget.admit(None).unwrap();
        let mut body = chunked(vec![vec![b'x'; 10_000]; 6]);
        let read = budget.read(&mut slot, &mut body, None).await.unwrap();
        assert_eq!(read.len(), 60_000);
        assert_eq!(budget.available_bytes(), 1000, "nothing charged");
    }

    #[tokio::test]
    async fn large_bodies_are_charged_while_held_and_refused_when_the_budget_is_spent() {
        let budget = budget(1 << 20, 300 * 1024, 8);
        let mut first = budget.admit(None).unwrap();
        let mut body = chunked(vec![vec![b'x'; 64 * 1024]; 4]);
        let read = budget.read(&mut first, &mut body, Some(256 * 1024)).await;
        assert_eq!(read.unwrap().len(), 256 * 1024);
        assert_eq!(
            budget.available_bytes(),
            300 * 1024 - (256 - 64) * 1024,
            "charged the declared length exactly, past the slot's share"
        );
        let mut second = budget.admit(None).unwrap();
        let mut body = chunked(vec![vec![b'x'; 64 * 1024]; 4]);
        let refused = budget.read(&mut second, &mut body, None).await;
        assert!(matches!(refused, Err(ReadError::Busy)), "{refused:?}");
        drop((first, second));
        assert_eq!(budget.available_bytes(), 300 * 1024, "all returned");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_declared_or_sent() {
        let budget = budget(100_000, 1 << 20, 4);
        let mut slot = budget.admit(None).unwrap();
        let mut body = chunked(vec![vec![b'x'; 10]]);
        let declared = budget.read(&mut slot, &mut body, Some(100_001)).await;
        assert!(matches!(declared, Err(ReadError::TooLarge)));
        let mut body = chunked(vec![vec![b'x'; 60_000]; 2]);
        let sent = budget.read(&mut slot, &mut body, None).await;
        assert!(matches!(sent, Err(ReadError::TooLarge)));
        let mut body = chunked(vec![vec![b'x'; 50_000]; 2]);
        assert_eq!(
            budget.read(&mut slot, &mut body, None).await.unwrap().len(),
            100_000,
            "exactly the limit is read"
        );
    }

    #[tokio::test]
    async fn one_heavy_decision_at_a_time() {
        let budget = budget(1 << 20, 1 << 20, 4);
        assert!(budget.heavy(SLOT_BYTES).await.is_none(), "small: no permit");
        let held = budget.heavy(SLOT_BYTES + 1).await.expect("a permit");
        let waiting = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            budget.heavy(SLOT_BYTES + 1),
        )
        .await;
        assert!(waiting.is_err(), "the second waits");
        drop(held);
        assert!(budget.heavy(SLOT_BYTES + 1).await.is_some());
    }
}
