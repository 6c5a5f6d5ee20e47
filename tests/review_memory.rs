//! What refusing a hostile review body costs in memory, measured by a counting allocator: a body
//! the fast path refuses is worded without a tree of it, so an 8 MiB `[0,0,…]` costs kilobytes,
//! not the 144 MiB its tree took. One test in this binary, so no other test's allocations count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use milo_webhook::admission::review::{parse_review, parse_review_slowly};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let live = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size
                - layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes allocated at the peak of `f`, above what was live when it started.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed) - base)
}

fn zeros(bytes: usize) -> String {
    let mut text = String::with_capacity(bytes + 2);
    text.push('[');
    while text.len() + 3 < bytes {
        text.push_str("0,");
    }
    text.push_str("0]");
    text
}

#[test]
fn hostile_bodies_are_refused_without_a_tree() {
    const MIB: usize = 1024 * 1024;
    let array = zeros(8 * MIB);
    let bodies = [
        ("a bare array", array.clone().into_bytes()),
        (
            "an array in the envelope",
            format!(r#"{{"junk":{array},"request":null}}"#).into_bytes(),
        ),
        (
            "an array in the request",
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","junk":{array}}}}}"#
            )
            .into_bytes(),
        ),
        (
            "an array as the object of a malformed request",
            format!(
                r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"u","operation":"PATCH","object":{array}}}}}"#
            )
            .into_bytes(),
        ),
        (
            "many keys",
            format!(
                "{{{}\"request\":1}}",
                (0..200_000).map(|i| format!("\"k{i}\":0,")).collect::<String>()
            )
            .into_bytes(),
        ),
    ];
    for (what, body) in &bodies {
        let (refused, peak) = peak_of(|| parse_review(body).is_err());
        assert!(refused, "{what} is refused");
        // The keys of one object at most (the many-keys body: 200,000 short keys).
        let bound = if what == &"many keys" {
            12 * MIB
        } else {
            64 * 1024
        };
        assert!(
            peak < bound,
            "{what}: {peak} bytes allocated for a {}-byte body",
            body.len()
        );
    }
    // The test can fail: the tree the old path built costs a multiple of the body.
    let (_, tree) = peak_of(|| parse_review_slowly(array.as_bytes()).is_err());
    assert!(tree > 8 * array.len(), "the tree took {tree} bytes");
}
