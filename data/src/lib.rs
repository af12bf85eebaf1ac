//! pretext data
