//! Placeholder: filled in by the provider-sync work (issue 11).
