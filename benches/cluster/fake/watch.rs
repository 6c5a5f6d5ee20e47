//! WATCH: a newline-delimited stream of `{"type":..., "object":...}` events for every change
//! after the requested resourceVersion (or, without one or with `0`, the current objects as
//! ADDED first), BOOKMARKs while idle when asked for, an ERROR 410 when the requested version
//! was compacted away, and the end of the stream after `timeoutSeconds`.
//!
//! A simplification: a change that moves an object out of a label selector is not sent as a
//! DELETED (nothing the benchmark relabels).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use serde_json::json;
use tokio::time::Instant;

use super::Shared;
use super::resources::RESOURCES;
use super::selector::Selector;
use super::store::{EventType, Filter, Stored};

/// Events sent in one chunk at most.
const BATCH: usize = 512;

/// What a watch asked for.
pub struct WatchRequest {
    pub resource: usize,
    pub namespace: Option<String>,
    pub selector: Selector,
    /// Changes after this version; `None` sends the current objects first.
    pub since: Option<u64>,
    pub bookmarks: bool,
    pub timeout: Duration,
}

struct State {
    shared: Arc<Shared>,
    request: WatchRequest,
    cursor: u64,
    changed: tokio::sync::watch::Receiver<u64>,
    deadline: Instant,
    next_bookmark: Instant,
    initial: Option<Vec<Arc<Stored>>>,
    done: bool,
}

/// The event stream of one watch.
pub fn stream(
    shared: Arc<Shared>,
    request: WatchRequest,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send {
    let mut changed = shared.store.subscribe();
    changed.mark_unchanged();
    let (cursor, initial) = match request.since {
        Some(rv) => (rv, None),
        None => {
            let page = shared.store.list(
                request.resource,
                request.namespace.as_deref(),
                &request.selector,
                None,
                None,
            );
            (page.rv, Some(page.items))
        }
    };
    let now = Instant::now();
    let state = State {
        deadline: now + request.timeout,
        next_bookmark: now + shared.config.bookmark_interval,
        shared,
        request,
        cursor,
        changed,
        initial,
        done: false,
    };
    futures::stream::unfold(state, |mut state| async move {
        let chunk = next_chunk(&mut state).await?;
        Some((Ok(chunk), state))
    })
}

async fn next_chunk(state: &mut State) -> Option<Bytes> {
    if state.done {
        return None;
    }
    if let Some(initial) = state.initial.take() {
        let mut out = BytesMut::new();
        for object in &initial {
            event_line(&mut out, EventType::Added.as_str(), &object.json);
        }
        if !out.is_empty() {
            return Some(out.freeze());
        }
    }
    loop {
        state.changed.mark_unchanged();
        let filter = Filter {
            resource: state.request.resource,
            namespace: state.request.namespace.as_deref(),
            selector: &state.request.selector,
        };
        match state
            .shared
            .store
            .changes_after(state.cursor, &filter, BATCH)
        {
            Err(gone) => {
                state.done = true;
                let mut out = BytesMut::new();
                event_line(&mut out, "ERROR", &serde_json::to_vec(&gone.body).ok()?);
                return Some(out.freeze());
            }
            Ok((changes, reached)) => {
                state.cursor = reached;
                if !changes.is_empty() {
                    let mut out = BytesMut::new();
                    for change in &changes {
                        event_line(&mut out, change.kind.as_str(), &change.object.json);
                    }
                    return Some(out.freeze());
                }
            }
        }
        let bookmarks = state.request.bookmarks;
        tokio::select! {
            changed = state.changed.changed() => {
                if changed.is_err() {
                    return None;
                }
            }
            () = tokio::time::sleep_until(state.next_bookmark), if bookmarks => {
                state.next_bookmark = Instant::now() + state.shared.config.bookmark_interval;
                return Some(bookmark(state.request.resource, state.cursor));
            }
            () = tokio::time::sleep_until(state.deadline) => return None,
        }
    }
}

fn event_line(out: &mut BytesMut, kind: &str, object: &[u8]) {
    out.put_slice(b"{\"type\":\"");
    out.put_slice(kind.as_bytes());
    out.put_slice(b"\",\"object\":");
    out.put_slice(object);
    out.put_slice(b"}\n");
}

fn bookmark(resource: usize, rv: u64) -> Bytes {
    let rt = &RESOURCES[resource];
    let object = json!({
        "kind": rt.kind,
        "apiVersion": rt.api_version(),
        "metadata": {"resourceVersion": rv.to_string()},
    });
    let mut out = BytesMut::new();
    event_line(
        &mut out,
        "BOOKMARK",
        &serde_json::to_vec(&object).unwrap_or_default(),
    );
    out.freeze()
}
