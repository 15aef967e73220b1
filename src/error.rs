//! The one error type of the kernels. No PyO3 here: `python.rs` maps each variant to an exception.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum KernelError {
    /// Shapes or lengths that do not fit together (→ `ValueError`).
    Shape(String),
    /// A bad option value (→ `ValueError`).
    Value(String),
    /// A hard label outside `[0, classes)` that is not `ignore_index` (→ `IndexError`).
    Label {
        label: i64,
        position: usize,
        classes: usize,
    },
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::Shape(m) | KernelError::Value(m) => f.write_str(m),
            KernelError::Label {
                label,
                position,
                classes,
            } => write!(
                f,
                "target {label} at position {position} is out of bounds for {classes} classes \
                 (expected 0 <= target < {classes} or target == ignore_index)"
            ),
        }
    }
}

impl std::error::Error for KernelError {}
