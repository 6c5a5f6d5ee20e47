//! Provider HTTP clients. They know nothing of Kubernetes: controllers translate cluster objects
//! into their calls, and the events listener hands their verified events to the controllers.

pub mod http;
pub mod loops;
pub mod metrics;
pub mod ratelimit;
pub mod resend;
pub mod svix;
