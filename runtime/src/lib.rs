//! pretext runtime
