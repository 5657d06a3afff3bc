//! journald native protocol writer.
