//! The names of the xattrs that carry ids, spelled once: C strings, which the
//! syscalls take without copying; `to_bytes()` gives them as they are listed.

use std::ffi::CStr;

/// The POSIX ACL checked on access (`acl::Acl` decodes it).
pub const ACL_ACCESS: &CStr = c"system.posix_acl_access";
/// The POSIX ACL a directory passes on to what is created in it.
pub const ACL_DEFAULT: &CStr = c"system.posix_acl_default";
/// The file capabilities, with the v3 rootid (`caps::FileCaps` decodes them).
pub const CAPS: &CStr = c"security.capability";
