//! Progress of a long operation, for a person: the CLI prints it on stderr, the server logs it.

/// Called with one short line per step ("starting container").
pub type Progress<'a> = &'a (dyn Fn(&str) + Sync);
