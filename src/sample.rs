//! Sample rootfs builder.
