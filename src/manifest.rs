//! Metadata manifest.
