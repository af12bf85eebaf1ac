//! Evaluation-time preprocessing: decode, resize shorter side, center crop, normalize.
