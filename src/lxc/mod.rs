//! Container conversion (see issue 3).
