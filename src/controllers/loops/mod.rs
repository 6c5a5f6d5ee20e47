//! Loops on the cluster's side. [`events`]: what Loops' signed webhook deliveries change (any
//! replica, from the provider events listener), decided in [`plan`].

pub mod events;
pub mod plan;
