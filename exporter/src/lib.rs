//! pretext exporter
