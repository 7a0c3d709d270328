//! Container conversion (see issue 3).

pub mod host;
pub mod perms;
pub mod udev;
