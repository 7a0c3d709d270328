//! placeholder until the codec branch lands
pub const CAPS_XATTR: &str = "security.capability";
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCaps {
    pub revision: u32,
    pub flags: u32,
    pub words: Vec<u32>,
    pub rootid: Option<u32>,
}
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapsError {
    #[error("bad")]
    Bad,
}
impl FileCaps {
    pub fn parse(_bytes: &[u8]) -> Result<FileCaps, CapsError> {
        todo!()
    }
    pub fn to_bytes(&self) -> Vec<u8> {
        todo!()
    }
    pub fn with_rootid(&self, _rootid: u32) -> FileCaps {
        todo!()
    }
    pub fn as_v2(&self) -> FileCaps {
        todo!()
    }
}
