//! The offline tools: ebb's decisions applied to manifest files, no cluster. `render` prints the
//! HPAs the operator would apply, `check` what KEDA would reject. `ebb simulate` and
//! `ebb explain` belong here too, each a module over `scaling`.

pub mod render;
pub mod simulate;
