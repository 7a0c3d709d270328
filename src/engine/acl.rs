//! placeholder until the codec branch lands
use super::idmap::IdKind;
pub const ACL_ACCESS: &str = "system.posix_acl_access";
pub const ACL_DEFAULT: &str = "system.posix_acl_default";
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    pub entries: Vec<AclEntry>,
}
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AclError {
    #[error("bad")]
    Bad,
}
impl Acl {
    pub fn parse(_bytes: &[u8]) -> Result<Acl, AclError> {
        todo!()
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        todo!()
    }
    pub fn ids(&self) -> impl Iterator<Item = (IdKind, u32)> + '_ {
        std::iter::empty()
    }
    pub fn map_ids(&mut self, _f: impl FnMut(IdKind, u32) -> u32) -> bool {
        todo!()
    }
}
