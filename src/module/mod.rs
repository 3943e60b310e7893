//! The client-side check of KMM Modules: resolve each Module for a kernel as KMM does, then look
//! inside its image as a node's worker pod will (kmm-api.md §5).

pub mod check;
pub mod combine;
pub mod deep;
pub mod kernels;
pub mod ko;
pub mod layout;
pub mod mapping;
pub mod moddep;
pub mod signature;
pub mod source;
pub mod spec;
pub mod template;
