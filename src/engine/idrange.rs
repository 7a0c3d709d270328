//! A range of ids, `first..first+count`. Its end is computed in u64, so that a
//! range reaching 4294967295 (or a parsed-but-invalid one past it) never overflows.

/// The ids `first..first+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub first: u32,
    pub count: u32,
}

impl IdRange {
    pub fn new(first: u32, count: u32) -> IdRange {
        IdRange { first, count }
    }

    /// One past the last id.
    pub fn end(self) -> u64 {
        u64::from(self.first) + u64::from(self.count)
    }

    /// The last id, for messages; `first` stands for an empty range, and a range
    /// past 4294967295 ends there.
    pub fn last(self) -> u32 {
        self.first.saturating_add(self.count.saturating_sub(1))
    }

    pub fn contains(self, id: impl Into<u64>) -> bool {
        let id = id.into();
        u64::from(self.first) <= id && id < self.end()
    }

    /// Whether the two ranges share an id.
    pub fn overlaps(self, other: IdRange) -> bool {
        u64::from(self.first) < other.end() && u64::from(other.first) < self.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_touching_do_not_overlap() {
        let a = IdRange::new(100_000, 65_536);
        assert!(!a.overlaps(IdRange::new(165_536, 10)));
        assert!(a.overlaps(IdRange::new(165_535, 1)));
        assert!(IdRange::new(165_535, 1).overlaps(a));
        assert!(!a.overlaps(IdRange::new(10, 99_990)));
    }

    #[test]
    fn the_top_of_the_id_space_does_not_overflow() {
        let top = IdRange::new(u32::MAX - 1, 10);
        assert_eq!(top.end(), u64::from(u32::MAX) + 9);
        assert_eq!(top.last(), u32::MAX);
        assert!(top.contains(u32::MAX));
        assert!(top.contains(u64::from(u32::MAX) + 8));
        assert!(top.overlaps(IdRange::new(u32::MAX, 1)));
        assert!(!IdRange::new(5, 3).contains(8u32));
        assert_eq!(IdRange::new(5, 3).last(), 7);
    }
}
