//! The aggregate `Ready` when several providers mirror one object.
//!
//! Each provider writes its own condition and `Ready` in one apply, computing `Ready` from the
//! other providers' conditions as it read them. Two providers finishing at the same moment can
//! each read the other as not yet synced, and the later apply then leaves `Ready` False although
//! both conditions are True. Nothing would look at the object again: both providers are done.
//! So the view keeps `Ready` beside the providers' marks, and one provider, the first configured
//! one that mirrors the object and is itself synced, rewrites `Ready` when it disagrees with the
//! conditions: one status write, no provider call, and never two providers fighting over it.

use crate::api::common::ProviderName;
use crate::view::SyncMarks;

/// The other providers of `configured` that mirror the object (`mirrors`), with whether each
/// says it is synced: what `provider`'s write decides `Ready` from.
pub fn others(
    provider: ProviderName,
    configured: &[ProviderName],
    marks: SyncMarks,
    mirrors: impl Fn(ProviderName) -> bool,
) -> Vec<(ProviderName, bool)> {
    configured
        .iter()
        .copied()
        .filter(|p| *p != provider && mirrors(*p))
        .map(|p| (p, marks.synced(p)))
        .collect()
}

/// Whether `provider` should rewrite the object's `Ready`: it disagrees with the conditions of
/// the providers that mirror it, and `provider` is the first of them and synced itself (one that
/// is not writes `Ready` with its own condition anyway).
pub fn needs_repair(
    provider: ProviderName,
    configured: &[ProviderName],
    marks: SyncMarks,
    mirrors: impl Fn(ProviderName) -> bool,
) -> bool {
    let mut mirroring = configured.iter().copied().filter(|p| mirrors(*p));
    if mirroring.clone().next() != Some(provider) || !marks.synced(provider) {
        return false;
    }
    let expected = mirroring.all(|p| marks.synced(p));
    expected != marks.ready()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProviderName::{Loops, Resend};

    const BOTH: &[ProviderName] = &[Resend, Loops];

    #[test]
    fn the_first_synced_provider_repairs_a_ready_left_false() {
        let both_synced = SyncMarks::default().with_synced(Resend).with_synced(Loops);
        assert!(needs_repair(Resend, BOTH, both_synced, |_| true));
        assert!(!needs_repair(Loops, BOTH, both_synced, |_| true));
        assert!(!needs_repair(
            Resend,
            BOTH,
            both_synced.with_ready(),
            |_| true
        ));
    }

    #[test]
    fn a_ready_claiming_a_provider_not_yet_synced_is_repaired() {
        let resend_only = SyncMarks::default().with_synced(Resend).with_ready();
        assert!(needs_repair(Resend, BOTH, resend_only, |_| true));
        // Loops does not mirror it: Ready True is right.
        assert!(!needs_repair(Resend, BOTH, resend_only, |p| p == Resend));
    }

    #[test]
    fn a_provider_not_synced_leaves_ready_to_its_own_write() {
        let loops_only = SyncMarks::default().with_synced(Loops);
        assert!(!needs_repair(Resend, BOTH, loops_only, |_| true));
        assert!(!needs_repair(Loops, BOTH, loops_only, |_| true));
        // Without Resend mirroring it, Loops is first and Ready False is wrong.
        assert!(needs_repair(Loops, BOTH, loops_only, |p| p == Loops));
    }

    #[test]
    fn others_are_the_mirroring_providers_but_this_one() {
        let marks = SyncMarks::default().with_synced(Loops);
        assert_eq!(others(Resend, BOTH, marks, |_| true), vec![(Loops, true)]);
        assert_eq!(others(Resend, BOTH, marks, |p| p == Resend), vec![]);
        assert_eq!(others(Resend, &[Resend], marks, |_| true), vec![]);
    }
}
