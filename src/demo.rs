//! `lxc-idshift demo` (filled in once the sample rootfs exists).

pub fn run(_keep: bool) -> anyhow::Result<u8> {
    anyhow::bail!("demo: not built yet")
}
